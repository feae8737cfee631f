"""saehelpers.cards: a feature's card (top examples, logit lens, neighbours), on the mini model with
test_features' random SAE of the mini release's shape."""

import pytest
import torch

from saehelpers import cards, get_release
from saehelpers import features as F
from saehelpers.tokens import text_batches


@pytest.fixture
def sae(random_sae):
    """The random SAE of the mini release's shape (tests/conftest.py), under this module's short name."""
    return random_sae


def test_logit_lens_and_neighbours(mini, sae):
    model, tok = mini
    d = sae.W_dec[5]
    table = cards.lens_table(model, tok, d, n=4)
    with torch.no_grad():
        logits = model.lm_head(model.model.norm(d[None]))[0]
    assert table["raises"].tolist() == [tok.decode([int(i)]) for i in logits.topk(4).indices]
    assert table["logit ↓"].iloc[0] == pytest.approx(logits.min().item(), rel=1e-4)
    near = cards.neighbours(sae, 5, n=3)
    assert 5 not in near["feature"].tolist() and near["cosine"].is_monotonic_decreasing
    cos = torch.nn.functional.cosine_similarity(sae.W_dec, d[None], dim=1)
    cos[5] = -1
    assert near["feature"].iloc[0] == int(cos.argmax())


def test_feature_card(mini, sae, small_batches):
    model, tok = mini
    rel = get_release("mini")
    stats = F.stream_stats(model, sae, small_batches, k=4, progress=False)
    f = int(stats.counts.argmax())
    card = cards.feature_card(model, tok, sae, rel, stats, f, n_examples=3)
    assert card.count == int(stats.counts[f]) and card.rank == 1 and card.group == rel.group_of(f)
    assert len(card.top) == 3 and card.top[0]["value"] == pytest.approx(float(stats.max[f]))
    assert card.top[0]["strings"][card.top[0]["centre"]] == tok.decode(
        [card.top[0]["tokens"][card.top[0]["centre"]]]
    )
    assert f"feature {f}" in str(card) and f"feature {f}" in card._repr_html_()
    for bad in (-1, rel.d_sae):
        with pytest.raises(ValueError, match=rf"0\.\.{rel.d_sae - 1}"):
            cards.feature_card(model, tok, sae, rel, stats, bad)


def test_characters_split_across_tokens_stay_whole_in_texts_and_cards(mini, sae):
    from saehelpers import display

    model, tok = mini
    text = "(«譫/ de\n𓀀Linux"  # 譫 is three byte tokens, 𓀀 four: each a � when decoded alone
    tokens, feats = F.encode_text(model, tok, sae, text)
    assert tokens == ["(", "«", "", "", "譫", "/", " de", "\n", "", "", "", "𓀀", "Linux"]
    # a feature whose strongest token is 譫's first byte: the card's centre has no text of its own
    f = int(torch.where(feats.argmax(0) == 2, feats.max(0).values, 0).argmax())
    assert feats[2, f] > 0 and int(feats[:, f].argmax()) == 2
    batches = text_batches(tok, [text])
    stats = F.stream_stats(model, sae, batches, k=4, before=20, after=20, progress=False)
    card = cards.feature_card(model, tok, sae, get_release("mini"), stats, f)
    top = card.top[0]
    assert top["strings"] == tokens and top["centre"] == 2 and "".join(top["strings"]) == text
    assert top["acts"] == pytest.approx(feats[:, f].tolist(), rel=1e-4, abs=1e-5)  # still one per token
    shown = display.card_examples(card).data + display.context_text(top)
    assert "�" not in shown and display.context_text(top) == "(«[[]]譫/ de↵𓀀Linux"
    assert display.card_label(card).splitlines()[1].startswith("on: part of '譫'")

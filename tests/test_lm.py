"""Chunked next-token losses equal the ones computed from the full logits tensor."""

import torch

from saehelpers import hooks, lm, metrics


def _batch(tok):
    enc = tok(["The capital of France is Paris.", "Two plus two"], return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def test_losses_match_the_full_logits(mini):
    model, tok = mini
    ids, mask = _batch(tok)
    keep = metrics.token_mask(ids, mask, tok.bos_token_id)
    assert not keep.all()  # padding and BOS are both left out
    with torch.no_grad():
        clean_logits = model(input_ids=ids, attention_mask=mask).logits
        clean = lm.final_hidden(model, ids, mask)
        with hooks.add_vector(model, 3, 40.0 * torch.ones(model.config.hidden_size)):
            other_logits = model(input_ids=ids, attention_mask=mask).logits
            other = lm.final_hidden(model, ids, mask)
    ce_clean, ce, kl = lm.next_token_losses(model, ids, keep, clean, {"steered": other})
    want_clean = metrics.ce_loss(clean_logits, ids, keep, per_token=True)
    want_other = metrics.ce_loss(other_logits, ids, keep, per_token=True)
    want_kl = metrics.kl_div(clean_logits, other_logits, keep, per_token=True)
    assert ce_clean.shape == want_clean.shape and kl["steered"].shape == want_kl.shape
    # The same unembedding on a chunk of positions instead of the whole batch: equal up to the
    # model dtype's rounding of the logits (bfloat16 keeps ~3 significant digits).
    tol = 0.05 if model.dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(ce_clean, want_clean, atol=tol, rtol=0)
    torch.testing.assert_close(ce["steered"], want_other, atol=tol, rtol=0)
    torch.testing.assert_close(kl["steered"], want_kl, atol=tol, rtol=0)
    assert kl["steered"].mean() > 0.1  # the steering changed the predictions
    assert ce_clean.mean() < ce["steered"].mean()


def test_unembed_is_the_models_last_step(mini):
    model, tok = mini
    ids, mask = _batch(tok)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        mine = lm.unembed(model, lm.final_hidden(model, ids, mask)[:, -1])
    assert torch.equal(full.argmax(-1), mine.argmax(-1))
    torch.testing.assert_close(mine.float(), full.float(), atol=0.1, rtol=0.02)


def test_no_positions_give_empty_losses(mini):
    model, tok = mini
    ids, mask = _batch(tok)
    with torch.no_grad():
        clean = lm.final_hidden(model, ids, mask)
    ce_clean, ce, kl = lm.next_token_losses(model, ids, torch.zeros_like(mask), clean, {"x": clean})
    assert ce_clean.numel() == 0 and ce["x"].numel() == 0 and kl["x"].numel() == 0


def test_next_token_loss_is_the_mean_of_the_scored_losses(mini):
    model, tok = mini
    ids, mask = _batch(tok)
    with torch.no_grad():
        want = metrics.ce_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
    got = lm.next_token_loss(model, ids, mask)
    assert abs(got - want) < (0.02 if model.dtype == torch.bfloat16 else 1e-4)
    assert 1.0 < got < 10.0  # a real language model on plain English


def test_one_logit_lens(mini):
    """One logit lens: lm.logit_lens; the cards' table ranks the same tokens; no second definition elsewhere."""
    from saehelpers import cards, features, steering, tokens

    model, tok = mini
    v = model.get_input_embeddings().weight[tok.encode(" Paris", add_special_tokens=False)[0]].float()
    ids, vals = lm.logit_lens(model, v, k=5)
    assert vals.dtype == torch.float32 and (vals[:-1] >= vals[1:]).all()
    table = cards.lens_table(model, tok, v, n=5)
    assert list(table["raises"]) == tokens.token_strings(tok, ids)
    assert not hasattr(steering, "logit_lens") and not hasattr(features, "logit_lens")
    many_ids, _ = lm.logit_lens(model, torch.stack([v, -v]), k=3)
    assert many_ids.shape == (2, 3) and torch.equal(many_ids[0], ids[:3])

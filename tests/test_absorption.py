"""saehelpers.absorption: the first-letter task's pieces, and the absorption test on a case worked by hand.

The hand case is notebook 06's toy world (`toy.make_toy(seed=0)`) with an SAE written down rather than
trained: one latent per true feature, decoder rows = the true directions ("clean"), and a copy in which
the first child of parent 0 has absorbed its parent (its decoder row is child + parent, and the parent's
latent is silent whenever that child fires). The probe is the parent's true direction. The absorbing
latent must be found on exactly the words (samples) where that child fires, and the clean SAE must show
no absorption at all.
"""

import pandas as pd
import pytest
import torch

from saehelpers import absorption as ab
from saehelpers import toy


@pytest.fixture(scope="module")
def world():
    w = toy.make_toy(seed=0)
    feats, _ = w.sample(4000, seed=7)
    # Where parent 0's first child fires, give the parent the child's magnitude, so that the absorbing
    # SAE below (one latent for both) reconstructs every sample exactly.
    p = w.parents[0]
    child = w.children[p][0]
    on = feats[:, child] > 0
    feats[on, p] = feats[on, child]
    return w, feats, feats @ w.directions


def _hand_saes(w, feats):
    p = w.parents[0]
    child = w.children[p][0]
    clean_acts, clean_W = feats.clone(), w.directions.clone()
    acts, W = feats.clone(), w.directions.clone()
    W[child] = w.directions[child] + w.directions[p]
    acts[feats[:, child] > 0, p] = 0  # the parent's latent stands aside; x = acts @ W still holds exactly
    return p, child, (clean_acts, clean_W), (acts, W)


def _parent_probe(w, p):
    # One class ("a"): the probe predicts it everywhere, and its direction is the parent's true direction.
    return ab.Probe(W=w.directions[p][None].clone(), b=torch.zeros(1), mean=torch.zeros(w.d))


def test_hand_case_reconstructs_exactly(world):
    w, feats, x = world
    _, _, (ca, cW), (aa, aW) = _hand_saes(w, feats)
    assert torch.allclose(ca @ cW, x, atol=1e-5)
    assert torch.allclose(aa @ aW, x, atol=1e-5)


def test_planted_absorbing_latent_is_found_and_clean_sae_shows_none(world):
    w, feats, x = world
    p, child, (ca, cW), (aa, aW) = _hand_saes(w, feats)
    rows = feats[:, p] > 0  # the "words" that have the parent (letter "a")
    y = torch.zeros(int(rows.sum()), dtype=torch.long)
    probe, mains = _parent_probe(w, p), {"a": [p]}

    absorbed = ab.absorption_table(aa[rows], aW, x[rows], y, probe, mains)
    child_on = (feats[rows][:, child] > 0).numpy()
    assert child_on.sum() > 50 and (~child_on).sum() > 50
    assert (absorbed.full_absorption.to_numpy() == child_on).all()
    assert (absorbed.top_latent[child_on] == child).all()
    assert (absorbed.fraction[child_on] == 1.0).all()  # main latent silent: all of it is absorbed
    assert (absorbed.fraction[~child_on] == 0.0).all()
    # One word by hand: the child's contribution a_c (v_c + v_p) . v_p over x . v_p, cosine 1/sqrt(2)-ish.
    i = int(child_on.nonzero()[0][0])
    n = int(rows.nonzero()[i])
    v_p, v_c = w.directions[p], w.directions[child]
    want = float(feats[n, child] * (v_c + v_p) @ v_p / (x[n] @ v_p))
    assert absorbed.top_share.iloc[i] == pytest.approx(want, rel=1e-4)
    assert absorbed.top_cos.iloc[i] == pytest.approx(float((v_c + v_p) @ v_p / (v_c + v_p).norm()), rel=1e-4)

    clean = ab.absorption_table(ca[rows], cW, x[rows], y, probe, mains)
    assert len(clean) == len(absorbed) and not clean.full_absorption.any()
    assert not clean.main_fired.eq(False).any() and (clean.fraction == 0).all()
    assert ab.summary(absorbed)["full_absorption"] == pytest.approx(child_on.mean())
    assert ab.summary(clean)["full_absorption"] == 0


def test_prefix_without_the_absorber_shows_no_absorption(world):
    """With only the latents below the absorbing child, nothing can absorb: the rate falls to 0."""
    w, feats, x = world
    p, child, _, (aa, aW) = _hand_saes(w, feats)
    rows = feats[:, p] > 0
    y = torch.zeros(int(rows.sum()), dtype=torch.long)
    table = ab.absorption_table(aa[rows], aW, x[rows], y, _parent_probe(w, p), {"a": [p]}, width=child)
    assert len(table) > 0 and not table.full_absorption.any()


def test_select_latents_finds_each_parent_and_ranks_by_signed_difference(world):
    w, feats, _ = world
    for p in w.parents:
        assert ab.select_latents(feats, feats[:, p] > 0, 1).tolist() == [p]
    # A latent that fires less on the letter ranks last, not first.
    acts = torch.tensor([[1.0, 0.0, 5.0], [1.0, 0.0, 5.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0]])
    is_letter = torch.tensor([True, True, False, False])
    assert ab.select_latents(acts, is_letter, 3).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="both True and False"):
        ab.select_latents(acts, torch.ones(4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="k"):
        ab.select_latents(acts, is_letter, 4)


def test_main_latents_follow_the_f1_jump_rule():
    table = pd.DataFrame(
        [
            {"letter": "a", "k": 1, "f1": 0.50, "latents": [3]},
            {"letter": "a", "k": 2, "f1": 0.70, "latents": [3, 8]},  # +0.20: split
            {"letter": "a", "k": 3, "f1": 0.72, "latents": [3, 8, 1]},  # +0.02: stop
            {"letter": "a", "k": 4, "f1": 0.90, "latents": [3, 8, 1, 4]},  # after the stop: ignored
            {"letter": "b", "k": 1, "f1": 0.9, "latents": [5]},
            {"letter": "b", "k": 2, "f1": 0.92, "latents": [5, 6]},
        ]
    )
    assert ab.main_latents(table) == {"a": [3, 8], "b": [5]}
    assert ab.main_latents(table, jump=0.01) == {"a": [3, 8, 1, 4], "b": [5, 6]}


def test_k_sparse_probing_on_the_toy_reaches_f1_one_with_the_true_latent(world):
    w, feats, _ = world
    on = feats[:, w.parents] > 0
    keep = on.sum(1) <= 1  # samples with at most one parent: one "letter" each
    feats, on = feats[keep], on[keep]
    y = torch.where(on.any(1), on.float().argmax(1), 25)  # 25 ("z"): no parent
    table = ab.k_sparse_probing(feats[:2000], y[:2000], feats[2000:], y[2000:], max_k=2, letters=[0, 1, 2],
                                progress=False)  # fmt: skip
    k1 = table[table.k == 1].set_index("letter")
    assert k1.latents.tolist() == [[p] for p in w.parents]
    assert (k1.f1 > 0.9).all()


def test_absorption_fraction_by_hand():
    # Two words, latents: 0 = main, 1 and 2 aligned others, 3 below the 0.1 cosine gate.
    proj = torch.tensor([[0.2, 0.5, 0.1, 2.0], [1.0, 0.0, 0.0, 0.0]])
    cos = torch.tensor([0.8, 0.5, 0.3, 0.05])
    probe_proj = torch.tensor([1.0, 0.9])
    frac = ab.absorption_fraction([0], proj, cos, probe_proj)
    # word 0: absorbed = 0.5 + 0.1 = 0.6 >= 0.4 of 1.0; unaccounted = 0.8; taken 0.6; 0.6 / (0.6 + 0.2)
    # word 1: the main latent carries more than the projection: 0
    assert frac.tolist() == pytest.approx([0.75, 0.0])


def test_probe_learns_a_planted_letter_direction_and_reports_per_letter():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % 26
    dirs = torch.randn(26, 40, generator=g)
    x = dirs[y] + 0.3 * torch.randn(600, 40, generator=g) + 5.0
    probe = ab.train_probe(x[:400], y[:400])
    report = ab.probe_report(probe, x[400:], y[400:])
    assert list(report.index) == list(ab.LETTERS) and (report.accuracy > 0.9).all()
    assert torch.allclose(probe.direction(3).norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="x \\[n, d_model\\]"):
        ab.train_probe(x[:10], y[:9])


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from saehelpers.loading import mini_model_dir

    return AutoTokenizer.from_pretrained(mini_model_dir(torch.bfloat16, progress=False))


def test_words_are_single_lowercase_tokens_and_the_split_is_seeded_and_disjoint(tokenizer):
    words = ab.vocab_words(tokenizer)
    assert len(words) > 5000 and all(
        w.isascii() and w.isalpha() and w.islower() and len(w) >= 3 for w in words
    )
    for w in words[:: len(words) // 50]:
        assert len(tokenizer(" " + w, add_special_tokens=False).input_ids) == 1
    a, b = ab.split_words(words, per_letter=10, seed=3), ab.split_words(words, per_letter=10, seed=3)
    assert a == b and a != ab.split_words(words, per_letter=10, seed=4)
    assert not set(a.icl) & set(a.words) and not set(a.train) & set(a.test)
    counts = pd.Series([w[0] for w in a.words]).value_counts()
    assert counts.max() <= 10 and set(counts.index) == set(ab.LETTERS)
    assert a.letters("test").tolist() == [ab.LETTERS.index(w[0]) for w in a.test]


def test_prompts_share_one_length_and_the_word_sits_at_word_position(tokenizer):
    words = ab.vocab_words(tokenizer)
    split = ab.split_words(words, per_letter=3, seed=0)
    texts = ab.prompts(split.test, split.icl, n_examples=4, seed=0)
    enc = [tokenizer(t).input_ids for t in texts]
    assert len({len(e) for e in enc}) == 1
    pos = ab.word_position(tokenizer)
    assert pos == -6
    for word, ids in zip(split.test, enc):
        assert tokenizer.decode(ids[pos]) == " " + word
    assert texts[0].count("has the first letter:") == 5 and texts[0].endswith("has the first letter:")
    with pytest.raises(ValueError, match="n_examples"):
        ab.prompts(split.test, split.icl, n_examples=len(split.icl) + 1)

"""saehelpers.metrics on small tensors whose answers are worked out by hand."""

import math

import pytest
import torch

from saehelpers import metrics as M

# x has mean mu = [2, 0]: variance about the mean = 1 + 1 = 2, about zero = 9 + 1 = 10.
X = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
X_HAT = torch.tensor([[2.5, 0.5], [1.0, 0.0]])  # squared error 0.25 + 0.25 = 0.5


def test_explained_variance_known_values():
    assert M.explained_variance(X, X) == 1.0
    assert M.explained_variance(X, X, about="zero") == 1.0
    assert M.explained_variance(X, X.mean(0).expand_as(X)) == 0.0  # predicting the mean explains nothing
    assert M.explained_variance(X, X_HAT) == pytest.approx(1 - 0.5 / 2)  # 0.75
    assert M.explained_variance(X, X_HAT, about="zero") == pytest.approx(1 - 0.5 / 10)  # 0.95
    assert M.explained_variance(X, torch.zeros_like(X), about="zero") == 0.0


def test_about_zero_and_about_mean_differ_by_the_mean_term():
    # sum ||x||^2 = sum ||x - mu||^2 + n ||mu||^2, with the same error in both numerators.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64) + 3.0
    x_hat = x + 0.5 * torch.randn(50, 8, generator=g, dtype=torch.float64)
    err = (x - x_hat).pow(2).sum()
    var = (x - x.mean(0)).pow(2).sum()
    shift = 50 * x.mean(0).pow(2).sum()
    assert M.explained_variance(x, x_hat) == pytest.approx((1 - err / var).item(), rel=1e-12)
    assert M.explained_variance(x, x_hat, "zero") == pytest.approx(
        (1 - err / (var + shift)).item(), rel=1e-12
    )
    assert M.explained_variance(x, x_hat, "zero") > M.explained_variance(x, x_hat)


@pytest.mark.parametrize("sizes", [[120], [1, 7, 30, 82], [60, 60]])
def test_accumulator_equals_one_shot(sizes):
    g = torch.Generator().manual_seed(1)
    # A large mean component, as in a residual stream: the naive sum(x^2) - n mean^2 would lose digits.
    x = 100 + torch.randn(120, 16, generator=g)
    x_hat = x + 0.3 * torch.randn(120, 16, generator=g)
    acc = M.EVAccumulator()
    for xb, hb in zip(x.split(sizes), x_hat.split(sizes)):
        acc.add(xb, hb)
    assert acc.n == 120
    for about in ("mean", "zero"):
        assert acc.value(about) == pytest.approx(M.explained_variance(x, x_hat, about), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    "x, x_hat, about, match",
    [
        (torch.ones(3, 2), torch.zeros(3, 2), "mean", "all tokens are identical"),
        (torch.zeros(3, 2), torch.zeros(3, 2), "zero", "all zeros"),
        (torch.ones(3, 2), torch.ones(3, 3), "mean", r"shape \[n_tokens, d_model\]"),
        (torch.ones(2, 3, 2), torch.ones(2, 3, 2), "mean", r"Flatten batch and sequence"),
        (torch.ones(0, 2), torch.ones(0, 2), "mean", "empty"),
        (X, X_HAT, "median", "'mean' or 'zero'"),
    ],
)
def test_explained_variance_bad_input(x, x_hat, about, match):
    with pytest.raises(ValueError, match=match):
        M.explained_variance(x, x_hat, about)


def test_accumulator_bad_input():
    acc = M.EVAccumulator()
    with pytest.raises(ValueError, match="add"):
        acc.value()
    acc.add(X, X_HAT)
    with pytest.raises(ValueError, match="share d_model"):
        acc.add(torch.ones(2, 3), torch.ones(2, 3))


ACTS = torch.tensor([[0.0, 1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 0.0]])


def test_l0_and_firing_counts():
    mean, per_token = M.l0(ACTS)
    assert per_token.tolist() == [2, 0, 3]  # a negative activation counts as active (!= 0)
    assert mean == pytest.approx(5 / 3)
    mean, per_token = M.l0(ACTS[:2].reshape(1, 2, 4))
    assert per_token.tolist() == [[2, 0]] and mean == 1.0
    assert M.firing_counts(ACTS).tolist() == [1, 2, 1, 1]
    assert M.firing_counts(ACTS.reshape(1, 3, 4)).tolist() == [1, 2, 1, 1]
    with pytest.raises(ValueError, match="non-empty"):
        M.l0(torch.zeros(0, 4))


def test_dead_and_dense_fractions():
    counts = torch.tensor([0, 5, 1, 2])  # on 10 tokens: rates 0, 0.5, 0.1, 0.2
    assert M.dead_fraction(counts) == 0.25
    assert M.dense_fraction(counts, 10) == 0.5  # 0.5 and 0.2; exactly 0.1 is not "more than 10%"
    assert M.dense_fraction(counts, 10, threshold=0.2) == 0.25
    assert M.dense_fraction(counts, 10, threshold=0.0) == 0.75
    with pytest.raises(ValueError, match="n_tokens > 0"):
        M.dense_fraction(counts, 0)
    with pytest.raises(ValueError, match="same tokens"):
        M.dense_fraction(counts, 4)
    with pytest.raises(ValueError, match="1-D"):
        M.dead_fraction(torch.zeros(2, 2))


# Vocabulary of 2. Position 0 predicts p = [3/4, 1/4] and the next token is 1: loss ln 4.
# Position 1 predicts [1/2, 1/2] and the next token is 0: loss ln 2. Position 2 has no target.
LOGITS = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0], [5.0, 0.0]]])
IDS = torch.tensor([[1, 1, 0]])


def test_ce_loss_by_hand():
    assert M.ce_loss(LOGITS, IDS) == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert M.ce_loss(LOGITS, IDS, per_token=True).tolist() == pytest.approx([math.log(4), math.log(2)])
    uniform = torch.zeros(2, 5, 7)
    assert M.ce_loss(uniform, torch.randint(7, (2, 5))) == pytest.approx(math.log(7))


def test_ce_loss_masks_padding_and_bos():
    # Right padding (last token is padding): only position 0 -> 1 is scored.
    assert M.ce_loss(LOGITS, IDS, torch.tensor([[1, 1, 0]])) == pytest.approx(math.log(4))
    # Left padding (first token is padding): only position 1 -> 2 is scored.
    assert M.ce_loss(LOGITS, IDS, torch.tensor([[0, 1, 1]])) == pytest.approx(math.log(2))
    # With BOS (id 2) first, token_mask drops the prediction made from BOS.
    ids = torch.tensor([[2, 1, 0]])
    assert M.token_mask(ids, None, bos_token_id=2).tolist() == [[False, True, True]]
    assert M.ce_loss(LOGITS, ids, M.token_mask(ids, bos_token_id=2)) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="No prediction"):
        M.ce_loss(LOGITS, IDS, torch.tensor([[1, 0, 1]]))
    assert M.ce_loss(LOGITS, IDS, torch.tensor([[1, 0, 1]]), per_token=True).shape == (
        0,
    )  # streaming: no error
    with pytest.raises(ValueError, match=r"\[batch, seq, vocab\]"):
        M.ce_loss(LOGITS[0], IDS)


def test_kl_div_by_hand():
    clean = torch.zeros(1, 2, 2)  # p = [1/2, 1/2] at both positions
    assert M.kl_div(clean, clean) == 0.0
    other = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0]]])  # q = [3/4, 1/4], then q = p
    # KL(p || q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3) at position 0, 0 at position 1.
    assert M.kl_div(clean, other, per_token=True).tolist() == pytest.approx([0.5 * math.log(4 / 3), 0.0])
    assert M.kl_div(clean, other) == pytest.approx(0.25 * math.log(4 / 3))
    assert M.kl_div(clean, other, torch.tensor([[1, 0]])) == pytest.approx(0.5 * math.log(4 / 3))
    # Not symmetric: KL(q || p) = 3/4 ln(3/2) + 1/4 ln(1/2).
    assert M.kl_div(other, clean, torch.tensor([[1, 0]])) == pytest.approx(
        0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    )
    with pytest.raises(ValueError, match="both be"):
        M.kl_div(clean, other[:, :1])
    with pytest.raises(ValueError, match="no position"):
        M.kl_div(clean, other, torch.zeros(1, 2))


def test_delta_loss_and_ce_recovered():
    assert M.delta_loss(2.0, 2.5) == 0.5
    assert M.ce_loss_recovered(clean=2.0, spliced=2.0, zero_ablated=4.0) == 1.0
    assert M.ce_loss_recovered(clean=2.0, spliced=4.0, zero_ablated=4.0) == 0.0
    assert M.ce_loss_recovered(clean=2.0, spliced=2.5, zero_ablated=4.0) == 0.75
    with pytest.raises(ValueError, match="undefined"):
        M.ce_loss_recovered(2.0, 2.5, 2.0)

"""Lesson 00: explained variance, in both forms, and with BOS left out."""

from __future__ import annotations

import torch

from .. import metrics
from .core import Case, Exercise, Mistake, check, generator


def _pair(n: int, d: int, seed: int, offset: float = 3.0, noise: float = 0.5):
    """Activations with a large shared mean (as the residual stream has) and a noisy reconstruction."""
    g = generator(seed)
    x = torch.randn(n, d, generator=g) + offset * torch.randn(d, generator=g)
    return x, x + noise * torch.randn(n, d, generator=g)


def _ev_cases() -> list[Case]:
    cases = []
    for seed, (n, d) in enumerate([(6, 4), (9, 5), (3, 7)]):
        x, x_hat = _pair(n, d, seed)
        for about in ("mean", "zero"):
            cases.append(Case(f"{n} tokens x {d} dims, about={about!r}", (x, x_hat), {"about": about}))
    return cases


def _about_zero(x, x_hat, about="mean"):
    return metrics.explained_variance(x, x_hat, "zero")


def _about_mean(x, x_hat, about="mean"):
    return metrics.explained_variance(x, x_hat, "mean")


def _per_token_mean(x, x_hat, about="mean"):
    mu = x.mean(-1, keepdim=True) if about == "mean" else 0
    return 1 - ((x - x_hat) ** 2).sum().item() / ((x - mu) ** 2).sum().item()


def _mean_of_ratios(x, x_hat, about="mean"):
    mu = x.mean(0) if about == "mean" else 0
    return (1 - ((x - x_hat) ** 2).sum(-1) / ((x - mu) ** 2).sum(-1)).mean().item()


def _unexplained(x, x_hat, about="mean"):
    return 1 - metrics.explained_variance(x, x_hat, about)


EV_MISTAKES = (
    Mistake(
        "unexplained",
        _unexplained,
        "you returned the unexplained share (the fraction of variance left over). "
        "Explained variance is 1 minus that ratio.",
    ),
    Mistake(
        "about_zero",
        _about_zero,
        "with about='mean' you measured the variance from zero. Subtract the mean over tokens, "
        "x.mean(0) (one vector of d_model numbers), before squaring.",
    ),
    Mistake(
        "about_mean",
        _about_mean,
        "with about='zero' the denominator is the sum of x squared, measured from the origin: "
        "subtract nothing. Your function seems to subtract the mean in both forms.",
    ),
    Mistake(
        "per_token_mean",
        _per_token_mean,
        "you subtracted each token's own mean over its dimensions. The mean to subtract is over "
        "tokens: x.mean(0), the average activation vector.",
    ),
    Mistake(
        "mean_of_ratios",
        _mean_of_ratios,
        "you averaged one ratio per token. Explained variance is one ratio of two sums, each taken "
        "over all tokens and all dimensions.",
    ),
)


def check_explained_variance(fn) -> None:
    """fn(x, x_hat, about="mean") -> float, for x and x_hat of shape [n_tokens, d_model]:
    1 - sum ||x - x_hat||^2 / sum ||x - mu||^2, with mu the mean over tokens (about="mean") or 0 (about="zero")."""
    return check("explained_variance", fn, metrics.explained_variance, _ev_cases(), EV_MISTAKES)


def _without_bos(x, x_hat, input_ids, bos_id):
    keep = input_ids != bos_id
    return metrics.explained_variance(x[keep], x_hat[keep])


def _bos_kept(x, x_hat, input_ids, bos_id):
    return metrics.explained_variance(x.flatten(0, 1), x_hat.flatten(0, 1))


def _first_position(x, x_hat, input_ids, bos_id):
    return metrics.explained_variance(x[:, 1:].flatten(0, 1), x_hat[:, 1:].flatten(0, 1))


def _per_row(x, x_hat, input_ids, bos_id):
    keep = input_ids != bos_id
    return sum(metrics.explained_variance(x[i][keep[i]], x_hat[i][keep[i]]) for i in range(len(x))) / len(x)


BOS_MISTAKES = (
    Mistake(
        "bos_kept",
        _bos_kept,
        "BOS is still included. Its activation is far larger than any other token's, so it "
        "dominates both sums; keep only the tokens where input_ids != bos_id.",
    ),
    Mistake(
        "first_position",
        _first_position,
        "you dropped position 0 of every row. Drop the tokens that *are* BOS (input_ids == bos_id): "
        "a row cut from the middle of a document has no BOS, and its first token counts.",
    ),
    Mistake(
        "per_row",
        _per_row,
        "you averaged one explained variance per row. Pool the kept tokens of every row, then "
        "compute one explained variance over all of them.",
    ),
)

BOS = 2


def _bos_cases() -> list[Case]:
    cases = []
    for seed, (b, t, d, no_bos_row) in enumerate([(2, 5, 4, False), (3, 6, 5, True), (1, 8, 3, False)]):
        g = generator(100 + seed)
        x, x_hat = _pair(b * t, d, 100 + seed)
        x, x_hat = x.reshape(b, t, d), x_hat.reshape(b, t, d)
        ids = torch.randint(3, 50, (b, t), generator=g)
        ids[:, 0] = BOS
        x[:, 0] *= 30  # BOS's activation dwarfs the others', as in Gemma
        if no_bos_row:
            ids[-1, 0] = 7
            x[-1, 0] /= 30
        label = f"{b} rows x {t} tokens x {d} dims" + (", the last row without BOS" if no_bos_row else "")
        cases.append(Case(label, (x, x_hat, ids, BOS)))
    return cases


def check_ev_without_bos(fn) -> None:
    """fn(x, x_hat, input_ids, bos_id) -> float, for x and x_hat of shape [batch, seq, d_model]:
    explained variance about the mean over every token that is not BOS, pooled across rows."""
    return check("ev_without_bos", fn, _without_bos, _bos_cases(), BOS_MISTAKES)


EXERCISES = [
    Exercise(check_explained_variance, metrics.explained_variance, EV_MISTAKES),
    Exercise(check_ev_without_bos, _without_bos, BOS_MISTAKES),
]

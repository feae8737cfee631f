"""Lesson 06: match each true feature of the toy model to a latent, and measure a parent's absorption."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Mistake, check, generator

# ---------------------------------------------------------------- 06.1 best-matching latent


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _cos(W_dec, directions):
    """[d_sae, n_features], as saehelpers.toy.cosines."""
    return _unit(W_dec) @ _unit(directions).T


def _best_match(W_dec, directions):
    best = _cos(W_dec, directions).max(0)
    return best.indices, best.values


def _raw_dot(W_dec, directions):
    best = (W_dec @ directions.T).max(0)
    return best.indices, best.values


def _raw_dot_index(W_dec, directions):
    cos = _cos(W_dec, directions)
    i = (W_dec @ directions.T).argmax(0)
    return i, cos.gather(0, i[None])[0]


def _euclidean(W_dec, directions):
    i = torch.cdist(directions, W_dec).argmin(1)
    return i, _cos(W_dec, directions).gather(0, i[None])[0]


def _wrong_axis(W_dec, directions):
    best = _cos(W_dec, directions).max(1)
    return best.indices, best.values


def _absolute(W_dec, directions):
    best = _cos(W_dec, directions).abs().max(0)
    return best.indices, best.values


def _absolute_signed(W_dec, directions):
    cos = _cos(W_dec, directions)
    i = cos.abs().argmax(0)
    return i, cos.gather(0, i[None])[0]


_RAW = (
    "you compared raw dot products: a latent with a long decoder row wins although it points further "
    "away. Divide each decoder row by its norm first (the directions are unit rows already), so that "
    "the scores are cosines."
)
_ABS = (
    "you took the absolute cosine, so a latent pointing the opposite way (cosine near -1) counts as a "
    "match. A latent adds its decoder row times a non-negative activation: it can only write in its "
    "own direction. Take the largest signed cosine."
)

MATCH_MISTAKES = (
    Mistake("raw_dot", _raw_dot, _RAW),
    Mistake("raw_dot_index", _raw_dot_index, _RAW),
    Mistake(
        "euclidean",
        _euclidean,
        "you took the decoder row nearest each feature by Euclidean distance, which also depends on the "
        "rows' lengths: a short row pointing right at a feature loses to a longer one that points further "
        "away. Compare directions only: the cosine, each row divided by its norm.",
    ),
    Mistake(
        "wrong_axis",
        _wrong_axis,
        "you found the best feature for each latent (one answer per decoder row). The exercise asks for "
        "the best latent for each true feature: one answer per row of `directions`, the maximum over latents.",
    ),
    Mistake("absolute", _absolute, _ABS),
    Mistake("absolute_signed", _absolute_signed, _ABS),
)


def _match_cases() -> list[Case]:
    cases = []
    for seed, (n_features, d_sae, d) in enumerate([(3, 5, 8), (4, 7, 6), (5, 9, 12)]):
        g = generator(600 + seed)
        directions = _unit(torch.randn(n_features, d, generator=g))
        W = torch.randn(d_sae, d, generator=g)
        # Latents 0..n_features-1 point near the features, with short rows; a long row (latent
        # n_features) points between features 0 and 1, so raw dot products pick it instead.
        W[:n_features] = directions + 0.1 * torch.randn(n_features, d, generator=g)
        W[:n_features] *= 0.4
        W[n_features] = 5 * _unit(directions[0] + directions[1] + 0.2 * torch.randn(d, generator=g))
        # A latent pointing almost exactly against the last feature: |cos| would pick it.
        W[n_features + 1] = -(directions[-1] + 0.05 * torch.randn(d, generator=g))
        perm = torch.randperm(d_sae, generator=g)
        label = f"{n_features} true features, {d_sae} latents, d {d}, decoder rows of different lengths"
        cases.append(Case(label, (W[perm], directions)))
    # Rows of different lengths, close together: feature 0 has a short row pointing right at it (cosine
    # 0.99, length 0.3) beside a row of length 1 at cosine 0.8, which is nearer in Euclidean distance.
    g = generator(610)
    directions = _unit(torch.randn(3, 10, generator=g))
    W = 3 * _unit(torch.randn(7, 10, generator=g))
    W[:3] = 0.3 * _unit(directions + 0.14 * _unit(torch.randn(3, 10, generator=g)))
    other = torch.randn(10, generator=g)
    other = _unit(other - (other @ directions[0]) * directions[0])
    W[3] = 0.8 * directions[0] + 0.6 * other
    perm = torch.randperm(7, generator=g)
    label = "3 true features, 7 latents, d 10, a short row at cosine 0.99 beside a long one at 0.8"
    cases.append(Case(label, (W[perm], directions)))
    return cases


def check_best_match(fn) -> None:
    """fn(W_dec, directions) -> (latents, cosines), for W_dec [d_sae, d] and unit rows directions
    [n_features, d]: for each true feature, the latent whose decoder row has the highest cosine with it."""
    return check("best_match", fn, _best_match, _match_cases(), MATCH_MISTAKES)


# ---------------------------------------------------------------- 06.2 absorption


def _absorption(latent_acts, child_on):
    return (latent_acts[child_on] == 0).float().mean().item()


def _over_all_samples(latent_acts, child_on):
    return ((latent_acts == 0) & child_on).float().mean().item()


def _child_ignored(latent_acts, child_on):
    return (latent_acts == 0).float().mean().item()


def _recall(latent_acts, child_on):
    return (latent_acts[child_on] != 0).float().mean().item()


def _count(latent_acts, child_on):
    return int((latent_acts[child_on] == 0).sum())


ABSORPTION_MISTAKES = (
    Mistake(
        "over_all_samples",
        _over_all_samples,
        "you divided by the number of all samples. Absorption is a share of the samples with a child "
        "present: divide by how many of those there are.",
    ),
    Mistake(
        "child_ignored",
        _child_ignored,
        "you measured how often the latent is silent on all samples. Keep only the samples where a "
        "child is present (child_on), then take the share of those on which the latent is silent.",
    ),
    Mistake(
        "recall",
        _recall,
        "you measured the share of child samples on which the latent fires: that is 1 minus absorption. "
        "Absorption counts the samples where the parent's latent is silent (activation == 0).",
    ),
    Mistake(
        "count",
        _count,
        "you returned a count of samples. Absorption is a share, between 0 and 1: divide by the number "
        "of samples with a child present.",
    ),
)


def _absorption_cases() -> list[Case]:
    cases = []
    for seed, (n, p_child, p_silent) in enumerate([(20, 0.4, 0.25), (30, 0.3, 0.8), (16, 0.5, 0.0)]):
        g = generator(650 + seed)
        child_on = torch.rand(n, generator=g) < p_child
        child_on[:2] = torch.tensor([True, False])
        parent_on = child_on | (torch.rand(n, generator=g) < 0.3)
        acts = (torch.rand(n, generator=g) + 0.2) * parent_on
        silent = child_on & (torch.rand(n, generator=g) < p_silent)
        if p_silent:
            silent[0] = True  # at least one absorbed sample
        acts = torch.where(silent, 0.0, acts)
        label = f"{n} samples, {int(child_on.sum())} with a child present"
        cases.append(Case(label, (acts, child_on)))
    return cases


def check_absorption_score(fn) -> None:
    """fn(latent_acts, child_on) -> float, for latent_acts [n] (the parent's latent) and child_on bool [n]:
    the share of the samples with a child present on which the latent is silent (activation 0)."""
    return check("absorption_score", fn, _absorption, _absorption_cases(), ABSORPTION_MISTAKES)


EXERCISES = [
    Exercise(check_best_match, _best_match, MATCH_MISTAKES),
    Exercise(check_absorption_score, _absorption, ABSORPTION_MISTAKES),
]

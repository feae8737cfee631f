"""Lesson 05: every prefix's reconstruction from one encode, and which Matryoshka group holds a latent."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Mistake, check, generator

# ---------------------------------------------------------------- 05.1 prefix reconstructions


def _prefix_recons(feature_acts, W_dec, b_dec, widths):
    out, start, total = {}, 0, b_dec
    for w in widths:
        total = total + feature_acts[:, start:w] @ W_dec[start:w]
        out[w] = total
        start = w
    return out


def _one_too_many(feature_acts, W_dec, b_dec, widths):
    return {w: b_dec + feature_acts[:, : w + 1] @ W_dec[: w + 1] for w in widths}


def _no_b_dec(feature_acts, W_dec, b_dec, widths):
    return {w: feature_acts[:, :w] @ W_dec[:w] for w in widths}


def _own_group_only(feature_acts, W_dec, b_dec, widths):
    starts = (0, *widths[:-1])
    return {w: b_dec + feature_acts[:, s:w] @ W_dec[s:w] for s, w in zip(starts, widths)}


def _b_dec_per_group(feature_acts, W_dec, b_dec, widths):
    return {w: (i + 1) * b_dec + feature_acts[:, :w] @ W_dec[:w] for i, w in enumerate(widths)}


PREFIX_MISTAKES = (
    Mistake(
        "one_too_many",
        _one_too_many,
        "each prefix holds one latent too many. The prefix of width w is latents 0..w-1 (w latents): it ends "
        "at latent w-1, and latent w belongs to the next group. Python's slice [:w] stops before w.",
    ),
    Mistake(
        "no_b_dec",
        _no_b_dec,
        "b_dec is missing. Every reconstruction, whatever its width, is the decoded latents plus the "
        "decoder bias b_dec: start the running sum from b_dec, not from zero.",
    ),
    Mistake(
        "own_group_only",
        _own_group_only,
        "each width is decoded from its own group only. A prefix of width w uses every latent 0..w-1, "
        "all the earlier groups too: add each group's part to the previous prefix's reconstruction.",
    ),
    Mistake(
        "b_dec_per_group",
        _b_dec_per_group,
        "b_dec is added once per group, so the prefix of the second width holds it twice, the third three "
        "times. Add b_dec once, at the start; each group then adds only its latents' part.",
    ),
)


def _prefix_cases() -> list[Case]:
    cases = []
    for seed, (n, d_sae, d_model, widths) in enumerate(
        [(4, 12, 5, (2, 6, 12)), (3, 16, 4, (1, 4, 8, 16)), (5, 10, 6, (3, 10)), (2, 8, 4, (8,))]
    ):
        g = generator(500 + seed)
        acts = torch.randn(n, d_sae, generator=g).relu() + 0.1 * torch.rand(n, d_sae, generator=g)
        acts[0, widths[0] - 1 :: 2] = 0  # some latents silent, as after a sparse encode
        if len(widths) > 1:
            acts[1:, widths[0]] += 0.5  # the first latent after the first prefix fires on the other tokens
        W_dec = torch.randn(d_sae, d_model, generator=g) / d_model**0.5
        b_dec = 2 * torch.randn(d_model, generator=g)
        label = f"{n} tokens, {d_sae} latents, d_model {d_model}, widths {widths}"
        cases.append(Case(label, (acts, W_dec, b_dec, widths)))
    return cases


def check_prefix_recons(fn) -> None:
    """fn(feature_acts, W_dec, b_dec, widths) -> {w: reconstruction from latents 0..w-1}, for feature_acts
    [n, d_sae], W_dec [d_sae, d_model], b_dec [d_model] and increasing widths; each value [n, d_model]."""
    return check("prefix_recons", fn, _prefix_recons, _prefix_cases(), PREFIX_MISTAKES)


# ---------------------------------------------------------------- 05.2 group of a latent


def _group_of(latents, widths):
    return torch.searchsorted(torch.tensor(widths), latents, right=True)


def _boundary_to_lower(latents, widths):
    return torch.searchsorted(torch.tensor(widths), latents, right=False)


def _from_one(latents, widths):
    return _group_of(latents, widths) + 1


GROUP_MISTAKES = (
    Mistake(
        "boundary_to_lower",
        _boundary_to_lower,
        "a latent equal to a width is in the wrong group. The width w ends its group at latent w-1 "
        "(groups are half-open, [start, end)), so latent w is the first latent of the next group.",
    ),
    Mistake(
        "from_one",
        _from_one,
        "your groups are numbered from 1. Number them from 0: latents 0..widths[0]-1 are group 0.",
    ),
)


def _group_cases() -> list[Case]:
    cases = []
    for seed, widths in enumerate([(2, 8, 32), (4, 16), (1, 3, 9, 27), (128, 512, 2048)]):
        edges = sorted({0, *(w - 1 for w in widths), *widths[:-1]})
        g = generator(550 + seed)
        extra = torch.randint(0, widths[-1], (4,), generator=g).tolist()
        latents = torch.tensor(edges + extra)[torch.randperm(len(edges) + 4, generator=g)]
        cases.append(Case(f"widths {widths}, latents {latents.tolist()}", (latents, widths)))
    return cases


def check_group_of(fn) -> None:
    """fn(latents, widths) -> LongTensor of the group of each latent: group i holds latents
    widths[i-1]..widths[i]-1 (group 0 starts at latent 0)."""
    return check("group_of", fn, _group_of, _group_cases(), GROUP_MISTAKES)


EXERCISES = [
    Exercise(check_prefix_recons, _prefix_recons, PREFIX_MISTAKES),
    Exercise(check_group_of, _group_of, GROUP_MISTAKES),
]

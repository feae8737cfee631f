"""Lesson 07: choose a letter's latents for a k-sparse probe, and test a word for full absorption."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Mistake, check, generator

# ---------------------------------------------------------------- 07.1 k-sparse latent selection


def _select(acts, is_letter, k):
    score = acts[is_letter].mean(0) - acts[~is_letter].mean(0)
    return torch.sort(score, descending=True, stable=True).indices[:k]


def _absolute(acts, is_letter, k):
    score = (acts[is_letter].mean(0) - acts[~is_letter].mean(0)).abs()
    return torch.sort(score, descending=True, stable=True).indices[:k]


def _inside_only(acts, is_letter, k):
    return torch.sort(acts[is_letter].mean(0), descending=True, stable=True).indices[:k]


def _lowest(acts, is_letter, k):
    score = acts[is_letter].mean(0) - acts[~is_letter].mean(0)
    return torch.sort(score, stable=True).indices[:k]


def _frequency(acts, is_letter, k):
    on = (acts > 0).float()
    score = on[is_letter].mean(0) - on[~is_letter].mean(0)
    return torch.sort(score, descending=True, stable=True).indices[:k]


SELECT_MISTAKES = (
    Mistake(
        "absolute",
        _absolute,
        "you ranked latents by the absolute difference, so a latent that fires LESS on the letter's words "
        "ranks high. A probe on SAE activations reads a latent that fires when the letter is present: keep the "
        "sign (mean on the letter's words minus mean on the others) and take the largest.",
    ),
    Mistake(
        "inside_only",
        _inside_only,
        "you ranked latents by their mean on the letter's words alone. A latent that fires strongly on every "
        "word (the letter's and the others') then wins, though it says nothing about the letter: subtract its "
        "mean on the other words.",
    ),
    Mistake(
        "lowest",
        _lowest,
        "you took the k smallest differences (sorting ascending): those are the latents that fire least on the "
        "letter. Sort descending, or use torch.topk.",
    ),
    Mistake(
        "frequency",
        _frequency,
        "you compared how often each latent fires (activation > 0), not how strongly. Use the mean activation: "
        "a latent that fires weakly on every word and strongly on the letter's words is the better probe.",
    ),
)


def _select_cases() -> list[Case]:
    cases = []
    for seed, (n, d_sae, k) in enumerate([(40, 12, 3), (60, 20, 1), (30, 16, 4)]):
        g = generator(700 + seed)
        is_letter = torch.zeros(n, dtype=torch.bool)
        is_letter[torch.randperm(n, generator=g)[: n // 3]] = True
        acts = torch.rand(n, d_sae, generator=g) * (torch.rand(n, d_sae, generator=g) < 0.3)
        acts[:, 0] += 5.0  # fires strongly everywhere: high mean on the letter, no difference
        acts[is_letter, 1] += 2.0 + torch.rand(int(is_letter.sum()), generator=g)  # the letter's latent
        acts[~is_letter, 2] += 3.0  # fires on the other words: a large negative difference
        acts[:, 3] = 0.2 * (torch.rand(n, generator=g) < 0.5) + 1.5 * is_letter * (
            torch.rand(n, generator=g) < 0.6
        )
        acts[:, 4] = 0.1 + 0.5 * is_letter  # fires on every word, a little more on the letter's
        perm = torch.randperm(d_sae, generator=g)
        label = f"{n} words ({int(is_letter.sum())} with the letter), {d_sae} latents, k = {k}"
        cases.append(Case(label, (acts[:, perm], is_letter, k)))
    return cases


def check_select_latents(fn) -> None:
    """fn(acts, is_letter, k) -> [k] latent indices, best first, for acts [n, d_sae] and is_letter bool [n]:
    the k latents with the largest (mean activation on the letter's words) - (mean on the other words)."""
    return check("select_latents", fn, _select, _select_cases(), SELECT_MISTAKES)


# ---------------------------------------------------------------- 07.2 full absorption


def _full(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4):
    silent = (sae_acts[:, main] <= 0).all(1)
    top = proj.argmax(1)
    top_share = proj[torch.arange(len(proj)), top] / probe_proj
    return silent & (probe_proj > 0) & (cos[top] >= cos_full) & (top_share >= share)


def _no_silence(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4):
    top = proj.argmax(1)
    top_share = proj[torch.arange(len(proj)), top] / probe_proj
    return (probe_proj > 0) & (cos[top] >= cos_full) & (top_share >= share)


def _any_silent(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4):
    silent = (sae_acts[:, main] <= 0).any(1)
    top = proj.argmax(1)
    top_share = proj[torch.arange(len(proj)), top] / probe_proj
    return silent & (probe_proj > 0) & (cos[top] >= cos_full) & (top_share >= share)


def _top_by_activation(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4):
    silent = (sae_acts[:, main] <= 0).all(1)
    top = sae_acts.argmax(1)
    top_share = proj[torch.arange(len(proj)), top] / probe_proj
    return silent & (probe_proj > 0) & (cos[top] >= cos_full) & (top_share >= share)


def _no_cosine(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4):
    silent = (sae_acts[:, main] <= 0).all(1)
    top = proj.argmax(1)
    top_share = proj[torch.arange(len(proj)), top] / probe_proj
    return silent & (probe_proj > 0) & (top_share >= share)


def _share_of_sum(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4):
    silent = (sae_acts[:, main] <= 0).all(1)
    top = proj.argmax(1)
    top_share = proj[torch.arange(len(proj)), top] / proj.clamp_min(0).sum(1).clamp_min(1e-12)
    return silent & (probe_proj > 0) & (cos[top] >= cos_full) & (top_share >= share)


FULL_MISTAKES = (
    Mistake(
        "no_silence",
        _no_silence,
        "you did not require the main latents to be silent. Absorption is the main latents standing aside while "
        "another latent carries the letter: a word on which a main latent fires is not absorbed.",
    ),
    Mistake(
        "any_silent",
        _any_silent,
        "you counted a word when ANY main latent is silent. With several main latents (feature splitting), one "
        "of them firing still carries the letter: require ALL of them to be silent (.all(1), not .any(1)).",
    ),
    Mistake(
        "top_by_activation",
        _top_by_activation,
        "you took the latent with the largest activation. The absorbing latent is the one contributing most to "
        "the probe's direction: the largest proj (activation x decoder row . probe), not the largest activation.",
    ),
    Mistake(
        "no_cosine",
        _no_cosine,
        "you did not check the top latent's cosine with the probe. A latent that happens to push the projection "
        "up while pointing elsewhere (cosine below cos_full) is not one that absorbed the letter's direction.",
    ),
    Mistake(
        "share_of_sum",
        _share_of_sum,
        "you measured the top latent's share against the sum of the latents' contributions. The share is of the "
        "activation's own projection on the probe, probe_proj: what the SAE does not reconstruct counts too.",
    ),
)


def _full_cases() -> list[Case]:
    cases = []
    for seed, (n, d_sae, n_main) in enumerate([(24, 10, 1), (30, 12, 2), (20, 8, 2)]):
        g = generator(750 + seed)
        acts = torch.rand(n, d_sae, generator=g) * (torch.rand(n, d_sae, generator=g) < 0.4)
        main = list(range(n_main))
        cos = torch.rand(d_sae, generator=g) * 0.6 - 0.1
        cos[main] = 0.5
        cos[n_main] = 0.01  # aligned below the 0.025 threshold
        cos[n_main + 1] = 0.4  # the absorbing latent
        align = cos * (0.5 + torch.rand(d_sae, generator=g))  # decoder row . unit probe, same sign as cos
        align[n_main] = 0.6  # a long decoder row at a small cosine
        # Words 0..5 show each case the mistakes get wrong; the rest are random.
        acts[:6] = 0
        acts[0, n_main + 1] = 3.0  # a clean full absorption
        acts[1, 0] = 0.5  # main 0 fires (with 2 main latents, main 1 stays silent)
        acts[1, n_main + 1] = 3.0
        acts[2, n_main] = 5.0  # the top contributor has a cosine under the threshold
        acts[3, d_sae - 1] = 9.0  # the most active latent points away from the probe
        cos[d_sae - 1], align[d_sae - 1] = -0.2, -0.2
        acts[3, n_main + 1] = 1.0
        acts[4, n_main + 1] = 0.3  # a small share of probe_proj but most of what the latents carry
        acts[5, n_main + 1] = 2.0
        proj = acts * align
        probe_proj = proj.clamp_min(0).sum(1) + 0.3 * torch.rand(n, generator=g)
        probe_proj[4] = 4 * proj[4].clamp_min(0).sum()
        probe_proj[5] = -0.5  # the activation points against the probe
        label = f"{n} words, {d_sae} latents, main latents {main}"
        cases.append(Case(label, (acts, main, proj, cos, probe_proj)))
    return cases


def check_full_absorption(fn) -> None:
    """fn(sae_acts, main, proj, cos, probe_proj, cos_full=0.025, share=0.4) -> bool [n]: which words are fully
    absorbed (every main latent silent, probe_proj > 0, the top-contributing latent aligned and carrying
    at least `share` of probe_proj)."""
    return check("full_absorption", fn, _full, _full_cases(), FULL_MISTAKES)


EXERCISES = [
    Exercise(check_select_latents, _select, SELECT_MISTAKES),
    Exercise(check_full_absorption, _full, FULL_MISTAKES),
]

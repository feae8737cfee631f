"""Lesson 04: ablating features while keeping the SAE's error term, and the attribution-patching estimate."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Mistake, check, generator
from .lesson03 import mixed_inputs, tolerances, toy_sae

# ---------------------------------------------------------------- 04.1 zero ablation, error term kept


def _ablate(resid, sae, features):
    a = sae.encode(resid)[..., features]
    return resid - a @ sae.W_dec[features]


def _error_dropped(resid, sae, features):
    a = sae.encode(resid).clone()
    a[..., features] = 0
    return sae.decode(a)


def _all_but_listed(resid, sae, features):
    a = sae.encode(resid).clone()
    a[..., features] = 0
    return resid - a @ sae.W_dec


def _b_dec_too(resid, sae, features):
    return _ablate(resid, sae, features) - sae.b_dec


def _first_only(resid, sae, features):
    return _ablate(resid, sae, list(features)[:1])


ABLATE_MISTAKES = (
    Mistake(
        "error_term_dropped",
        _error_dropped,
        "you returned the SAE's reconstruction with the features set to 0, so the error term (resid minus "
        "the SAE's reconstruction) is lost as well. Start from resid and subtract only the listed features' "
        "terms, activation times decoder row.",
    ),
    Mistake(
        "all_but_listed",
        _all_but_listed,
        "you removed every feature except the listed ones. Remove the listed features and keep all others.",
    ),
    Mistake(
        "b_dec_too",
        _b_dec_too,
        "you also subtracted the decoder bias b_dec. The bias belongs to no feature: removing features "
        "leaves it where it is.",
    ),
    Mistake(
        "first_only",
        _first_only,
        "only the first listed feature was removed. Remove every feature in `features`, each with its "
        "own activation and decoder row.",
    ),
)


def _ablate_cases(sae, toy: bool) -> list[Case]:
    cases = []
    shapes = [(2, 4), (1, 6)] if toy else [(2, 3)]
    for seed, shape in enumerate(shapes):
        x, found = mixed_inputs(sae, shape, 400 + seed, 3)
        where = "toy SAE (d_in 8, d_sae 16)" if toy else f"your SAE (d_in {sae.cfg.d_in})"
        for features in ([found[0], found[2]], found) if seed == 0 else ([found[1]],):
            label = f"{where}, {shape[0]} rows x {shape[1]} tokens, features={features}"
            rtol, atol = tolerances(sae, x)
            cases.append(Case(label, (x, sae, features), rtol=rtol, atol=atol))
    return cases


def check_ablate_resid(fn, sae) -> None:
    """fn(resid, sae, features) -> resid with the listed features zero-ablated at every token, the SAE's
    error term and every other feature kept: resid - sum over f in features of a_f * d_f."""
    cases = _ablate_cases(toy_sae(), True) + _ablate_cases(sae, False)
    with torch.no_grad():
        return check("ablate_resid", fn, _ablate, cases, ABLATE_MISTAKES)


# ---------------------------------------------------------------- 04.2 attribution patching


def _attribution(acts, grad, W_dec):
    return (0 - acts) * (grad @ W_dec.T)


def _plus_acts(acts, grad, W_dec):
    return acts * (grad @ W_dec.T)


def _no_activation(acts, grad, W_dec):
    return -(grad @ W_dec.T)


def _gradient_only(acts, grad, W_dec):
    return grad @ W_dec.T


def _summed(acts, grad, W_dec):
    return _attribution(acts, grad, W_dec).sum(0)


NO_ACTIVATION = (
    "you left out the activation: the gradient alone says how m changes per unit along d_f, and ablating "
    "moves the residual by the feature's whole term. Multiply each token's dot product by (0 - acts[t, f])."
)

ATTRIBUTION_MISTAKES = (
    Mistake(
        "sign",
        _plus_acts,
        "the sign is flipped. Ablation moves the activation from acts[t, f] to 0, a change of "
        "(0 - acts[t, f]), so a feature that helps m gets a negative estimate.",
    ),
    Mistake("no_activation", _no_activation, NO_ACTIVATION),
    Mistake("gradient_only", _gradient_only, NO_ACTIVATION),
    Mistake(
        "summed",
        _summed,
        "you summed over tokens. Return one estimate per token and feature, [seq, d_sae]: each is "
        "ablating that feature at that token alone (sum over tokens afterwards to ablate it everywhere).",
    ),
)


def _attribution_cases() -> list[Case]:
    cases = []
    for seed, (t, d, f) in enumerate([(4, 6, 10), (3, 5, 12), (6, 4, 7)]):
        g = generator(410 + seed)
        acts = torch.relu(2 * torch.randn(t, f, generator=g) - 1)  # sparse and >= 0, like SAE activations
        grad = torch.randn(t, d, generator=g)
        W_dec = torch.randn(f, d, generator=g)
        label = (
            f"{t} tokens, d_model {d}, d_sae {f} ({int((acts > 0).sum())} of {acts.numel()} activations on)"
        )
        cases.append(Case(label, (acts, grad, W_dec)))
    return cases


def check_attribution(fn) -> None:
    """fn(acts, grad, W_dec) -> [seq, d_sae]: the first-order change in the metric when feature f is
    ablated at token t alone, (0 - acts[t, f]) * (grad[t] . W_dec[f])."""
    return check("attribution", fn, _attribution, _attribution_cases(), ATTRIBUTION_MISTAKES)


EXERCISES = [
    Exercise(check_ablate_resid, _ablate, ABLATE_MISTAKES, needs=("sae",)),
    Exercise(check_attribution, _attribution, ATTRIBUTION_MISTAKES),
]

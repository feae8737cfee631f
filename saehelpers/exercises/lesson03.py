"""Lesson 03: the edit a steering hook makes at chosen positions, and clamping a feature through the SAE."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Mistake, check, generator

# ---------------------------------------------------------------- shared with lesson 04: SAEs and inputs


def toy_sae(seed: int = 303):
    """A small sae_lens JumpReLU SAE (d_in 8, d_sae 16, float32) with random weights and biases."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    g = generator(seed)
    d_in, d_sae = 8, 16
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g))
        sae.b_enc.copy_(0.3 * torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
        sae.threshold.fill_(0.4)
    sae.requires_grad_(False)
    return sae


def sae_inputs(sae, shape: tuple[int, int], seed: int, k: int = 8) -> torch.Tensor:
    """Residual vectors [batch, seq, d_in] for `sae`, in its dtype and on its device: each token a sum of k
    random decoder rows at activations 2..8, plus b_dec and a little noise, so some features fire and
    most do not, as on real text."""
    g = generator(seed)
    n, d_sae = shape[0] * shape[1], sae.cfg.d_sae
    acts = torch.zeros(n, d_sae)
    k = min(k, d_sae // 4)
    for i in range(n):
        acts[i, torch.randperm(d_sae, generator=g)[:k]] = 2 + 6 * torch.rand(k, generator=g)
    W_dec, b_dec = sae.W_dec.detach().float().cpu(), sae.b_dec.detach().float().cpu()
    x = acts @ W_dec + b_dec + 0.5 * torch.randn(n, W_dec.shape[1], generator=g)
    return x.reshape(*shape, -1).to(sae.device, sae.dtype)


def active_features(sae, x: torch.Tensor, n: int) -> list[int]:
    """n features that are on at some tokens of x and off at others, the strongest first."""
    with torch.no_grad():
        a = sae.encode(x).float().flatten(0, -2)
    on = (a > 0).sum(0)
    mixed = ((on > 0) & (on < a.shape[0])).float()
    best = (a.amax(0) * mixed).topk(n)
    if not bool((best.values > 0).all()):
        raise RuntimeError("Could not find features that are on at some tokens and off at others.")
    return best.indices.tolist()


def mixed_inputs(sae, shape: tuple[int, int], seed: int, n: int) -> tuple[torch.Tensor, list[int]]:
    """`sae_inputs` and n features that are on at some of its tokens and off at others.

    A trained SAE finds them at once. One whose encoder does not follow its decoder (random weights, as
    in the fake hub's real-shaped release) fires nowhere on such inputs, so their spread around b_dec is
    scaled up until n features are mixed."""
    x = sae_inputs(sae, shape, seed)
    b_dec = sae.b_dec.detach().to(x.dtype)
    for scale in (1, 4, 16, 64):
        xs = x if scale == 1 else b_dec + scale * (x - b_dec)
        try:
            return xs, active_features(sae, xs, n)
        except RuntimeError:
            continue
    raise RuntimeError(
        f"Could not find {n} features of this SAE that are on at some tokens and off at others, even with "
        "inputs scaled 64x around b_dec: is it an SAE for this model's residual stream?"
    )


def n_on(sae, x: torch.Tensor, feature: int) -> int:
    with torch.no_grad():
        return int((sae.encode(x)[..., feature] > 0).sum())


def tolerances(sae, x: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) for comparing residual vectors computed with `sae` from x. In bfloat16 / float16 an
    entry that comes out small after a large cancellation keeps the rounding error of the large terms,
    so atol follows the size of x's large entries."""
    if sae.dtype in (torch.float32, torch.float64):
        return 1e-4, 1e-4
    return 2e-2, 2e-2 * x.detach().float().abs().flatten().quantile(0.99).item()


# ---------------------------------------------------------------- 03.1 steering at chosen positions


def _steer_positions(resid, vector, coef, positions):
    chosen = torch.zeros(resid.shape[1], dtype=torch.bool, device=resid.device)
    chosen[list(positions)] = True
    return torch.where(chosen[:, None], resid + coef * vector, resid)


def _every_position(resid, vector, coef, positions):
    return resid + coef * vector


def _not_scaled(resid, vector, coef, positions):
    return _steer_positions(resid, vector, 1.0, positions)


def _subtracted(resid, vector, coef, positions):
    return _steer_positions(resid, vector, -coef, positions)


def _rows(resid, vector, coef, positions):
    out = resid.clone()
    out[list(positions)] += coef * vector
    return out


STEER_MISTAKES = (
    Mistake(
        "every_position",
        _every_position,
        "every position was steered. Add the vector only at the token positions listed in `positions` "
        "(the second axis of resid), and leave the other positions as they are.",
    ),
    Mistake(
        "not_scaled",
        _not_scaled,
        "the vector was added as it is. Scale it by coef first: coef is the steering strength.",
    ),
    Mistake(
        "subtracted",
        _subtracted,
        "the vector was subtracted. Steering adds coef times the vector (a negative coef is what steers away).",
    ),
    Mistake(
        "rows",
        _rows,
        "you steered whole rows of the batch: positions index the second axis of resid [batch, seq, d_model] "
        "(the tokens), not the first. Steer those tokens in every row.",
    ),
)


def _steer_cases() -> list[Case]:
    cases = []
    # Every position is below the batch size, so indexing rows by mistake gives a wrong answer, not a crash.
    for seed, (b, t, d, positions, coef) in enumerate(
        [(3, 5, 4, [0, 2], 2.5), (5, 6, 3, [1, 4], -1.5), (2, 4, 5, [1], 0.75)]
    ):
        g = generator(310 + seed)
        resid = 3 * torch.randn(b, t, d, generator=g)
        vector = torch.randn(d, generator=g)
        label = f"{b} rows x {t} tokens x {d} dims, positions={positions}, coef={coef}"
        cases.append(Case(label, (resid, vector, coef, positions)))
    return cases


def check_steer_positions(fn) -> None:
    """fn(resid, vector, coef, positions) -> a new tensor: resid [batch, seq, d_model] plus coef * vector
    [d_model] at the token positions listed, in every row; the other positions unchanged."""
    return check("steer_positions", fn, _steer_positions, _steer_cases(), STEER_MISTAKES)


# ---------------------------------------------------------------- 03.2 clamping a feature


def _clamp(resid, sae, feature, value):
    a = sae.encode(resid)[..., feature]
    return resid + (value - a)[..., None] * sae.W_dec[feature]


def _reconstruction(resid, sae, feature, value):
    a = sae.encode(resid).clone()
    a[..., feature] = value
    return sae.decode(a)


def _steered(resid, sae, feature, value):
    return resid + value * sae.W_dec[feature]


def _encoder_column(resid, sae, feature, value):
    a = sae.encode(resid)[..., feature]
    return resid + (value - a)[..., None] * sae.W_enc[:, feature]


def _clamp_sign(resid, sae, feature, value):
    a = sae.encode(resid)[..., feature]
    return resid + (a - value)[..., None] * sae.W_dec[feature]


CLAMP_MISTAKES = (
    Mistake(
        "error_term_dropped",
        _reconstruction,
        "you returned the SAE's reconstruction with the feature set to value, so the SAE's error term "
        "(resid minus its reconstruction) is lost. Start from resid and change only the feature's term.",
    ),
    Mistake(
        "steered",
        _steered,
        "you added value times the feature's direction whatever its activation: that is steering. Clamping "
        "moves the feature's activation from what it is now at each token (what sae.encode gives) to value.",
    ),
    Mistake(
        "encoder_column",
        _encoder_column,
        "you moved resid along the encoder's column for the feature. What the feature writes into the "
        "residual stream is its decoder row, sae.W_dec[feature].",
    ),
    Mistake(
        "sign",
        _clamp_sign,
        "the change has the wrong sign: the activation moved away from value. The step is value minus "
        "the current activation, not the current activation minus value.",
    ),
)


def _clamp_cases(sae, toy: bool) -> list[Case]:
    cases = []
    shapes = [(2, 4), (1, 6)] if toy else [(2, 3)]
    for seed, shape in enumerate(shapes):
        x, (f,) = mixed_inputs(sae, shape, 320 + seed, 1)
        a_max = float(sae.encode(x)[..., f].float().max())
        on = n_on(sae, x, f)
        for value in (round(2 * a_max, 2), 0.0):
            where = "toy SAE (d_in 8, d_sae 16)" if toy else f"your SAE (d_in {sae.cfg.d_in})"
            label = (
                f"{where}, {shape[0]} rows x {shape[1]} tokens, feature {f} (on at {on} of "
                f"{shape[0] * shape[1]} tokens), value={value}"
            )
            rtol, atol = tolerances(sae, x)
            cases.append(Case(label, (x, sae, f, value), rtol=rtol, atol=atol))
    return cases


def check_clamp_resid(fn, sae) -> None:
    """fn(resid, sae, feature, value) -> resid with the feature's activation set to value at every token,
    through the SAE: resid + (value - a) * d, a the feature's activation there, d its decoder row."""
    cases = _clamp_cases(toy_sae(), True) + _clamp_cases(sae, False)
    with torch.no_grad():
        return check("clamp_resid", fn, _clamp, cases, CLAMP_MISTAKES)


EXERCISES = [
    Exercise(check_steer_positions, _steer_positions, STEER_MISTAKES),
    Exercise(check_clamp_resid, _clamp, CLAMP_MISTAKES, needs=("sae",)),
]

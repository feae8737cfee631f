"""One check per concept, used by every module: what a valid value is, and an error that says so.

An "int" here is a Python or NumPy integer, or a one-element integer tensor (what `tensor.argmax()` or
`table.index[0]` give you); never a bool, a float or a string. Ranges are inclusive and never read
Python-style: -1 is not "the last one", it is out of range.
"""

from __future__ import annotations

import math
import numbers

import torch


def as_int(value) -> int | None:
    """`value` as an int if it is one integer (see the module docstring), else None."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            return None
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def check_int(value, name: str, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """`value` as an int in low..high (inclusive; None: no bound), else ValueError naming the valid range."""
    valid = (
        f"an int in {low}..{high}"
        if low is not None and high is not None
        else f"an int >= {low}"
        if low is not None
        else f"an int <= {high}"
        if high is not None
        else "an int"
    )
    hint = f" {hint}" if hint else ""
    i = as_int(value)
    if i is None:
        raise ValueError(f"{name} must be {valid}, got {value!r} ({type(value).__name__}).{hint}")
    if (low is not None and i < low) or (high is not None and i > high):
        raise ValueError(f"{name} must be {valid}, got {i}.{hint}")
    return i


def check_feature(feature, d_sae: int) -> int:
    """`feature` as an int if it is a latent of an SAE with `d_sae` latents (0..d_sae-1), else ValueError."""
    i = as_int(feature)
    if i is None:
        raise ValueError(
            f"A feature id must be an int in 0..{d_sae - 1}, got {feature!r} ({type(feature).__name__})."
        )
    if not 0 <= i < d_sae:
        raise ValueError(
            f"Feature {i} is out of range: this SAE has {d_sae} latents, so valid ids are 0..{d_sae - 1}."
        )
    return i


def check_features(features, d_sae: int) -> list[int]:
    """`features` (an id, or a non-empty list / 1-D tensor / array of ids) as a list of ids, in the order given."""
    if hasattr(features, "tolist") and as_int(features) is None:  # a tensor or array of ids
        features = features.tolist()
    many = hasattr(features, "__iter__") and not isinstance(features, (str, bytes, dict))
    ids = [check_feature(f, d_sae) for f in (features if many else [features])]
    if not ids:
        raise ValueError(
            f"No features given: pass a feature id or a non-empty list of ids in 0..{d_sae - 1}."
        )
    return ids


def _bounds(low, high) -> str:
    if low is not None and high is not None:
        return f" in {low:g}..{high:g}"
    return f" >= {low:g}" if low is not None else f" <= {high:g}" if high is not None else ""


def check_finite(
    value, name: str, low: float | None = None, high: float | None = None, hint: str = ""
) -> float:
    """`value` as a float if it is one finite real number in low..high (inclusive; None: no bound), else ValueError.

    A Python or NumPy number or a one-element real tensor; never a bool or a string.
    """
    valid = "a finite number" + _bounds(low, high)
    hint = f" {hint}" if hint else ""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name} must be a real number ({valid}), got {value!r} ({type(value).__name__}).{hint}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite ({valid}), got {value}.{hint}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {valid}, got {value:g}.{hint}")
    return value


def check_vector(value, name: str, shape: tuple, hint: str = "") -> torch.Tensor:
    """`value` as a floating-point tensor of `shape` holding no NaN or inf, else ValueError.

    An entry of `shape` may be a name such as "vocab": any size there.
    """
    hint = f" {hint}" if hint else ""
    want = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be a float tensor of shape {want}{hint}, got {type(value).__name__}."
        ) from None
    if t.dim() != len(shape) or any(isinstance(n, int) and n != m for n, m in zip(shape, t.shape)):
        raise ValueError(f"{name} must have shape {want}{hint}, got shape {tuple(t.shape)}.")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point (float32, bfloat16, ...), got {t.dtype}.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; give finite values.")
    return t


def check_callable(fn, name: str, example: str):
    """`fn` if it can be called, else ValueError naming what to pass (e.g. a lambda), before any work."""
    if not callable(fn):
        raise ValueError(f"{name} must be a function, e.g. {example}; got {fn!r:.80} ({type(fn).__name__}).")
    return fn


def check_sae(sae, release=None, model=None, *, layers: bool = True, affine: bool = False) -> int | None:
    """Check `sae` before any work and return the layer it reads (None for an SAE that names no layer,
    such as the toy model's, when neither a model nor the release's layers are asked about).

    Always: a SAELens SAE (cfg.d_in, cfg.d_sae, encode, decode); a number, a string or a model is refused.
    release (a Release or a preset name): the SAE's width is the release's; with layers=True (the default)
    also its layer has an SAE in the release and its d_in is the release's d_model (the SAE belongs to the
    release); layers=False checks the Matryoshka layout only (an SAE you trained, with
    `dataclasses.replace(release, d_sae=..., matryoshka_widths=...)`). model: the model has the SAE's
    layer and its d_model is the SAE's d_in. affine: decode is affine (normalize_activations 'none'),
    which an ablation that keeps the SAE's error term needs.
    """
    from .release import as_release, layer_of

    cfg = getattr(sae, "cfg", None)
    if not all(hasattr(sae, m) for m in ("encode", "decode")) or not all(
        isinstance(as_int(getattr(cfg, name, None)), int) for name in ("d_in", "d_sae")
    ):
        raise ValueError(
            f"Expected a SAELens SAE (e.g. saehelpers.load_sae(layer)), got {sae!r:.80} ({type(sae).__name__})."
        )
    named = getattr(getattr(cfg, "metadata", None), "hook_name", None) is not None
    layer = layer_of(sae, model) if model is not None or named or (release is not None and layers) else None
    if affine and getattr(cfg, "normalize_activations", "none") != "none":
        raise ValueError(
            f"This SAE normalises its input ({cfg.normalize_activations!r}); ablation with the error term kept "
            "needs normalize_activations='none' (x - a_f d_f equals decode(a') + error only when decode is affine)."
        )
    if release is None:
        return layer
    rel = as_release(release)
    if not layers:
        if cfg.d_sae != rel.d_sae:
            raise ValueError(
                f"The SAE has {cfg.d_sae} latents but the {rel.name!r} layout has {rel.d_sae}. "
                "Pass the release the SAE came from (e.g. get_release('mini') for a mini SAE)."
            )
        return layer
    if layer not in rel.layers:
        raise ValueError(
            f"This SAE reads layer {layer}, which has no SAE in the {rel.name!r} release "
            f"(layers {list(rel.layers)}): pass the release the SAE came from."
        )
    if (cfg.d_in, cfg.d_sae) != (rel.d_model, rel.d_sae):
        raise ValueError(
            f"SAE/release mismatch: the SAE has d_in {cfg.d_in} and {cfg.d_sae} latents, but the "
            f"{rel.name!r} release has d_model {rel.d_model} and {rel.d_sae} latents. "
            "Load the SAE and the model from the same preset."
        )
    return layer


__all__ = [
    "as_int",
    "check_feature",
    "check_features",
    "check_finite",
    "check_int",
    "check_sae",
    "check_vector",
]

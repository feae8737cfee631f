"""One check per concept, used by every module: what a valid value is, and an error that says so.

An "int" here is a Python or NumPy integer, or a one-element integer tensor (what `tensor.argmax()` or
`table.index[0]` give you); never a bool, a float or a string. Ranges are inclusive and never read
Python-style: -1 is not "the last one", it is out of range.
"""

from __future__ import annotations

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


__all__ = ["as_int", "check_feature", "check_int"]

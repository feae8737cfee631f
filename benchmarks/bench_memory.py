"""Goal: every notebook's kernel peaks at <= 1.5 GB resident memory on the mini preset, as Binder runs it.

Binder kills a kernel above 2 GB. Each notebook runs top to bottom in a fresh kernel
(scripts/run_notebooks.py), once with the model in bfloat16 (what binder/start sets) and once in
float32, side by side; the table gives the kernel's peak RSS (VmHWM: the model's file-mapped weights
count in it once touched) and the wall time. With --cgroup-mb (root, cgroup v1 memory controller)
the kernels also run under a real memory limit, as on Binder: "killed" means the kernel died there.

    python benchmarks/bench_memory.py [--dtypes bfloat16 float32] [--cgroup-mb 2048] [notebooks ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_MB = 1536
CGROUP = Path("/sys/fs/cgroup/memory/saehelpers-bench")


def limit(mb: int):
    """A preexec function that puts the child (and so its kernel) into a memory cgroup of `mb` MB."""
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.limit_in_bytes").write_text(str(mb * 2**20))
    return lambda: (CGROUP / "cgroup.procs").write_text(str(os.getpid()))


def run(notebook: Path, dtype: str, cgroup_mb: int) -> dict:
    env = {**os.environ, "SAEHELPERS_PRESET": "mini", "SAEHELPERS_DTYPE": dtype, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), "--json", str(notebook)]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, preexec_fn=limit(cgroup_mb) if cgroup_mb else None
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"notebook": notebook.name, "ok": False, "peak_mb": float("nan"), "seconds": float("nan"),
                "errors": [done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no result"]}  # fmt: skip
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--cgroup-mb", type=int, default=0, help="run each kernel under this memory limit")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    head = " | ".join(f"{d} peak MB | {d} s" for d in args.dtypes)
    print(f"| notebook | {head} |" + (f" under {args.cgroup_mb} MB |" if args.cgroup_mb else ""))
    print("|---" * (1 + 2 * len(args.dtypes) + bool(args.cgroup_mb)) + "|")
    missed = 0
    for nb in notebooks:
        cells, verdicts = [], []
        for i, dtype in enumerate(args.dtypes):
            r = run(nb, dtype, args.cgroup_mb)
            cells += [f"{r['peak_mb']:,.0f}", f"{r['seconds']:.0f}"]
            verdicts.append(
                "ok" if r["ok"] else ("killed" if any("Dead" in e for e in r["errors"]) else "failed")
            )
            missed += i == 0 and not (r["ok"] and r["peak_mb"] <= GOAL_MB)
        tail = f" {', '.join(verdicts)} |" if args.cgroup_mb else ""
        print(f"| {nb.stem} | " + " | ".join(cells) + " |" + tail, flush=True)
    print(
        f"\ngoal: {args.dtypes[0]} peak <= {GOAL_MB} MB per notebook; missed by {missed} of {len(notebooks)}"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

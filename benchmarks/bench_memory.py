"""Goal: every notebook's kernel fits in 1.5 GB on the mini preset, as Binder runs it (it kills a kernel above 2 GB).

Each notebook runs top to bottom in a fresh kernel (scripts/run_notebooks.py), once with the model in
bfloat16 (what binder/start sets) and once in float32, side by side. The table gives the kernel's peak
RSS (VmHWM), how much of it is file-mapped (the model's mmapped weights, torch's shared libraries) and
the wall time. File-mapped pages are clean: under a memory limit the kernel drops and rereads them
instead of killing the process, so peak RSS overstates what a limit sees. Hence the goal is checked
under a real limit: with --cgroup-mb (root, cgroup v1 memory controller) every kernel runs inside a
memory cgroup of that size, as on Binder; "killed" means the kernel died there.

"binder" in --dtypes runs the kernel through binder/start (its own choice of dtype on this CPU, printed
above the table). --isa emulates another CPU as benchmarks/bench_cpu_paths.py does, and --threads 1 gives
the kernel one thread, as on Binder.

    python benchmarks/bench_memory.py [--dtypes bfloat16 float32 binder] [--cgroup-mb 2048]
        [--isa native|AVX512_CORE|AVX2] [--threads 1] [notebooks ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cpu_paths import CAPS, base_env  # noqa: E402  (one definition of the emulated CPUs)

GOAL_MB = 1536
CGROUP = Path(
    f"/sys/fs/cgroup/memory/saehelpers-bench-{os.getpid()}"
)  # one per run: runs can go side by side


def limit(mb: int):
    """A preexec function that puts the child (and so its kernel) into a memory cgroup of `mb` MB."""
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.limit_in_bytes").write_text(str(mb * 2**20))
    return lambda: (CGROUP / "cgroup.procs").write_text(str(os.getpid()))


def drop_page_cache() -> None:
    """Empty the page cache (root), so the weights a kernel maps are read again and charged to its own cgroup.

    A page is charged to the cgroup that first reads it: without this, weights cached by an earlier
    process would not count against the limit at all, unlike on Binder.
    """
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def environment(dtype: str, isa: str, threads: int) -> dict:
    env = base_env(isa)
    if dtype != "binder":
        env["SAEHELPERS_DTYPE"] = dtype
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in the kernel
    return env


def binder_choice(isa: str) -> str:
    """What binder/start runs on this (emulated) CPU, in words."""
    code = "from saehelpers import loading; print(loading.dtype_plan('cpu')[0])"
    cmd = ["bash", str(ROOT / "binder" / "start"), sys.executable, "-c", code]
    done = subprocess.run(cmd, env=environment("binder", isa, 0), capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run(notebook: Path, dtype: str, cgroup_mb: int, isa: str = "native", threads: int = 0) -> dict:
    if cgroup_mb:
        drop_page_cache()
    env = environment(dtype, isa, threads)
    cmd = [sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), "--json", str(notebook)]
    if dtype == "binder":
        cmd = ["bash", str(ROOT / "binder" / "start"), *cmd]
    kills = oom_kills() if cgroup_mb else 0
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, preexec_fn=limit(cgroup_mb) if cgroup_mb else None
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if cgroup_mb and oom_kills() > kills:  # the kernel or the runner died at the limit
        return {"notebook": notebook.name, "ok": False, "peak_mb": float("nan"), "seconds": float("nan"),
                "errors": [f"Dead: killed by the OOM killer at the {cgroup_mb} MB limit"]}  # fmt: skip
    if not lines:
        return {"notebook": notebook.name, "ok": False, "peak_mb": float("nan"), "seconds": float("nan"),
                "errors": [done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no result"]}  # fmt: skip
    return json.loads(lines[-1])


def oom_kills() -> int:
    """Processes the OOM killer has killed in this run's cgroup so far (cgroup v1 memory.oom_control)."""
    control = CGROUP / "memory.oom_control"
    text = control.read_text() if control.exists() else ""
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")), 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--cgroup-mb", type=int, default=0, help="run each kernel under this memory limit")
    parser.add_argument("--isa", choices=list(CAPS), default="native", help="emulate a CPU (oneDNN cap)")
    parser.add_argument("--threads", type=int, default=0, help="the kernel's torch threads (Binder: 1)")
    args = parser.parse_args()
    if "binder" in args.dtypes:
        print(
            f"binder/start runs: {binder_choice(args.isa)} (CPU: {args.isa}, threads: {args.threads or 'all'})\n"
        )
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    head = " | ".join(f"{d} peak MB | of it file-mapped | {d} s" for d in args.dtypes)
    under = f" under {args.cgroup_mb} MB |" if args.cgroup_mb else ""
    print(f"| notebook | {head} |{under}")
    print("|---" * (1 + 3 * len(args.dtypes) + bool(args.cgroup_mb)) + "|")
    missed, why = 0, []
    for nb in notebooks:
        cells, verdicts = [], []
        for i, dtype in enumerate(args.dtypes):
            r = run(nb, dtype, args.cgroup_mb, args.isa, args.threads)
            cells += [f"{r['peak_mb']:,.0f}", f"{r.get('file_mb', float('nan')):,.0f}", f"{r['seconds']:.0f}"]
            verdicts.append(
                "ok" if r["ok"] else ("killed" if any("Dead" in e for e in r["errors"]) else "failed")
            )
            if not r["ok"]:
                why.append(f"{nb.stem}, {dtype}: " + " / ".join((r["errors"] + r.get("stderr", []))[:3]))
            # Met: it ran under the limit, or (no limit set) its anonymous part fits the goal. File-mapped
            # pages (the mmapped weights, shared libraries) are clean: under a limit the kernel drops them.
            fits = r["peak_mb"] - r.get("file_mb", 0) <= GOAL_MB
            missed += i == 0 and not (r["ok"] and (args.cgroup_mb or fits))
        tail = f" {', '.join(verdicts)} |" if args.cgroup_mb else ""
        print(f"| {nb.stem} | " + " | ".join(cells) + " |" + tail, flush=True)
    goal = (
        f"runs under a {args.cgroup_mb} MB limit"
        if args.cgroup_mb
        else f"peak minus file-mapped <= {GOAL_MB} MB"
    )
    for line in why:
        print(f"- {line[:400]}")
    print(f"\ngoal: with {args.dtypes[0]}, every notebook {goal}; missed by {missed} of {len(notebooks)}")
    if args.cgroup_mb and CGROUP.exists():
        CGROUP.rmdir()  # empty once its kernels have exited
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

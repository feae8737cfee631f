"""Run notebooks top to bottom in a fresh kernel each, as a learner would, and report time and memory per cell.

The lessons' test run is nbmake's (`pytest --nbmake notebooks`, see conftest.py and tests/claims.py).
This runner stays for what nbmake does not give: the kernel's peak resident memory after each cell
(VmHWM, what Binder's 2 GB limit is about: benchmarks/bench_memory.py), the header timings, the real
release's shapes (scripts/run_real_shape.py), a notebook run in another venv (tests/test_setup_cell.py),
and running past a failing cell (keep_going: the learner notebooks fail at their exercises and every
later cell must still run, tests/test_learner_notebooks.py). It reports errors and anything written to
stderr the same way. The executed copy is saved under .cache/runs/ (.cache/executed/ holds nbmake's).

    python scripts/run_notebooks.py [notebooks/00_quickstart.ipynb ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / ".cache" / "runs"
CELL_TIMEOUT = 300  # seconds per cell; the longest, the first model conversion, takes ~1 minute


@dataclass
class Run:
    path: Path
    seconds: float = 0.0
    peak_mb: float = 0.0  # the kernel process's VmHWM
    errors: list[str] = field(default_factory=list)  # "cell N: ename: evalue"
    failed: dict[int, str] = field(
        default_factory=dict
    )  # cell index -> exception name (CellTimeoutError, ...)
    stderr: list[str] = field(default_factory=list)  # "cell N: text"
    cell_seconds: list[float] = field(default_factory=list)
    cell_peak_mb: list[float] = field(default_factory=list)  # VmHWM after each cell: which cell set the peak
    file_mb: float = (
        0.0  # the most RssFile seen after a cell: the model's mmapped weights, which the kernel can
    )
    # drop and reread under a memory limit (clean file pages), unlike the anonymous rest of the peak

    @property
    def ok(self) -> bool:
        return not self.errors and not self.stderr

    def record(self) -> dict:
        """The run as one JSON-ready dict."""
        return {"notebook": self.path.name, "seconds": self.seconds, "peak_mb": self.peak_mb, "file_mb": self.file_mb,
                "ok": self.ok, "errors": self.errors, "stderr": self.stderr, "cell_seconds": self.cell_seconds,
                "cell_peak_mb": self.cell_peak_mb}  # fmt: skip

    def report(self, label: str = "") -> str:
        """One line (time, peak memory, ok or FAILED), then each error and stderr line under it."""
        head = (
            f"{self.path.name:<32} {label}{self.seconds:7.1f} s  peak {self.peak_mb:7.0f} MB "
            f"(file-mapped {self.file_mb:4.0f})  {'ok' if self.ok else 'FAILED'}"
        )
        return "\n".join([head, *("    " + line for line in self.errors + self.stderr)])


def _status_mb(pid: int, key: str = "VmHWM") -> float:
    """A memory figure of /proc/PID/status in MB: VmHWM (peak resident), RssFile (file-mapped, now), ..."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM")


def run(path: Path, timeout: int = CELL_TIMEOUT, save: bool = True, keep_going: bool = False) -> Run:
    """Execute `path` in a fresh python3 kernel started in its folder; never raises for a failing cell.

    A failing cell stops the run, as Jupyter's "run all" does, unless keep_going (used to check that a
    learner notebook fails only at its exercises, and that every cell after one still runs).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No notebook at {path}: give a path such as notebooks/00_quickstart.ipynb.")
    nb = nbformat.read(path, as_version=4)
    result = Run(path)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid
        for i, cell in enumerate(nb.cells):
            t = time.perf_counter()
            try:
                client.execute_cell(cell, i)
            except Exception as e:  # CellExecutionError, or a timeout
                result.errors.append(f"cell {i}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
                result.failed[i] = getattr(e, "ename", type(e).__name__)
                if not keep_going:
                    break
            finally:
                result.cell_seconds.append(time.perf_counter() - t)
                result.cell_peak_mb.append(_peak_mb(pid))
                result.file_mb = max(result.file_mb, _status_mb(pid, "RssFile"))
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    result.stderr.append(f"cell {i}: {out['text'].strip()[:300]}")
        result.peak_mb = _peak_mb(pid)
    result.seconds = time.perf_counter() - start
    if save:
        EXECUTED.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, EXECUTED / path.name)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: all numbered ones)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per notebook instead")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    bad = 0
    for p in paths:
        r = run(p)
        bad += not r.ok
        print(json.dumps(r.record()) if args.json else r.report(), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

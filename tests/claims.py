"""The lessons' executed runs, for the pytest plugin that runs them (../conftest.py) and for claim tests.

One run per notebook per test session: `pytest --nbmake notebooks tests` executes each lesson once
through nbmake (the root conftest.py wraps nbmake's items with `run_item`), saves the executed copy to
.cache/executed/<name>.ipynb with `saehelpers_run` metadata, and dumps the kernel's variables after the
last cell to .cache/executed/<stem>.vars.pkl. A claim test then reads that run with `notebook(name)`;
when this session did not run the notebook (e.g. `pytest tests/test_claims.py` alone), `notebook`
executes it once, the same way, and later tests reuse it.

A run fails on an error and on anything written to stderr (a warning or a stray progress bar shows as a
pink block in JupyterLab and makes a learner doubt the lesson), and the failure names the cell.

SAEHELPERS_REUSE_EXECUTED=1 lets `notebook` read a copy left by an earlier session when its source is
unchanged (for editing claim tests; saehelpers' code may have changed since, so CI never sets it).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat
from nbmake.nb_result import NotebookError, NotebookResult
from nbmake.nb_run import NotebookRun

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# SAEHELPERS_EXECUTED moves the copies elsewhere (the plugin's own tests use it to leave .cache/executed alone).
EXECUTED = Path(os.environ.get("SAEHELPERS_EXECUTED") or ROOT / ".cache" / "executed")
SESSION = "SAEHELPERS_NBRUN_SESSION"  # set by the plugin at startup: which test session wrote a run
REUSE = "SAEHELPERS_REUSE_EXECUTED"
# Seconds per cell, unless --nbmake-timeout says otherwise: the longest cells (the first model conversion, 01's
# and 05's layer sweeps) take about a minute on an idle 2-core CPU, and several times that on a busy one.
TIMEOUT = 900
PACKAGES = ("torch", "transformers", "sae-lens", "saehelpers", "nbmake", "nbclient", "seaborn", "matplotlib")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in a kernel's traceback
MAX_VAR_BYTES = 20_000_000  # a variable pickled larger than this is left out of the dump

# Run in the kernel after the last cell (nbmake's `post_cell_execute`): pickle every global a claim
# could read (numbers, strings, tables, tensors, figures' data), skipping modules, functions, models
# and anything that does not pickle or is large. Names starting with "_" are the kernel's own.
DUMP = """
def _saehelpers_dump(path, limit):
    import pickle, types
    out = {}
    for k, v in list(globals().items()):
        if k.startswith("_") or k in ("In", "Out", "exit", "quit", "get_ipython"):
            continue
        if isinstance(v, (types.ModuleType, types.FunctionType, type)) or hasattr(v, "state_dict"):
            continue  # models and SAEs stay in the kernel
        if getattr(v, "nbytes", 0) > limit or hasattr(v, "save_pretrained"):
            continue  # large arrays, tokenizers
        try:
            b = pickle.dumps(v)
        except Exception:
            continue
        if len(b) <= limit:
            out[k] = b
    with open(path, "wb") as f:
        pickle.dump(out, f)
_saehelpers_dump(PATH, LIMIT)
del _saehelpers_dump
"""


class NotebookFailed(Exception):
    """Raised with nbmake's NotebookResult, so nbmake's item prints it as its own failures."""


def source_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _iso_seconds(a: str, b: str) -> float:
    return (
        datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))
    ).total_seconds()


def cell_seconds(nb) -> list[float]:
    """Seconds per cell from nbclient's timing metadata (one entry per cell; 0.0 for markdown and unrun cells)."""
    out = []
    for cell in nb.cells:
        t = cell.get("metadata", {}).get("execution", {})
        start, end = t.get("iopub.execute_input"), t.get("shell.execute_reply")
        out.append(round(_iso_seconds(start, end), 3) if start and end else 0.0)
    return out


def stderr_outputs(nb) -> list[tuple[int, str]]:
    """(cell index, text) for each output a cell wrote to stderr."""
    return [
        (i, out.get("text", "").strip())
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]


def _first_line(text: str) -> str:
    """The line of a stderr text worth a summary: a warning's "UserWarning: ..." line, else the first."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.search(r"\w+(Warning|Error): ", line)]
    return ((named or lines or [""])[0])[:200]


def _cell_trace(nb, i: int, what: str) -> str:
    return f"{'-' * 75}\ncell {i}:\n{''.join(nb.cells[i].source)}\n\n{what}"


def execute(
    path: Path,
    timeout: int = TIMEOUT,
    kernel: str | None = None,
    session: str | None = None,
    out: Path = EXECUTED,
):
    """Run `path` through nbmake in a fresh kernel; save the executed copy and the kernel's variables.

    Returns nbmake's NotebookResult; its `error` (naming the cell) is set for an error or for any
    stderr output. The copy is written only when the run passed, so a copy is always a clean run.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"No notebook at {path}: give a path such as notebooks/00_quickstart.ipynb.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    vars_path = out / f"{stem}.vars.pkl"
    for stale in (out / path.name, vars_path, out / f"{stem}.session"):
        stale.unlink(missing_ok=True)
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code:
        dump = DUMP.replace("PATH, LIMIT", f"{str(vars_path)!r}, {MAX_VAR_BYTES}")
        code[-1].metadata.setdefault("nbmake", {})["post_cell_execute"] = [dump]
    with tempfile.TemporaryDirectory(prefix="nbrun-") as tmp:
        # nbmake runs a file with its folder as the kernel's working directory: a copy of the lesson
        # that carries the dump in its metadata, in a folder of its own (the lessons read no relative path).
        copy = Path(tmp) / path.name
        nbformat.write(nb, copy)
        start = time.perf_counter()
        result = NotebookRun(copy, timeout, kernel=kernel).execute()
        seconds = time.perf_counter() - start
    nb = result.nb
    if code:
        last = [c for c in nb.cells if c.cell_type == "code"][-1]
        last.metadata.get("nbmake", {}).pop("post_cell_execute", None)
        if not last.metadata.get("nbmake"):
            last.metadata.pop("nbmake", None)
    if result.error is not None:
        i = result.error.failing_cell_index
        plain = ANSI.sub("", result.error.summary)
        result.error.summary = f"{path.name}, cell {i}: {plain}"
        result.error.trace = f"{result.error.summary}\n{result.error.trace}"
        vars_path.unlink(missing_ok=True)
        return result
    bad = stderr_outputs(nb)
    if bad:
        i, text = bad[0]
        more = f" (and {len(bad) - 1} more stderr outputs)" if len(bad) > 1 else ""
        summary = f"{path.name}, cell {i} wrote to stderr{more}: {_first_line(text)}"
        cells = "\n".join(_cell_trace(nb, j, f"stderr:\n{t}") for j, t in bad)
        result.error = NotebookError(summary=summary, trace=f"{summary}\n{cells}", failing_cell_index=i)
        vars_path.unlink(missing_ok=True)
        return result
    dumped = _load_vars(vars_path) if vars_path.exists() else {}
    nb.metadata["saehelpers_run"] = {
        "source_sha256": source_sha256(path),
        "preset": dumped.get("preset"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
        "cell_seconds": cell_seconds(nb),
        "versions": versions(),
    }
    nbformat.write(nb, out / path.name)
    if vars_path.exists():
        (out / f"{stem}.session").write_text(session or "")
    return result


def _load_vars(path: Path) -> dict:
    raw = pickle.loads(path.read_bytes())
    out = {}
    for k, b in raw.items():
        try:
            out[k] = pickle.loads(b)
        except Exception:  # a class this process cannot import: leave it out
            continue
    return out


@dataclass
class Run:
    """One lesson's executed run: the notebook with its outputs and the kernel's variables after the last cell."""

    name: str
    nb: nbformat.NotebookNode
    vars: dict = field(repr=False)

    def sentence(self, quote: str) -> int:
        """The index of the markdown (or comment) cell that holds `quote`; fails when the lesson no longer says it.

        A claim test calls this first, so it names the sentence it guards and breaks when the words change.
        """
        norm = " ".join(quote.split())
        for i, cell in enumerate(self.nb.cells):
            if norm in " ".join("".join(cell.source).split()):
                return i
        raise AssertionError(f"{self.name}: no cell says {quote!r}; update the claim test with the new words")

    def var(self, name: str):
        """A variable of the notebook's kernel after its last cell; fails when the notebook has none of that name."""
        if name not in self.vars:
            raise AssertionError(
                f"{self.name}: the kernel has no variable {name!r} after its last cell "
                f"(it has: {', '.join(sorted(self.vars))})"
            )
        return self.vars[name]

    def text(self, cell: int) -> str:
        """Everything cell `cell` printed or displayed as plain text."""
        parts = []
        for out in self.nb.cells[cell].get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
        return "".join(parts)

    def code_cell(self, needle: str) -> int:
        """The index of the first code cell whose source holds `needle`."""
        for i, cell in enumerate(self.nb.cells):
            if cell.cell_type == "code" and needle in "".join(cell.source):
                return i
        raise AssertionError(f"{self.name}: no code cell holds {needle!r}")


def resolve(name: str) -> Path:
    """notebooks/<name>.ipynb for a name such as "00_quickstart" or "00" (its number)."""
    hits = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if p.stem == name or p.stem[:2] == name]
    if len(hits) != 1:
        have = ", ".join(p.stem for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
        raise FileNotFoundError(f"No single lesson named {name!r} in notebooks/ (have: {have})")
    return hits[0]


_runs: dict[str, Run] = {}


def _fresh(path: Path) -> bool:
    """Whether .cache/executed holds a clean run of `path`'s current source from this session (or reusable)."""
    copy, marker = EXECUTED / path.name, EXECUTED / f"{path.stem}.session"
    if not (copy.exists() and marker.exists() and (EXECUTED / f"{path.stem}.vars.pkl").exists()):
        return False
    meta = nbformat.read(copy, as_version=4).metadata.get("saehelpers_run", {})
    if meta.get("source_sha256") != source_sha256(path):
        return False
    here = os.environ.get(SESSION)
    return (here is not None and marker.read_text() == here) or os.environ.get(REUSE) == "1"


def notebook(name: str) -> Run:
    """The executed run of lesson `name` on the mini preset: this session's nbmake run, else run it once now."""
    path = resolve(name)
    if path.name in _runs:
        return _runs[path.name]
    if not _fresh(path):
        result = with_mini(lambda: execute(path, session=os.environ.get(SESSION)))
        if result.error is not None:
            raise AssertionError(f"{result.error.summary}\n{result.error.trace}")
    run = Run(
        path.stem,
        nbformat.read(EXECUTED / path.name, as_version=4),
        _load_vars(EXECUTED / f"{path.stem}.vars.pkl"),
    )
    _runs[path.name] = run
    return run


def with_mini(fn):
    """Call fn with SAEHELPERS_PRESET=mini (the preset CI runs every lesson on), restoring the setting after."""
    old = os.environ.get("SAEHELPERS_PRESET")
    os.environ["SAEHELPERS_PRESET"] = "mini"
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("SAEHELPERS_PRESET", None)
        else:
            os.environ["SAEHELPERS_PRESET"] = old


def positive(value, what: str) -> float:
    """`value` as a float, failing when it is missing, not a number, or 0: the number a claim needs must exist."""
    assert value is not None, f"{what} is missing"
    v = float(value)
    assert v == v and v != 0, f"{what} is {v}: the claim needs a nonzero number"
    return v


__all__ = [
    "EXECUTED",
    "NotebookFailed",
    "NotebookResult",
    "Run",
    "execute",
    "notebook",
    "positive",
    "resolve",
]

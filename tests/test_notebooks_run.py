"""Every notebook runs top to bottom on the mini preset, as a learner would run it, and writes nothing to stderr.

A warning or a stray progress bar on stderr shows as a pink block in JupyterLab and makes a
learner doubt the lesson, so it fails the test like an error does. The executed copies are saved
under .cache/executed/ for reading; `python scripts/run_notebooks.py` runs the same thing by hand.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
runner = importlib.util.module_from_spec(spec)
sys.modules["run_notebooks"] = runner  # dataclasses look their module up there
spec.loader.exec_module(runner)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_clean(path, monkeypatch):
    monkeypatch.setenv("SAEHELPERS_PRESET", "mini")
    result = runner.run(path)
    assert not result.errors, f"{path.name} failed: {result.errors}"
    assert not result.stderr, f"{path.name} wrote to stderr: {result.stderr}"
    assert len(result.cell_seconds) == len(result.cell_peak_mb) > 3


def test_runner_reports_errors_and_stderr(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import warnings; warnings.warn('look at me')"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("print('never runs')"),
    ]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    result = runner.run(path, save=False)
    assert not result.ok
    assert len(result.stderr) == 1 and "look at me" in result.stderr[0]
    assert (
        len(result.errors) == 1
        and result.errors[0].startswith("cell 1:")
        and "ZeroDivisionError" in result.errors[0]
    )
    assert len(result.cell_seconds) == 2  # stops at the failing cell, as "run all" does
    assert result.peak_mb > 10


def test_runner_names_a_missing_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebooks/00_quickstart.ipynb"):
        runner.run(tmp_path / "nope.ipynb")

"""The nbmake plugin (../conftest.py, tests/claims.py), checked on tiny synthetic notebooks.

The lessons themselves run under `pytest --nbmake notebooks` (the README's test command), once each;
these tests check what that run promises: a notebook fails on an error and on anything written to
stderr, with the cell named; a clean run leaves its executed copy with `saehelpers_run` metadata and
the kernel's variables for the claim tests.
"""

import os
import subprocess
import sys
from pathlib import Path

import claims
import nbformat
import pytest

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out

ROOT = Path(__file__).resolve().parents[1]


def _notebook(folder: Path, name: str, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a synthetic lesson")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    path = folder / name
    nbformat.write(nb, path)
    return path


def test_a_clean_run_leaves_its_copy_metadata_and_variables(tmp_path):
    src = _notebook(
        tmp_path,
        "ok.ipynb",
        "import time, pandas as pd\npreset = 'mini'\ntime.sleep(0.3)",
        "table = pd.DataFrame({'ev': [0.5, 0.7]})\nprint(table.ev.sum())",
        "import os\nhere = os.getcwd()",
    )
    out = tmp_path / "executed"
    result = claims.execute(src, out=out, session="s1")
    assert result.error is None
    copy = nbformat.read(out / "ok.ipynb", as_version=4)
    meta = copy.metadata["saehelpers_run"]
    assert set(meta) == {"source_sha256", "preset", "date", "seconds", "cell_seconds", "versions"}
    assert meta["source_sha256"] == claims.source_sha256(src) and meta["preset"] == "mini"
    assert len(meta["cell_seconds"]) == len(copy.cells) == 4 and meta["cell_seconds"][0] == 0.0
    assert 0.3 <= meta["cell_seconds"][1] < meta["seconds"]
    assert meta["versions"]["nbmake"] and meta["versions"]["torch"]
    assert copy.cells[2].outputs[0]["text"].strip() == "1.2"
    assert "nbmake" not in copy.cells[-1].metadata  # the variable dump leaves no trace in the copy
    assert (out / "ok.session").read_text() == "s1"
    dumped = claims._load_vars(out / "ok.vars.pkl")
    assert list(dumped["table"].ev) == [0.5, 0.7] and "pd" not in dumped and "time" not in dumped


def test_an_error_names_its_cell_and_leaves_no_copy(tmp_path):
    src = _notebook(tmp_path, "err.ipynb", "x = 1", "1 / 0", "print('never runs')")
    out = tmp_path / "executed"
    (out).mkdir()
    (out / "err.ipynb").write_text("stale")
    result = claims.execute(src, out=out)
    assert result.error.failing_cell_index == 2
    assert result.error.summary == "err.ipynb, cell 2: ZeroDivisionError: division by zero"
    assert not (out / "err.ipynb").exists() and not (out / "err.vars.pkl").exists()


def test_stderr_fails_the_run_and_names_the_cell(tmp_path):
    src = _notebook(
        tmp_path,
        "warn.ipynb",
        "x = 1",
        "import warnings\nwarnings.warn('look at me')",
        "import sys\nprint('a stray bar', file=sys.stderr)",
    )
    result = claims.execute(src, out=tmp_path / "executed")
    assert result.error.failing_cell_index == 2
    assert result.error.summary.startswith("warn.ipynb, cell 2 wrote to stderr (and 1 more stderr outputs):")
    assert "UserWarning: look at me" in result.error.summary
    assert "cell 3:" in result.error.trace and "a stray bar" in result.error.trace
    assert not (tmp_path / "executed" / "warn.ipynb").exists()


def test_a_missing_notebook_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebooks/00_quickstart.ipynb"):
        claims.execute(tmp_path / "nope.ipynb", out=tmp_path)
    with pytest.raises(FileNotFoundError, match="00_quickstart"):
        claims.resolve("99_nope")


def test_run_helpers_name_missing_sentences_and_variables():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("EV rises with\nevery group.")]
    run = claims.Run("x", nb, {"ev": 0.5})
    assert run.sentence("EV rises with every group") == 0
    with pytest.raises(AssertionError, match="no cell says 'EV falls'"):
        run.sentence("EV falls")
    with pytest.raises(AssertionError, match="no variable 'loss'.*it has: ev"):
        run.var("loss")
    assert claims.positive(0.5, "ev") == 0.5
    for bad in (0, None, float("nan")):
        with pytest.raises(AssertionError, match="ev is"):
            claims.positive(bad, "ev")


def test_pytest_nbmake_runs_through_the_plugin(tmp_path):
    """`pytest --nbmake` on a folder in the repository: the stderr failure is nbmake's, naming the cell."""
    folder = ROOT / ".cache" / "plugin-test"
    folder.mkdir(parents=True, exist_ok=True)
    good = _notebook(folder, "good.ipynb", "preset = 'mini'\nvalue = 2 + 2")
    bad = _notebook(folder, "noisy.ipynb", "import sys\nsys.stderr.write('oops\\n')")
    env = {**os.environ, "SAEHELPERS_EXECUTED": str(tmp_path), "SAEHELPERS_NBRUN_SESSION": "sub"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-p", "no:cacheprovider", "-q", str(good), str(bad)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "noisy.ipynb, cell 1 wrote to stderr: oops" in done.stdout
    meta = nbformat.read(tmp_path / "good.ipynb", as_version=4).metadata["saehelpers_run"]
    assert meta["preset"] == "mini" and (tmp_path / "good.session").read_text() == "sub"
    assert claims._load_vars(tmp_path / "good.vars.pkl")["value"] == 4

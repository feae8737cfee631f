"""The setup cell's Colab path, for real: a fresh venv that already holds torch installs the project from git
the way the cell does, keeps its torch, and runs notebook 00 on the mini preset.

This is the slowest test (a fresh venv and ~100 packages from pip's cache: about 2-3 minutes);
`pytest -m "not slow"` leaves it out.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "scripts" / "setup_cell.py")
setup_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_cell)

# Run the setup cell as Colab would: google.colab is imported there before any cell runs.
COLAB = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_colab_install_keeps_torch_and_runs_notebook_00(tmp_path):
    import torch

    clone = tmp_path / "clone"
    # Not shallow: pip clones it again with --filter.
    _run(["git", "clone", "-q", f"file://{ROOT}", str(clone)])
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "SAEHELPERS_PRESET": "mini"}
    env.pop("VIRTUAL_ENV", None)
    # A current pip, as Colab has (pip 23.2 refuses a `git+file:///` requirement), and "already holds
    # torch" as Colab does: the same version as this environment's.
    _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], env=env)
    _run([py, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}"], env=env)
    before = json.loads(_run([py, "-m", "pip", "list", "--format", "json"], env=env))
    cell = setup_cell.SETUP_CELL.replace(f"git+{setup_cell.REPO}", f"git+file://{clone}")
    assert cell != setup_cell.SETUP_CELL
    # Run outside the repository, where saehelpers would import as is.
    out = _run([py, "-c", COLAB + cell], env=env, cwd=tmp_path)
    assert "saehelpers: preset 'mini'" in out and "mini: model gemma-3-270m" in out
    after = {
        p["name"].lower(): p["version"]
        for p in json.loads(_run([py, "-m", "pip", "list", "--format", "json"], env=env))
    }
    torch_before = next(p["version"] for p in before if p["name"].lower() == "torch")
    assert after["torch"] == torch_before, "the setup cell's install replaced torch"
    assert "saehelpers" in after
    # Notebook 00 end to end in that venv's own kernel.
    _run([py, "-m", "pip", "install", "-q", "nbclient", "ipykernel"], env=env)
    out = _run(
        [py, str(ROOT / "scripts" / "run_notebooks.py"), str(ROOT / "notebooks" / "00_quickstart.ipynb")],
        env=env,
    )
    assert "00_quickstart.ipynb" in out and "ok" in out


def test_outside_colab_a_missing_package_says_how_to_install(tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = str(venv / "bin" / "python")
    done = subprocess.run([py, "-c", setup_cell.SETUP_CELL], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert "ModuleNotFoundError: saehelpers is not installed" in done.stderr
    assert setup_cell.LOCAL_INSTALL in done.stderr and "README" in done.stderr


def test_setup_cell_reads_the_projects_url():
    import tomllib

    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert f"git+{url}" in setup_cell.SETUP_CELL
    install = setup_cell.SETUP_CELL.split('"install", "-q", ')[1].split("], check=True")[0]
    assert install == f'"saehelpers[mini] @ git+{url}"'  # the project only, never torch
    assert '"google.colab" not in sys.modules' in setup_cell.SETUP_CELL

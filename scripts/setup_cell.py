"""The setup cell every notebook starts with, kept in one place.

`python scripts/setup_cell.py` writes it into every notebook in notebooks/ (as the second cell,
after the title); tests/test_notebooks.py checks that each notebook carries exactly this text.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# Where Colab installs the project from: read from pyproject.toml's [project.urls], the one place it is written.
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
# The local set-up line; the README's set-up section uses the same one.
LOCAL_INSTALL = "pip install -e '.[mini,lab]'"

SETUP_CELL = f"""\
# Setup: the same in every notebook. On Colab it installs this project and keeps Colab's own
# torch; elsewhere, install it first (README: Set up).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("saehelpers") is None:
    if "google.colab" not in sys.modules:
        raise ModuleNotFoundError(
            "saehelpers is not installed for this kernel. In a clone of the repository run "
            "`{LOCAL_INSTALL}` (after torch, see the README), then restart the kernel."
        )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "saehelpers[mini] @ git+{REPO}"], check=True)
    importlib.invalidate_caches()  # let this running kernel see the package pip just installed

import saehelpers

preset = saehelpers.choose_preset().name  # prints which preset and why; set SAEHELPERS_PRESET to choose
release = saehelpers.get_release(preset)
budget = saehelpers.get_budget(release)  # token counts and layers for this preset (SAEHELPERS_SMOKE=1: tiny)
print(release.summary())
if budget.smoke:
    print("smoke size: every cell runs on tiny inputs; the numbers are not meant to be read")"""

# The paragraph that ends every notebook's title cell, next to the setup cell.
COLAB_NOTE = (
    "**On Colab:** for the real release choose *Runtime → Change runtime type → T4 GPU*, accept the Gemma licence "
    "at https://huggingface.co/google/gemma-3-1b-pt, and add your Hugging Face token as a secret named `HF_TOKEN` "
    "(the key icon in the left bar; let this notebook use it). Without a token the notebook runs the offline "
    "`mini` preset."
)

# Notebooks that load no language model: no GPU, licence or token to ask for.
NO_MODEL = {"06_toy_hierarchy.ipynb"}
COLAB_NOTE_NO_MODEL = (
    "**On Colab:** this notebook loads no language model, so the default CPU runtime is enough and no Hugging Face "
    "token is needed."
)


def set_setup_cell(path: Path) -> bool:
    """Make the notebook's second cell the setup cell and end its title with COLAB_NOTE; True if the file changed."""
    nb = json.loads(path.read_text())
    cell = {"cell_type": "code", "execution_count": None, "id": "setup", "metadata": {}, "outputs": [],
            "source": SETUP_CELL.splitlines(keepends=True)}  # fmt: skip
    cells = nb["cells"]
    before = json.dumps(cells)
    if (
        len(cells) > 1
        and cells[1]["cell_type"] == "code"
        and "".join(cells[1]["source"]).startswith("# Setup:")
    ):
        cells[1] = cell
    else:
        cells.insert(1, cell)
    title = "".join(cells[0]["source"]).split("\n\n**On Colab:**")[0].rstrip("\n")
    note = COLAB_NOTE_NO_MODEL if path.name in NO_MODEL else COLAB_NOTE
    cells[0]["source"] = (title + "\n\n" + note).splitlines(keepends=True)
    if json.dumps(cells) == before:
        return False
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


if __name__ == "__main__":
    changed = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if set_setup_cell(p)]
    print("updated:", ", ".join(changed) or "nothing")
    sys.exit(0)

"""The setup cell every notebook starts with, kept in one place.

`python scripts/setup_cell.py` writes it into every notebook in notebooks/ (as the second cell,
after the title); tests/test_notebooks.py checks that each notebook carries exactly this text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# Where Colab installs the project from; the only place the repository's address is written.
REPO = "https://github.com/saehelpers/gemma-3-matryoshka-tutorials"

SETUP_CELL = f'''\
# Setup: the same in every notebook. On Colab it installs the project first (about 2 minutes).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("saehelpers") is None:
    if "google.colab" not in sys.modules:
        raise RuntimeError("saehelpers is not installed: run `pip install -e '.[mini]'` in the repository first.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "saehelpers[mini] @ git+{REPO}"], check=True)

import saehelpers

preset = saehelpers.choose_preset().name  # prints which preset and why; set SAEHELPERS_PRESET to choose
release = saehelpers.get_release(preset)
print(release.summary())'''


def set_setup_cell(path: Path) -> bool:
    """Make the notebook's second cell the setup cell; True if the file changed."""
    nb = json.loads(path.read_text())
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": SETUP_CELL.splitlines(keepends=True)}  # fmt: skip
    cells = nb["cells"]
    if len(cells) > 1 and cells[1]["cell_type"] == "code" and "".join(cells[1]["source"]).startswith("# Setup:"):
        if cells[1]["source"] == cell["source"]:
            return False
        cells[1] = cell
    else:
        cells.insert(1, cell)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


if __name__ == "__main__":
    changed = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if set_setup_cell(p)]
    print("updated:", ", ".join(changed) or "nothing")
    sys.exit(0)

"""Every notebook reads as one book: the same opening, the same setup cell, the same closing."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "scripts" / "setup_cell.py")
setup_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_cell)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no numbered notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opening_and_closing(path):
    cells = json.loads(path.read_text())["cells"]
    title = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and title.startswith(f"# {path.name[:2]} ·")
    assert "You will be able to" in title and "**Time:**" in title and "**Runs on:**" in title
    assert "".join(cells[1]["source"]) == setup_cell.SETUP_CELL, "run `python scripts/setup_cell.py`"
    # A notebook that loads no model does not send the learner to a GPU runtime and the Gemma licence.
    note = setup_cell.COLAB_NOTE_NO_MODEL if path.name in setup_cell.NO_MODEL else setup_cell.COLAB_NOTE
    assert title.endswith("\n\n" + note), "run `python scripts/setup_cell.py`"
    uses_model = any("load_model(" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert uses_model == (path.name not in setup_cell.NO_MODEL)
    closing = "".join(cells[-1]["source"])
    assert "## What you learned" in closing and "**Next:**" in closing
    assert any("**Try this:**" in "".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_valid_nbformat_with_cell_ids(path):
    """nbformat 4.5 wants a unique id on every cell; without them every reader warns (and will refuse)."""
    import nbformat

    nb = nbformat.reads(path.read_text(), as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    ids = [cell.get("id") for cell in nb.cells]
    assert None not in ids and len(set(ids)) == len(ids)


def test_readme_generated_parts_are_in_step():
    """The notebook map and the mini release's table: run `python scripts/readme_tables.py` after changing them."""
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    readme = (ROOT / "README.md").read_text()
    meta = json.loads((ROOT / "saehelpers" / "data" / "mini" / "release.json").read_text())
    assert tables.render(readme, meta) == readme, "run `python scripts/readme_tables.py`"
    for path in NOTEBOOKS:
        assert f"(notebooks/{path.name})" in readme

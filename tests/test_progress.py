"""Progress bars: plain tqdm outside a kernel; inside one, plain-text outputs that survive saving."""

import io
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from tqdm.std import tqdm as std_tqdm

from saehelpers.progress import _DisplayedBar, progress_bar

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_outside_a_kernel_it_is_plain_tqdm_on_the_given_file():
    out = io.StringIO()
    bar = progress_bar(range(4), desc="layer 3 SAE", file=out)
    assert type(bar) is std_tqdm
    assert list(bar) == [0, 1, 2, 3]
    assert "layer 3 SAE: 100%" in out.getvalue() and "4/4" in out.getvalue()


def test_outside_a_kernel_manual_use_and_disable():
    out = io.StringIO()
    with progress_bar(total=3, desc="tokens", file=out) as bar:
        bar.update(2)
        bar.set_postfix(loss=0.25)
    assert bar.n == 2 and "2/3" in out.getvalue() and "loss=0.25" in out.getvalue()
    quiet = io.StringIO()
    assert list(progress_bar(range(3), file=quiet, disable=True)) == [0, 1, 2]
    assert quiet.getvalue() == ""


@pytest.fixture
def drawn(monkeypatch):
    """The texts a `_DisplayedBar` draws, through a stand-in for IPython's display handle."""
    import IPython.display

    texts = []

    class Handle:
        def update(self, data, raw):
            texts.append(data["text/plain"])

    def display(data, raw, display_id):
        texts.append(data["text/plain"])
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    return texts


def test_displayed_bar_redraws_at_most_every_mininterval(drawn):
    n = 20_000
    for _ in _DisplayedBar(range(n), desc="x", mininterval=60):
        pass
    assert len(drawn) == 2  # the first draw, then close: the 60 s interval never passes
    assert drawn[-1].startswith("x: 100%") and f"{n}/{n}" in drawn[-1]


def test_displayed_bar_without_leave_ends_empty(drawn):
    bar = _DisplayedBar(total=2, desc="y", leave=False)
    bar.update(2)  # within mininterval of the first draw: not redrawn
    bar.close()
    assert len(drawn) == 2 and "0/2" in drawn[0] and drawn[1] == ""


CELLS = [
    "from saehelpers.progress import progress_bar\nfor _ in progress_bar(range(5), desc='x'):\n    pass",
    "with progress_bar(total=4, desc='z') as bar:\n    bar.update(4)\n    bar.set_postfix(loss=0.5)",
    "bar = progress_bar(total=3, desc='gone', leave=False)\nbar.update(3)\nbar.close()",
    "for _ in progress_bar(range(3), desc='off', disable=True):\n    pass",
]


def test_in_a_kernel_the_bars_are_plain_text_outputs():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(
        nb, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [cell.outputs for cell in nb.cells]
    for out in sum(outputs, []):
        assert out.output_type == "display_data", out  # no stream: nothing on stderr or stdout
        assert WIDGET not in out.data and set(out.data) == {"text/plain"}
    texts = [[out.data["text/plain"] for out in cell_outputs] for cell_outputs in outputs]
    assert len(texts[0]) == 1 and texts[0][0].startswith("x: 100%") and "5/5" in texts[0][0]
    assert len(texts[1]) == 1 and "4/4" in texts[1][0] and "loss=0.5" in texts[1][0]
    assert texts[2] == [""]  # leave=False empties its output
    assert texts[3] == []

"""The notebooks as a learner sees them: JupyterLab in Chromium, run with Run > Run All Cells.

nbclient (test_notebooks_run.py) runs every cell but renders no output; this test looks at the page:
no error or stderr output, every plot an image, the explorers drawn as ipywidgets 8 widgets that answer
a choice, a hostile text shown as text, and the static view (SAEHELPERS_WIDGETS=0) carrying the same
facts as the widgets. One jupyter server (mini preset, offline, on copies of the notebooks) and one
headless Chromium serve the whole module. Screenshots go to screenshots/ (ignored by git).

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`; never `playwright install`):
without it these tests are skipped, except under CI=1 (set by .ci/run), where that is a failure.
The failure paths of the plumbing (tests/browser.py) are tested first, without a browser.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as B  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
NOTEBOOKS = ["00_quickstart.ipynb", "02_exploring_features.ipynb", "05_matryoshka_prefixes.ipynb"]
STATIC = "02_exploring_features_static.ipynb"  # notebook 02 again, in a kernel with SAEHELPERS_WIDGETS=0
HOSTILE = "<script>alert(1)</script> &amp;"
PLOTS = re.compile(r"plt\.(subplots|figure|show)\(|\.plot_histogram\(|draw_tree\(|tree_explorer\(")
VIEWPORT = {"width": 1280, "height": 2000}  # tall: element screenshots need the element on screen
RUN_TIMEOUT = 420  # seconds for one Run All (notebook 05 takes ~80 s on 2 idle cores)


# ---------------------------------------------------------------- bad input: fast, no browser


def test_missing_notebook_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        B.start_lab(tmp_path / "nope", timeout=5)


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebooks/99_nope.ipynb"):
        B.copy_notebooks([ROOT / "notebooks" / "99_nope.ipynb"], tmp_path)
    lab = B.Lab(proc=None, port=1, token="t", root=tmp_path, workdir=tmp_path, stopped=True)
    with pytest.raises(FileNotFoundError, match="99_nope.ipynb"):
        B.open_notebook(None, lab, "99_nope.ipynb")  # checked before the browser is touched


def test_port_in_use_is_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"Port {port} on 127.0.0.1 is already in use"):
            B.start_lab(tmp_path, port=port, workdir=tmp_path / "lab", timeout=5)


def _pids_from(path: Path, n: int, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= n:
            return [int(x) for x in lines[:n]]
        time.sleep(0.1)
    raise AssertionError(f"the fake server did not write {n} pids to {path}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_startup_timeout_names_the_log_and_leaves_nothing_running(tmp_path):
    pids = tmp_path / "pids"
    # A "server" that never answers, with a child in a session of its own, as jupyter starts kernels.
    fake = (
        "import os, subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{kid.pid}}')\n"
        "print('pretending to start', flush=True)\n"
        "time.sleep(600)\n"
    )
    start = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        B.start_lab(tmp_path, workdir=tmp_path / "lab", timeout=3, command=[sys.executable, "-c", fake])
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert (
        "did not answer" in msg and str(tmp_path / "lab" / "lab.log") in msg and "pretending to start" in msg
    )
    server, kid = _pids_from(pids, 2)
    deadline = time.monotonic() + 10
    while not (_gone(server) and _gone(kid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(server) and _gone(kid), "start_lab left a process running after its timeout"


def test_server_that_exits_shows_its_log(tmp_path):
    fake = "print('cannot bind: address in use'); raise SystemExit(3)"
    with pytest.raises(RuntimeError, match=r"(?s)exited \(code 3\).*lab\.log.*cannot bind"):
        B.start_lab(tmp_path, workdir=tmp_path / "lab", timeout=30, command=[sys.executable, "-c", fake])


def test_missing_chromium_says_how_to_install():
    hint = B.install_hint()
    assert "apt-get install -y chromium" in hint and B.CHROMIUM in hint


# ---------------------------------------------------------------- fixtures: one server, one browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    B.need_browser("the browser test")
    tmp = tmp_path_factory.mktemp("browser")
    workdir = tmp / "lab"
    kernel = B.add_kernel(workdir, "python3-static", "Python 3 (widgets off)", {"SAEHELPERS_WIDGETS": "0"})
    nbdir = B.copy_notebooks(
        [ROOT / "notebooks" / n for n in NOTEBOOKS], tmp / "notebooks", kernels={STATIC: kernel}
    )
    env = {"SAEHELPERS_PRESET": "mini", "HF_HUB_OFFLINE": "1"}
    server = B.start_lab(nbdir, env=env, timeout=120, workdir=workdir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        chromium = B.launch_browser(pw)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        pw.stop()


@pytest.fixture
def page(request, lab, browser):
    """A fresh tab; any alert/confirm dialog is recorded (page.dialogs) and dismissed; the tab is
    screenshotted and closed, and the server's kernels shut down, however the test ends."""
    SHOTS.mkdir(exist_ok=True)
    tab = browser.new_page(viewport=VIEWPORT)
    tab.set_default_timeout(60_000)
    tab.dialogs = []

    def on_dialog(dialog):
        tab.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    try:
        yield tab
    finally:
        try:
            tab.screenshot(path=SHOTS / f"{request.node.name}.png", full_page=True)
        except Exception as e:  # a crashed tab must not hide the test's own failure
            print(f"no screenshot: {e}")
        tab.close()
        lab.shutdown_kernels()


# ---------------------------------------------------------------- what the learner sees


def test_token_highlights_wrap_at_the_page_width():
    """A long highlighted text wraps between tokens, never inside one, and never runs off the side."""
    B.need_browser("the browser test")
    from playwright.sync_api import sync_playwright

    from saehelpers.display import tokens_html

    tokens = ["def", " compute", "_total", "(", "items", "):", "↵", "    return", " sum", "(", "x", ")"] * 12
    acts = [float(i % 7) for i in range(len(tokens))]
    with sync_playwright() as pw:
        chromium = B.launch_browser(pw)
        try:
            tab = chromium.new_page(viewport={"width": 300, "height": 800})
            tab.set_content(f'<div id="box" style="width: 300px">{tokens_html(tokens, acts)}</div>')
            box = tab.eval_on_selector("#box", "e => [e.scrollWidth, e.clientWidth, e.offsetHeight]")
            rects = tab.eval_on_selector_all("#box span span", "s => s.map(e => e.getClientRects().length)")
        finally:
            chromium.close()
    scroll_width, width, height = box
    assert scroll_width <= width == 300, box  # nothing overflows the box
    assert height > 5 * 19, box  # many lines (line-height 1.9 x 10 px at least)
    assert rects == [1] * len(tokens)  # each token sits on one line: breaks fall between tokens


def run_notebook(page, lab, name: str) -> list[dict]:
    B.open_notebook(page, lab, name)
    seconds = B.run_all(page, timeout=RUN_TIMEOUT)
    print(f"{name}: Run All took {seconds:.1f} s")
    return B.cells(page)


def assert_clean(page, lab, name: str, cells: list[dict]) -> None:
    """Every code cell ran; no error or stderr output; no widget error or raw repr; every plot an image."""
    sources = ["".join(c["source"]) for c in json.loads((lab.root / name).read_text())["cells"]]
    assert len(cells) == len(sources), f"{name}: {len(cells)} cells drawn, {len(sources)} in the file"
    not_run = [
        i for i, c in enumerate(cells) if c["type"] == "code" and not re.fullmatch(r"\[\d+\]:", c["prompt"])
    ]
    assert not not_run, (
        f"{name}: cells {not_run} did not run (prompts {[cells[i]['prompt'] for i in not_run]})"
    )
    errors = page.locator(B.NOTEBOOK + " " + B.STDERR)
    assert errors.count() == 0, f"{name}: error or stderr output: {errors.all_inner_texts()}"
    for i, (c, src) in enumerate(zip(cells, sources)):
        where = f"{name}, cell {i}"
        assert "Error displaying widget" not in c["text"], f"{where}: {c['text'][:500]}"
        assert not re.search(r"^(VBox|HBox|HTML|Output|Dropdown|Text)\(", c["text"], re.M), (
            f"{where}: raw widget repr"
        )
        assert not re.search(r"<Figure size [^>]* Axes>", c["text"]), f"{where}: a figure shown as text"
        assert c["loaded"] == c["images"], f"{where}: {c['images'] - c['loaded']} images did not load"
        if c["type"] == "code" and PLOTS.search(src):
            assert c["images"] > 0, f"{where} draws a plot, but its output holds no image: {c['text'][:300]}"


def explorer_cell(lab, name: str, call: str) -> int:
    return B.find_cell(lab.root, name, call)


def widget(page, index: int):
    """The ipywidgets 8 view in a cell's output, asserted to be one."""
    out = B.cell(page, index).locator(".jp-OutputArea-output > .jupyter-widgets.widget-vbox")
    assert out.count() == 1, (
        f"cell {index} shows no ipywidgets VBox; its output: {B.cell(page, index).inner_text()[:500]}"
    )
    return out


CARD_FACTS = """(root) => {
    const title = root.querySelector('h4');
    const head = [...root.querySelectorAll('p')].find(p => p.textContent.startsWith('Top activations'));
    const table = head && head.nextElementSibling;
    const rows = table && table.tagName === 'TABLE' ? [...table.querySelectorAll('tr')] : [];
    return {
        title: title ? title.textContent : null,
        top: rows.map(r => r.innerText.replace(/\\s+/g, ' ').trim()),
        boxed: rows.map(r => [...r.querySelectorAll('span[style*="outline"]')].map(s => s.textContent).join('')),
    };
}"""

FACTS = {}  # the widget card of notebook 02, compared with its static view


@pytest.mark.heavy
def test_00_quickstart(page, lab):
    cells = run_notebook(page, lab, "00_quickstart.ipynb")
    assert_clean(page, lab, "00_quickstart.ipynb", cells)
    assert sum(c["images"] for c in cells) >= 2
    assert not page.dialogs


@pytest.mark.heavy
def test_02_feature_explorer(page, lab):
    name = "02_exploring_features.ipynb"
    cells = run_notebook(page, lab, name)
    assert_clean(page, lab, name, cells)
    i = explorer_cell(lab, name, "explorer(")
    view = widget(page, i)
    assert view.locator(".widget-dropdown select").count() == 1, "no layer dropdown"
    feature_box = view.locator(".widget-text input[type=number]")
    text_box = view.locator(".widget-text input[type=text]")
    card = view.locator(".widget-output")
    first = int(feature_box.input_value())
    before = card.evaluate(CARD_FACTS)
    assert before["title"] and f"feature {first} ·" in before["title"], before
    assert before["top"], f"the card of feature {first} shows no top activations"
    FACTS.update(before, feature=first)
    view.screenshot(path=SHOTS / "feature_card.png")

    # Choose another feature: one the notebook printed a card for (so it fires).
    shown = [int(f) for c in cells[:i] for f in re.findall(r"feature (\d+) ·", c["text"])]
    other = next((f for f in shown if f != first), None)
    assert other is not None, f"no other feature printed before the explorer (saw {shown})"
    feature_box.fill(str(other))
    feature_box.press("Enter")
    card.locator("h4", has_text=f"feature {other} ·").wait_for(timeout=90_000)
    after = card.evaluate(CARD_FACTS)
    assert after["top"] and after["top"] != before["top"], f"feature {other}: examples did not change"
    view.screenshot(path=SHOTS / "feature_card_other.png")

    # A hostile text through the text box: shown literally, never run or parsed as markup.
    text_box.fill(HOSTILE)
    text_box.press("Enter")
    page.wait_for_function(  # the highlighted text is drawn first, then the card under it
        "([el, t, f]) => el.innerText.includes(t) && [...el.querySelectorAll('h4')].some(h => h.textContent.includes(f))",
        arg=[card.element_handle(), HOSTILE, f"feature {other} ·"],
        timeout=90_000,
    )
    scripts = page.evaluate(
        "() => [...document.querySelectorAll('script')].filter(s => s.textContent.includes('alert(1)')).length"
    )
    assert scripts == 0, "the typed <script> became a script element"
    assert card.locator("script").count() == 0
    assert not page.dialogs, f"a dialog opened: {page.dialogs}"
    view.screenshot(path=SHOTS / "feature_card_hostile.png")


@pytest.mark.heavy
def test_02_static_view_has_the_same_facts(page, lab):
    if (
        not FACTS
    ):  # it compares with the widget card: run it with test_02_feature_explorer, which failed or was left out
        pytest.skip("test_02_feature_explorer did not record the widget card to compare with")
    cells = run_notebook(page, lab, STATIC)
    assert_clean(page, lab, STATIC, cells)
    i = explorer_cell(lab, STATIC, "explorer(")
    out = B.cell(page, i).locator(".jp-OutputArea")
    assert out.locator(".jupyter-widgets").count() == 0, "widgets drawn although SAEHELPERS_WIDGETS=0"
    html = out.locator('.jp-OutputArea-output[data-mime-type="text/html"]')
    assert html.count() == 1, f"expected one static HTML output, got: {cells[i]['mimes']}"
    assert "Static view (widgets off" in html.inner_text() and "SAEHELPERS_WIDGETS=0" in html.inner_text()
    static = html.evaluate(CARD_FACTS)
    assert static["title"] == FACTS["title"], (static["title"], FACTS["title"])
    assert static["top"] == FACTS["top"] and static["boxed"] == FACTS["boxed"], "top examples differ"
    assert f"On your text, feature {FACTS['feature']}:" in html.inner_text()
    html.screenshot(path=SHOTS / "feature_card_static.png")
    assert not page.dialogs


@pytest.mark.heavy
def test_05_tree_explorer(page, lab):
    name = "05_matryoshka_prefixes.ipynb"
    cells = run_notebook(page, lab, name)
    assert_clean(page, lab, name, cells)
    i = explorer_cell(lab, name, "tree_explorer(")
    view = widget(page, i)
    select = view.locator(".widget-dropdown select")
    out = view.locator(".widget-output")
    options = select.locator("option").all_inner_texts()
    assert len(options) >= 2, f"the tree explorer offers {options}: nothing to choose"
    assert out.locator("img").count() == 1, "the tree is not drawn as an image"
    before = out.inner_text().strip()
    assert before.startswith(f"{select.input_value()} ("), before[:200]
    view.screenshot(path=SHOTS / "matryoshka_tree.png")

    other = next(o for o in options if o != select.input_value())
    select.select_option(other)
    page.wait_for_function(
        "([el, p]) => el.innerText.trim().startsWith(p + ' (')",
        arg=[out.element_handle(), other],
        timeout=60_000,
    )
    page.wait_for_function(
        "el => [...el.querySelectorAll('img')].some(i => i.complete && i.naturalWidth > 0)",
        arg=out.element_handle(),
    )
    assert out.inner_text().strip() != before
    assert out.locator("img").count() == 1
    view.screenshot(path=SHOTS / "matryoshka_tree_other.png")
    assert not page.dialogs

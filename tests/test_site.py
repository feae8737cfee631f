"""The lessons' website (scripts/build_site.py): built from this run's executed notebooks, read in Chromium.

The unit tests (fast lane) check the pieces: which executed copies are reused, widgets turned into their
static HTML, links rewritten for the site, the published address in one place. The heavy tests build the
site (reusing the copies the nbmake run just saved, so nothing executes twice) unless this pytest run
already built it, serve it on 127.0.0.1 and open every page in the headless Chromium that
tests/test_browser.py drives: no console error, no failed or outside request, plots as loaded images,
math typeset by the site's own MathJax, no Traceback, every link inside the site resolves.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import re
import sys
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
import browser as B  # noqa: E402
import build_site as S  # noqa: E402

STARTED = time.time()  # a build stamped after this was made by this pytest run
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
PLOTS = re.compile(r"plt\.(subplots|figure|show)\(|sns\.|\.plot_histogram\(|draw_tree\(|tree_explorer\(")


# ---------------------------------------------------------------- fast: the pieces, no build


def _nb(tmp_path, name="00_x.ipynb", text="# 00 · X\n\nIntro."):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(text), nbformat.v4.new_code_cell("1 + 1")]
    )
    path = tmp_path / "notebooks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _copy(path, folder, **run):
    nb = nbformat.read(path, as_version=4)
    nb.metadata["saehelpers_run"] = {"source_sha256": S.source_sha256(path), "preset": "mini", **run}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / path.name)


def test_reuses_only_a_copy_of_the_current_notebook_on_mini(tmp_path):
    path, folder = _nb(tmp_path), tmp_path / "executed"
    assert S.reusable(path, folder / path.name) is None  # no copy
    _copy(path, folder)
    got = S.reusable(path, folder / path.name)
    assert (
        got is not None
        and got.metadata.saehelpers_run.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    _copy(path, folder, preset="gemma-3-1b")
    assert S.reusable(path, folder / path.name) is None  # another preset's outputs
    _copy(path, folder)
    path.write_text(path.read_text().replace("Intro.", "Intro, edited."))
    assert S.reusable(path, folder / path.name) is None  # the notebook changed since it ran
    (folder / path.name).write_text("{not json")
    assert S.reusable(path, folder / path.name) is None  # a half-written copy


def test_reuse_only_names_the_missing_copy_and_the_fix(tmp_path):
    path = _nb(tmp_path)
    with pytest.raises(SystemExit, match=r"00_x\.ipynb.*pytest --nbmake notebooks"):
        S.executed(path, reuse_only=True, folder=tmp_path / "executed")


def _widget_nb(state):
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output(
        "display_data",
        data={
            S.WIDGET_VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0},
            "text/plain": "card <as text>",
        },
    )
    nb.cells = [nbformat.v4.new_code_cell("explorer(...)", outputs=[out])]
    if state is not None:
        nb.metadata["widgets"] = {S.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_widgets_become_their_saved_static_html():
    png = base64.b64encode(b"\x89PNG fake").decode()
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_dd", "IPY_MODEL_out"]}},
        "dd": {"model_name": "DropdownModel", "state": {"description": "layer", "index": 1, "_options_labels": ["2", "6"]}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {"text/html": "<b>Layer 6 · feature 3</b>", "text/plain": "x"}},
            {"output_type": "display_data", "data": {"image/png": png}},
            {"output_type": "stream", "name": "stdout", "text": "a < b\n"},
        ]}},
    }  # fmt: skip
    nb = _widget_nb(state)
    assert S.static_widgets(nb) == 1
    data = nb.cells[0].outputs[0].data
    assert S.WIDGET_VIEW not in data and "widgets" not in nb.metadata
    view = data["text/html"]
    assert "<b>Layer 6 · feature 3</b>" in view and f"data:image/png;base64,{png}" in view
    assert "<pre>a &lt; b\n</pre>" in view  # text escaped
    assert "layer: 6" in view  # the dropdown's label, not its index
    assert view.index("layer: 6") < view.index("Layer 6 · feature 3")  # children in order


def test_widget_without_saved_state_shows_its_text_view():
    nb = _widget_nb(None)
    assert S.static_widgets(nb) == 1
    assert (
        nb.cells[0].outputs[0].data["text/html"]
        == f'<div class="widget-static"><p><em>{S.WIDGET_NOTE}</em></p><pre>card &lt;as text&gt;</pre></div>'
    )


def test_links_point_inside_the_site_or_to_the_repository():
    lesson = S.lessons()[0].name
    text = (
        f"[a]({lesson}) [b](../saehelpers/widgets.py#L10) [c](https://x.org/a) [d](#top) [e](../WORKSHOP.md)"
    )
    got = S.site_links(text, "notebooks/")
    assert got == (
        f"[a]({lesson}) [b]({URLS['Repository']}/blob/main/saehelpers/widgets.py#L10) [c](https://x.org/a) "
        "[d](#top) [e](workshop.md)"
    )
    assert S.site_links(f"[x](notebooks/{lesson})") == f"[x]({lesson})"  # from the README or WORKSHOP.md


def test_cost_page_is_read_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    body = S.readme_section(readme, "### What the real release needs")
    rows = [line for line in body.splitlines() if line.startswith("| 0")]
    assert len(rows) >= 7 and all(p.stem in body for p in S.lessons() if p.stem < "07")
    assert "## " not in body  # stops at the next section
    with pytest.raises(SystemExit, match="README.md has no line '### Nope'"):
        S.readme_section(readme, "### Nope")


def test_published_address_is_written_once_and_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- site-command -->", 1)[1].split("<!-- /site-command -->", 1)[0]
    assert "python scripts/build_site.py" in block
    assert URLS["Documentation"] in readme
    assert URLS["Documentation"].startswith("https://") and URLS["Documentation"].endswith("/")
    conf = (ROOT / "site" / "conf.py").read_text()
    assert "github.io" not in conf and 'URLS["Documentation"]' in conf  # read from pyproject.toml, not copied


# ---------------------------------------------------------------- heavy: the built site in Chromium


@pytest.fixture(scope="module")
def site():
    """The built site: this run's build when there is one, else built now (reusing executed copies)."""
    index = S.OUT / "index.html"
    stamp = S.BUILD / "site.json"
    fresh = stamp.exists() and stamp.stat().st_mtime >= STARTED and index.exists()
    if fresh:
        built = json.loads(stamp.read_text())
        fresh = built.get("sources") == {p.name: S.source_sha256(p) for p in S.lessons()}
    if not fresh:
        # CI runs `pytest --nbmake notebooks tests`: the copies are there, and a lesson that failed under
        # nbmake is named here rather than run a second time
        assert S.main(["--reuse-only"] if os.environ.get("CI") else []) == 0
    return S.OUT


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def chromium(server):
    B.need_browser("the site's browser test")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = B.launch_browser(pw)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


def _open(chromium, base: str, name: str) -> tuple:
    """Load one page; block and record every request that would leave the site; wait for MathJax."""
    page = chromium.new_page()
    problems, outside = [], []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "requestfailed",
        lambda r: problems.append(f"failed: {r.url} ({r.failure})") if r.url.startswith(base) else None,
    )
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def route(r):
        if r.request.url.startswith((base, "data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(base + name, wait_until="load")
    if page.evaluate("!!window.MathJax"):
        page.wait_for_function("window.MathJax.startup && window.MathJax.startup.promise", timeout=30000)
        page.evaluate("window.MathJax.startup.promise")
    page.wait_for_load_state("networkidle")
    return page, problems, outside


def _local_links(page, base: str, name: str, site: Path) -> list[str]:
    """Links inside the site whose target file is missing (or whose #anchor is not on the target page)."""
    broken = []
    for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
        url = urljoin(base + name, href)
        if not url.startswith(base):
            continue  # Colab, Binder, GitHub: links out, never loaded by the page itself
        path, anchor = urldefrag(url)
        rel = unquote(urlparse(path).path).removeprefix(urlparse(base).path) or "index.html"
        target = site / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href} -> {rel} (missing)")
        elif anchor and target.suffix == ".html" and f'id="{anchor}"' not in target.read_text():
            broken.append(f"{href} -> #{anchor} (no such anchor in {rel})")
    return broken


def _pages() -> list[str]:
    return ["index.html", "cost.html", "workshop.html"] + [f"{p.stem}.html" for p in S.lessons()]


@pytest.mark.heavy
def test_index_lists_every_lesson_with_launch_links(site, server, chromium):
    page, problems, outside = _open(chromium, server, "index.html")
    try:
        assert not problems and not outside, problems + outside
        hrefs = page.eval_on_selector_all("article a[href]", "els => els.map(e => e.getAttribute('href'))")
        for p in S.lessons():
            assert f"{p.stem}.html" in hrefs, f"the introduction does not link {p.stem}'s page"
            assert any(
                h.startswith("https://colab.research.google.com/") and h.endswith(f"notebooks/{p.name}")
                for h in hrefs
            )
            assert any(
                h.startswith("https://mybinder.org/") and h.endswith(f"notebooks/{p.name}") for h in hrefs
            )
        assert "cost.html" in hrefs and "workshop.html" in hrefs
        assert not _local_links(page, server, "index.html", site)
    finally:
        page.close()


@pytest.mark.heavy
@pytest.mark.parametrize("name", [p.name for p in S.lessons()])
def test_lesson_page_shows_the_mini_run(name, site, server, chromium):
    path = ROOT / "notebooks" / name
    nb = S.reusable(path, S.EXECUTED / name)
    assert nb is not None, (
        f"the site was built from an executed copy of {name} that no longer matches the notebook"
    )
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    widgets = sum(S.WIDGET_VIEW in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    source = "".join(c.source for c in nb.cells if c.cell_type == "code")
    page, problems, outside = _open(chromium, server, f"{path.stem}.html")
    try:
        assert not problems, problems
        assert not outside, f"requests that would leave the site: {outside}"
        text = page.inner_text("article")
        assert "Traceback" not in text
        run = nb.metadata.saehelpers_run
        assert "The mini run" in text and str(run["date"])[:10] in text
        # every plot of the run, shown as a loaded image (widgets' own plots come with their static view)
        shown = page.eval_on_selector_all(
            ".cell_output img", "els => els.filter(e => e.complete && e.naturalWidth > 0).length"
        )
        assert shown >= pngs, f"{shown} images loaded on the page, the run drew {pngs}"
        if PLOTS.search(source):
            assert pngs > 0 and shown > 0, "the lesson draws plots, but its page shows no image"
        # math: every formula typeset by MathJax (served from the site), none failed
        maths = page.eval_on_selector_all(".math", "els => els.length")
        typeset = page.eval_on_selector_all(".math mjx-container", "els => els.length")
        assert maths > 0 and typeset == maths, f"{typeset} of {maths} formulas typeset"
        assert page.eval_on_selector_all("mjx-merror", "els => els.length") == 0
        # explorers as their static view, with the card's facts
        statics = page.eval_on_selector_all(
            ".widget-static",
            "els => els.map(e => e.innerText.replace(e.querySelector('em').innerText, '').trim().length)",
        )
        assert len(statics) == widgets and all(n > 0 for n in statics), statics
        # launch and download links, and the learner version
        hrefs = page.eval_on_selector_all("article a[href]", "els => els.map(e => e.getAttribute('href'))")
        assert any(h.startswith("https://colab.research.google.com/") for h in hrefs)
        assert any(h.startswith("https://mybinder.org/") for h in hrefs)
        downloads = [h for h in hrefs if h.endswith(f"/{name}") and "_downloads/" in h]
        assert len(downloads) == (2 if (ROOT / "exercises" / name).exists() else 1), hrefs
        assert not _local_links(page, server, f"{path.stem}.html", site)
    finally:
        page.close()


@pytest.mark.heavy
def test_cost_and_workshop_pages(site, server, chromium):
    readme_rows = [
        line.split("|")[1].strip()
        for line in S.readme_section(
            (ROOT / "README.md").read_text(), "### What the real release needs"
        ).splitlines()
        if line.startswith("| 0")
    ]
    page, problems, outside = _open(chromium, server, "cost.html")
    try:
        assert not problems and not outside, problems + outside
        cells = page.eval_on_selector_all("table td", "els => els.map(e => e.innerText.trim())")
        assert readme_rows and all(r in cells for r in readme_rows)
        assert not _local_links(page, server, "cost.html", site)
    finally:
        page.close()
    title = (ROOT / "WORKSHOP.md").read_text().splitlines()[0].lstrip("# ").strip()
    page, problems, outside = _open(chromium, server, "workshop.html")
    try:
        assert not problems and not outside, problems + outside
        assert page.inner_text("article h1").strip().rstrip("#").strip() == title
        assert not _local_links(page, server, "workshop.html", site)
    finally:
        page.close()


@pytest.mark.heavy
def test_no_page_loads_anything_from_outside(site):
    """Scripts, styles, images and fonts all come from the site: nothing refers to an http(s) asset."""
    asset = re.compile(
        r"""(?:<script[^>]+src|<link[^>]+href|<img[^>]+src|<source[^>]+src)=["'](?:https?:)?//"""
    )
    css_url = re.compile(r"url\(\s*[\"']?(?:https?:)?//")
    bad = []
    for f in site.rglob("*"):
        if f.suffix == ".html":
            for tag in re.findall(r"<(?:script|link|img|source)\b[^>]*>", f.read_text()):
                if asset.search(tag) and 'rel="canonical"' not in tag:
                    bad.append(f"{f.relative_to(site)}: {tag[:120]}")
        elif f.suffix == ".css":
            bad += [
                f"{f.relative_to(site)}: url(//...)" for _ in css_url.findall(f.read_text(errors="replace"))
            ]
    assert not bad, bad
    assert len(list(site.glob("[0-9][0-9]_*.html"))) == len(S.lessons())

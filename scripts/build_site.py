"""Build the lessons' website into _build/html/: every lesson with the outputs of a real run on `mini`.

    python scripts/build_site.py            # reuse this run's executed copies, execute what is missing
    python scripts/build_site.py --reuse-only   # fail instead of executing (what CI expects after nbmake)

Outputs come from `.cache/executed/<notebook>.ipynb`, the copy the test run (`pytest --nbmake notebooks`)
saves, when its metadata `saehelpers_run.source_sha256` matches the notebook as it is now and its preset
is `mini`; otherwise the notebook is executed here (mini preset, offline) and that copy written, with the
same metadata. The pages are generated into _build/site_src/ (a title, the run's date, versions and time,
launch and download links on top of each lesson; the introduction, the real release's cost page from
README.md and the workshop guide from WORKSHOP.md), then Sphinx renders them with the configuration in
site/conf.py (myst-nb, sphinx-book-theme, MathJax served from the site: no page needs the network).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import html
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_tables import _links, notebook_row  # noqa: E402
from setup_cell import REPO  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
EXERCISES = ROOT / "exercises"
# Where the test run leaves executed copies; SAEHELPERS_EXECUTED moves them, as in tests/claims.py.
EXECUTED = Path(os.environ.get("SAEHELPERS_EXECUTED") or ROOT / ".cache" / "executed")
CONF = ROOT / "site"
BUILD = ROOT / "_build"
SRC = BUILD / "site_src"
OUT = BUILD / "html"
PRESET = "mini"
CELL_TIMEOUT = 600  # seconds per cell; the longest, a first model conversion, takes about a minute
VERSIONS = ["torch", "transformers", "sae-lens", "saehelpers", "ipywidgets", "matplotlib", "seaborn"]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = "An interactive explorer in Jupyter; here, what it showed when the lesson ran:"


def lessons(root: Path = ROOT) -> list[Path]:
    """Every numbered lesson, in order: a new `notebooks/NN_*.ipynb` gets its page with no edit here."""
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def source_sha256(path: Path) -> str:
    """What an executed copy records of the notebook it ran: the sha256 of the committed file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def reusable(path: Path, copy_path: Path) -> nbformat.NotebookNode | None:
    """The executed copy of `path` when it ran this very notebook on the mini preset, else None."""
    if not copy_path.is_file():
        return None
    try:
        nb = nbformat.read(copy_path, as_version=4)
    except Exception:  # a half-written copy: execute again
        return None
    run = nb.metadata.get("saehelpers_run") or {}
    if run.get("source_sha256") != source_sha256(path) or run.get("preset", PRESET) != PRESET:
        return None
    return nb


def cell_seconds(nb) -> list[float]:
    """Per-cell wall time from nbclient's execution timestamps (0 for cells that did not run)."""
    out = []
    for cell in nb.cells:
        t = cell.get("metadata", {}).get("execution", {})
        a, b = t.get("iopub.execute_input"), t.get("shell.execute_reply")
        if a and b:
            out.append(
                round((dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds(), 2)
            )
        else:
            out.append(0.0)
    return out


def execute(path: Path, copy_path: Path) -> nbformat.NotebookNode:
    """Run the notebook top to bottom on mini, offline, in a fresh kernel; save the copy with its run record."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    env = {"SAEHELPERS_PRESET": PRESET, "HF_HUB_OFFLINE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()  # fmt: skip
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        raise SystemExit(f"{path.name} failed while building the site, so it has no page:\n{e}") from None
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    for i, cell in enumerate(nb.cells):  # the test run fails on these; the page would show them in pink
        if any(o.get("name") == "stderr" for o in cell.get("outputs", [])):
            print(f"warning: {path.name} cell {i} wrote to stderr; its page shows it", file=sys.stderr)
    nb.metadata["saehelpers_run"] = {
        "source_sha256": source_sha256(path),
        "preset": PRESET,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
        "cell_seconds": cell_seconds(nb),
        "versions": versions(),
    }
    copy_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy_path.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(copy_path)
    return nb


def executed(
    path: Path, reuse_only: bool = False, folder: Path = EXECUTED
) -> tuple[nbformat.NotebookNode, bool]:
    """The notebook with its mini outputs and whether they were reused (True) or made now (False)."""
    nb = reusable(path, folder / path.name)
    if nb is not None:
        return nb, True
    if reuse_only:
        raise SystemExit(
            f"No executed copy of {path.name} from this notebook's current text in {folder}: run "
            f"`pytest --nbmake notebooks` first, or build without --reuse-only to execute it here."
        )
    return execute(path, folder / path.name), False


# ---------------------------------------------------------------- widgets: their static HTML view


def _widget_html(model_id: str, state: dict, seen: set) -> str:
    """A widget as static HTML, from the state nbclient saved: Output widgets' outputs, HTML and labels, boxes' children."""
    if model_id in seen or model_id not in state:
        return ""
    seen.add(model_id)
    model = state[model_id]
    name, s = model.get("model_name", ""), model.get("state", {})
    if name == "OutputModel":
        return "".join(_output_html(o) for o in s.get("outputs", []))
    if name in ("HTMLModel", "HTMLMathModel"):
        return s.get("value", "")
    if "children" in s:
        kids = [_widget_html(c.removeprefix("IPY_MODEL_"), state, seen) for c in s["children"]]
        return "<div>" + "".join(kids) + "</div>"
    labels, index = s.get("_options_labels"), s.get("index")
    if labels is not None and isinstance(index, int) and 0 <= index < len(labels):
        value = labels[index]  # a selection widget saves its index, not its value
    elif "value" in s and name != "ButtonModel":
        value = s["value"]
    else:
        return ""
    if value in ("", None):
        return ""
    label = s.get("description") or ""
    return f"<p><code>{html.escape(str(label))}: {html.escape(str(value))}</code></p>"


def _output_html(out: dict) -> str:
    if out.get("output_type") == "stream":
        return f"<pre>{html.escape(''.join(out.get('text', '')))}</pre>"
    data = out.get("data", {})
    if "text/html" in data:
        return "".join(data["text/html"])
    if "image/png" in data:
        return f'<img src="data:image/png;base64,{"".join(data["image/png"]).strip()}"/>'
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def static_widgets(nb) -> int:
    """Replace each widget output by its static HTML view (so no widget script is loaded); the count replaced."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            view = _widget_html(data.pop(WIDGET_VIEW).get("model_id", ""), state, set())
            if not view.strip():  # no saved state: the plain-text view every explorer puts next to its widget
                view = f"<pre>{html.escape(''.join(data.get('text/plain', '')))}</pre>"
            data["text/html"] = f'<div class="widget-static"><p><em>{WIDGET_NOTE}</em></p>{view}</div>'
            n += 1
    return n


# ---------------------------------------------------------------- pages


def github(path: str) -> str:
    return f"{REPO}/blob/main/{path}"


def site_links(text: str, base: str = "") -> str:
    """Markdown links as the site needs them: a lesson to its page, any other repository file to GitHub."""
    pages = {p.name for p in lessons()}

    def fix(m):
        target = m.group(2)
        if re.match(r"[a-z]+:|#", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(base, path)).replace(os.sep, "/")
        if path.startswith("notebooks/") and path.removeprefix("notebooks/") in pages:
            new = path.removeprefix("notebooks/")  # the lesson's own page (MyST resolves .ipynb documents)
        elif path == "WORKSHOP.md":
            new = "workshop.md"
        else:
            new = github(path)
        return f"{m.group(1)}({new}{'#' + anchor if anchor else ''})"

    return re.sub(r"(\]|\]: ?)\(([^)\s]+)\)", fix, text)


def readme_section(readme: str, heading: str) -> str:
    """The README's section under `heading` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = readme.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise SystemExit(
            f"README.md has no line {heading!r}; the site's cost page is read from it."
        ) from None
    body = []
    for line in lines[start + 1 :]:
        m = re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body).strip()


def _human(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"


def run_note(path: Path, run: dict) -> str:
    """The block on top of a lesson page: which run these outputs are, and where to run it yourself."""
    vers = run.get("versions") or {}
    vers = ", ".join(f"{k} {v}" for k, v in vers.items() if v) if isinstance(vers, dict) else str(vers)
    cells = [float(s) for s in run.get("cell_seconds") or []]
    slow = f" (the slowest cell: {_human(max(cells))})" if cells else ""
    date = str(run.get("date", "an unrecorded date"))[:10]
    rel, ex = f"notebooks/{path.name}", f"exercises/{path.name}"
    learner = (
        f"The learner version, with the exercises to write: {_links(ex)} · {{download}}`download it <{ex}>`."
        if (path.parents[1] / ex).exists()
        else ""
    )
    return f"""```{{admonition}} The mini run
:class: tip

These are the outputs of a real run on the `{run.get("preset", PRESET)}` preset (Gemma-3-270m and the
project's small Matryoshka SAEs, on a CPU), made on {date} in {_human(float(run.get("seconds", 0)))}{slow},
with {vers}. On the real release (Gemma-3-1b) the numbers and the features differ.

Run it yourself: {_links(rel)} · {{download}}`download the notebook <{rel}>`.
{learner}
```"""


def lesson_page(path: Path, nb) -> nbformat.NotebookNode:
    """The executed notebook as a page: widgets as static HTML, links for the site, the run note after the title."""
    nb = copy.deepcopy(nb)
    static_widgets(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = site_links(cell.source, "notebooks/")
    note = nbformat.v4.new_markdown_cell(run_note(path, nb.metadata.get("saehelpers_run", {})))
    first = nb.cells[0]
    if first.cell_type == "markdown" and first.source.lstrip().startswith("# "):
        # the note goes right under the title line, above the lesson's own introduction
        title, _, rest = first.source.lstrip().partition("\n")
        nb.cells[0:1] = [
            nbformat.v4.new_markdown_cell(title),
            note,
            nbformat.v4.new_markdown_cell(rest.strip()),
        ]
    else:
        nb.cells.insert(0, note)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"  # split cells need ids of their own
    return nb


def index_page(paths: list[Path], readme: str) -> str:
    title = readme.splitlines()[0].lstrip("# ").strip()
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    rows = []
    for p in paths:
        row = notebook_row(p)
        row = row.replace(f"[{p.stem}](notebooks/{p.name})", f"[{p.stem}]({p.name})", 1)
        row = row.replace(
            f"[exercises](exercises/{p.name})", f"{{download}}`exercises <exercises/{p.name}>`", 1
        )
        rows.append(row)
    head = "| lesson | what you learn | time | open | with exercises to write |\n|---|---|---|---|---|"
    first = f"notebooks/{paths[0].name}" if paths else "notebooks"
    toc = "\n".join(p.stem for p in paths)
    return f"""# {title}

{site_links(intro)}

Each lesson page below shows a real run on the offline `mini` preset, with its plots, tables, feature cards
and generated texts: read it here, then run it yourself.

**Launch:** start with the first lesson on {_links(first)}, or run everything locally
([set up]({github("README.md")}#set-up-locally-two-commands)). The real release needs a GPU and a Hugging Face
token: see [what the real release needs](cost.md).

## The lessons

{head}
{chr(10).join(rows)}

Teaching a workshop: [the workshop guide](workshop.md).

```{{toctree}}
:maxdepth: 1
:caption: Lessons
:hidden:

{toc}
```

```{{toctree}}
:maxdepth: 1
:caption: More
:hidden:

cost
workshop
```
"""


def cost_page(readme: str) -> str:
    body = readme_section(readme, "### What the real release needs")
    return f"""# What the real release needs

The lessons on this site ran on the `mini` preset. On the real release (Gemma-3-1b and its 25 SAEs of
32,768 latents) they need more time, memory and downloads, measured below. (From the README.)

{site_links(body)}
"""


def workshop_page(text: str) -> str:
    return site_links(text)


def write_sources(runs: dict[Path, nbformat.NotebookNode], src: Path = SRC) -> None:
    """The Sphinx source folder: pages, and the notebooks to download (stripped, as committed)."""
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "exercises").mkdir()
    readme = (ROOT / "README.md").read_text()
    paths = list(runs)
    for p, nb in runs.items():
        nbformat.write(lesson_page(p, nb), src / p.name)
        shutil.copy2(p, src / "notebooks" / p.name)
        if (EXERCISES / p.name).exists():
            shutil.copy2(EXERCISES / p.name, src / "exercises" / p.name)
    (src / "index.md").write_text(index_page(paths, readme))
    (src / "cost.md").write_text(cost_page(readme))
    (src / "workshop.md").write_text(workshop_page((ROOT / "WORKSHOP.md").read_text()))


def sphinx(src: Path = SRC, out: Path = OUT) -> None:
    from sphinx.cmd.build import build_main

    if out.exists():
        shutil.rmtree(out)
    # -W: a broken link, a missing image or an unknown output is an error, not a page that silently lacks it
    code = build_main(["-b", "html", "-q", "-W", "--keep-going", "-c", str(CONF), "-d", str(BUILD / "doctrees"),
                       str(src), str(out)])  # fmt: skip
    if code:
        raise SystemExit(f"sphinx-build failed (exit {code}); its messages are above.")


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reuse-only", action="store_true", help="fail when a lesson has no matching executed copy"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    runs, made = {}, []
    for p in lessons():
        t = time.perf_counter()
        runs[p], reused = executed(p, args.reuse_only)
        print(
            f"{p.name:<32} {'reused' if reused else f'executed in {time.perf_counter() - t:.0f} s'}",
            flush=True,
        )
        made += [] if reused else [p.name]
    t = time.perf_counter()
    write_sources(runs)
    sphinx()
    render_s, total_s = time.perf_counter() - t, time.perf_counter() - start
    stamp = {"sources": {p.name: source_sha256(p) for p in runs}, "executed_here": made,
             "render_seconds": round(render_s, 1), "seconds": round(total_s, 1), "size_mb": round(size_mb(OUT), 1)}  # fmt: skip
    # tests/test_site.py reuses a build that this stamp says was made from the current notebooks
    (BUILD / "site.json").write_text(json.dumps(stamp, indent=1) + "\n")
    print(
        f"site: {OUT / 'index.html'} ({len(runs)} lessons, {stamp['size_mb']} MB); rendered in {render_s:.0f} s, "
        f"{total_s:.0f} s in all" + (f" ({len(made)} executed here)" if made else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

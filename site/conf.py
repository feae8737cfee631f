"""Sphinx configuration of the lessons' website (built by `python scripts/build_site.py`, never by hand).

The pages are generated into _build/site_src/ from the executed notebooks, README.md and WORKSHOP.md;
this file says how they are rendered: myst-nb reads the notebooks without executing them (their outputs
come from the mini run), sphinx-book-theme lays them out, and MathJax is served from the site itself
(copied from the `sphinx-mathjax-offline` package) so that no page needs the network.
"""

import importlib.util
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]

project = "Matryoshka SAEs for Gemma-3-1b"
author = "saehelpers contributors"
copyright = "saehelpers contributors (MIT)"
extensions = ["myst_nb"]
exclude_patterns = ["notebooks/**", "exercises/**"]  # the downloadable copies, not pages
master_doc = "index"
html_baseurl = URLS["Documentation"]

nb_execution_mode = "off"  # outputs come from the mini run that scripts/build_site.py reuses or makes
nb_ipywidgets_js = {}  # widgets are replaced by their static HTML view; myst-nb's default loads a CDN
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "repository_url": URLS["Repository"],
    "use_repository_button": True,
    "use_download_button": False,  # each lesson page has its own download link to the notebook
    "show_toc_level": 2,
}
html_context = {"default_mode": "light"}  # the theme logs a console error when no mode is set
html_show_sourcelink = False
html_copy_source = False

# MathJax from this site, not a CDN: the pieces a page loads (the TeX + CHTML bundle, its fonts, the
# TeX extensions it may autoload and the menu's lazy parts) out of the 24 MB the package ships.
mathjax_path = "mathjax/tex-chtml.js"
MATHJAX_PARTS = ["tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y"]


def mathjax_source() -> Path:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        sys.exit(
            "MathJax is missing: pip install sphinx-mathjax-offline (it is in the project's `dev` extra)."
        )
    return Path(spec.origin).parent / "static" / "mathjax"


def copy_mathjax(app, exc):
    if exc is not None:
        return
    src, dest = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dest / part, dirs_exist_ok=True)
        else:
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dest / part)


def drop_source_maps(app, exc):
    """The theme's .map files (3.4 MB of the site) serve only a browser's developer tools."""
    if exc is None:
        for f in (Path(app.outdir) / "_static").rglob("*.map"):
            f.unlink()


def setup(app):
    mathjax_source()  # fail before the build, not after it
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", drop_source_maps)

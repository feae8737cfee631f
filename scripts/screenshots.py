"""The README's pictures, taken in JupyterLab in Chromium as the browser test does (tests/browser.py).

Runs notebooks 02, 03 and 05 on the mini preset, offline, on copies, and writes docs/img/feature_card.png
(02's feature explorer), steering_sweep.png (03's coefficient sweep plot) and matryoshka_tree.png
(05's tree explorer), each at most 200 KB (palette PNG, shrunk with Pillow if needed).
Needs /usr/bin/chromium (`apt-get install -y chromium`). About 3-4 minutes on 2 idle cores.

    python scripts/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import browser as B  # noqa: E402

MAX_BYTES = 200 * 1024
VIEWPORT = {"width": 1000, "height": 2000}


def shrink(path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Rewrite `path` as a 128-colour palette PNG, scaled down in 10% steps until it fits; returns its size."""
    im = Image.open(path).convert("RGB")
    scale = 1.0
    while True:
        w, h = round(im.width * scale), round(im.height * scale)
        small = im if scale == 1.0 else im.resize((w, h), Image.LANCZOS)
        small.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        size = path.stat().st_size
        if size <= max_bytes or scale < 0.3:
            return size
        scale *= 0.9


def take(out: Path) -> list[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="saehelpers-shots-"))
    names = ["02_exploring_features.ipynb", "03_steering.ipynb", "05_matryoshka_prefixes.ipynb"]
    nbdir = B.copy_notebooks([ROOT / "notebooks" / n for n in names], tmp / "notebooks")
    lab = B.start_lab(nbdir, env={"SAEHELPERS_PRESET": "mini", "HF_HUB_OFFLINE": "1"}, workdir=tmp / "lab")
    written = []
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = B.launch_browser(pw)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(60_000)

                B.open_notebook(page, lab, names[0])
                print(f"{names[0]}: {B.run_all(page):.0f} s", flush=True)
                view = B.cell(page, B.find_cell(nbdir, names[0], "explorer(")).locator(".widget-vbox").first
                top_table = view.locator("p", has_text="Top activations").locator(
                    "xpath=following-sibling::table[1]"
                )
                written.append(B.shot(page, view, out / "feature_card.png", bottom=top_table, width=0))
                lab.shutdown_kernels()

                B.open_notebook(page, lab, names[1])
                print(f"{names[1]}: {B.run_all(page):.0f} s", flush=True)
                plot = (
                    B.cell(page, B.find_cell(nbdir, names[1], "REPEAT", "plt.subplots(")).locator("img").first
                )
                written.append(B.shot(page, plot, out / "steering_sweep.png", pad=0))
                lab.shutdown_kernels()

                B.open_notebook(page, lab, names[2])
                print(f"{names[2]}: {B.run_all(page):.0f} s", flush=True)
                view = (
                    B.cell(page, B.find_cell(nbdir, names[2], "tree_explorer(")).locator(".widget-vbox").first
                )
                written.append(
                    B.shot(page, view, out / "matryoshka_tree.png", bottom=view.locator("img").first)
                )
                lab.shutdown_kernels()
            finally:
                browser.close()
    finally:
        lab.stop()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    if B.chromium_missing():
        print(B.install_hint(), file=sys.stderr)
        return 2
    for path in take(args.out):
        size = shrink(path)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {Image.open(path).size}, "
              f"{size / 1024:.0f} KB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

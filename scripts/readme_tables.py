"""Write README.md's generated parts: the mini release's table (from saehelpers/data/mini/release.json)
and the notebook map (from each notebook's title and time line, with Colab and Binder links to the
lesson and to its exercise version in exercises/).

Run after `scripts/build_mini_release.py` or after adding a notebook; tests check the README is in step.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- mini-table -->", "<!-- /mini-table -->"
NB_START, NB_END = "<!-- notebooks -->", "<!-- /notebooks -->"
sys.path.insert(0, str(ROOT / "scripts"))
from setup_cell import REPO  # noqa: E402

from saehelpers.release import hook_name  # noqa: E402

GH = REPO.removeprefix("https://github.com/")


def mini_table(meta: dict) -> str:
    lines = [
        f"Gemma-3-270m, {len(meta['layers'])} SAEs, width {meta['d_sae']}, k = {meta['k']}, "
        f"Matryoshka prefixes {', '.join(map(str, meta['matryoshka_widths']))}; "
        f"trained on {meta['tokens_trained']:,} tokens of the mini corpus "
        f"(`scripts/build_mini_release.py`, {meta['timings']['train_s'] / 60:.0f} minutes of training on 2 CPU cores). "
        "Measured on held-out text, BOS excluded: L0, explained variance (about the mean), the share of "
        "latents that never fire, and the increase in next-token loss with the SAE spliced in (nats per token).",
        "",
        "| layer | SAE id | width | L0 | explained variance | dead latents | loss increase |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in meta["layers"]:
        m = meta["metrics"][str(layer)]
        lines.append(
            f"| {layer} | {hook_name(layer)} | {meta['d_sae']} | {m['l0_mean']:.1f} | "
            f"{m['explained_variance']:.4f} | {m['dead_fraction']:.1%} | {m['delta_loss']:.2f} |"
        )
    floors = meta.get("floors")
    if floors:
        f = floors["floors"]
        lines += [
            "",
            f"Floors (issue 19): explained variance at least {f['explained_variance']} on every layer but the last "
            f"and {f['explained_variance_last']} on the last, L0 within {f['l0_rel_to_k']:.0%} of k, dead latents at "
            f"most {f['dead_fraction']:.0%}, loss increase at most {f['delta_loss']} nat on every layer but the first. "
            + (
                "All met."
                if floors["met"]
                else f"Missed: {'; '.join(floors['misses'])} (`tests/test_mini_release.py` says why)."
            ),
        ]
    return "\n".join(lines)


def _between(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def notebook_row(path: Path) -> str:
    first = json.loads(path.read_text())["cells"][0]["source"]
    first = "".join(first) if isinstance(first, list) else first
    title = first.splitlines()[0].lstrip("# ").split("·", 1)[-1].strip()
    time = re.search(r"\*\*Time:\*\* ([^.]+)\.", first)
    rel, ex = f"notebooks/{path.name}", f"exercises/{path.name}"
    exercises = f"[exercises]({ex}): {_links(ex)}" if (path.parents[1] / ex).exists() else "-"
    return (
        f"| [{path.stem}]({rel}) | {title} | {time.group(1) if time else ''} | {_links(rel)} | {exercises} |"
    )


def _links(rel: str) -> str:
    colab = f"https://colab.research.google.com/github/{GH}/blob/main/{rel}"
    binder = f"https://mybinder.org/v2/gh/{GH}/main?labpath={rel}"
    return f"[Colab]({colab}) · [Binder]({binder})"


def notebook_map(root: Path = ROOT) -> str:
    lines = [
        "| notebook | what you learn | time | open | with exercises to write |",
        "|---|---|---|---|---|",
    ]
    lines += [notebook_row(p) for p in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    return "\n".join(lines)


def render(readme: str, meta: dict) -> str:
    return _between(_between(readme, START, END, mini_table(meta)), NB_START, NB_END, notebook_map())


if __name__ == "__main__":
    meta = json.loads((ROOT / "saehelpers" / "data" / "mini" / "release.json").read_text())
    path = ROOT / "README.md"
    new = render(path.read_text(), meta)
    changed = new != path.read_text()
    path.write_text(new)
    print("README.md tables", "updated" if changed else "already up to date")
    sys.exit(0)

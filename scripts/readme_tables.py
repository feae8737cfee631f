"""Write the mini release's table into README.md from saehelpers/data/mini/release.json.

Run after `scripts/build_mini_release.py`; tests/test_mini_release.py checks the README is in step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- mini-table -->", "<!-- /mini-table -->"


def mini_table(meta: dict) -> str:
    lines = [
        f"Gemma-3-270m, {len(meta['layers'])} SAEs, width {meta['d_sae']}, k = {meta['k']}, "
        f"Matryoshka prefixes {', '.join(map(str, meta['matryoshka_widths']))}; "
        f"trained on {meta['tokens_trained']:,} tokens of the mini corpus. "
        "L0 and explained variance (about the mean) measured on held-out text, BOS excluded.",
        "",
        "| layer | SAE id | width | L0 | explained variance |",
        "|---|---|---|---|---|",
    ]
    for layer in meta["layers"]:
        m = meta["metrics"][str(layer)]
        lines.append(
            f"| {layer} | blocks.{layer}.hook_resid_post | {meta['d_sae']} | {m['l0_mean']:.1f} | "
            f"{m['explained_variance']:.4f} |"
        )
    return "\n".join(lines)


def render(readme: str, meta: dict) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{mini_table(meta)}\n{END}{tail}"


if __name__ == "__main__":
    meta = json.loads((ROOT / "saehelpers" / "data" / "mini" / "release.json").read_text())
    path = ROOT / "README.md"
    new = render(path.read_text(), meta)
    changed = new != path.read_text()
    path.write_text(new)
    print("README.md mini table", "updated" if changed else "already up to date")
    sys.exit(0)

"""How much work each notebook does, per preset: token counts, batch sizes, new tokens, layers to sweep.

One table, so no notebook branches on the preset. The real release's numbers are sized for a free
Colab T4 (the README's cost table says what each notebook needs); the mini preset's for a laptop CPU
or Binder. $SAEHELPERS_SMOKE=1 picks the smoke size: the same cells with the smallest numbers that
still run every line, and three layers in the sweeps. It is for checking the code path (CI on the
real release's shapes); numbers at that size are not meant to be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .release import MINI, REAL, as_release

SMOKE_ENV = "SAEHELPERS_SMOKE"


@dataclass(frozen=True)
class Budget:
    sweep_batches: int  # 01: held-out batches per layer in the sweep
    sweep_batch_size: int
    sweep_seq_len: int
    stats_tokens: int  # 02, 05: tokens behind the feature statistics (cards, explorer, trees)
    edit_tokens: int  # 03, 04: tokens behind the statistics of the steered or ablated layer
    new_tokens: int  # 03: new tokens generated per prompt
    prefix_tokens: int  # 05: tokens per layer for the prefixes' explained variance
    loss_batches: int  # 05: batches of 4 x 64 tokens for each prefix's loss
    letter_words: int = (
        40  # 07: words per letter in the first-letter task (probe, k-sparse probes, absorption)
    )
    sweep_layers: tuple[int, ...] = ()  # 01, 03, 05: the layers to sweep; () means all of the release's
    smoke: bool = False


BUDGETS = {
    MINI: Budget(2, 4, 64, stats_tokens=4096, edit_tokens=2048, new_tokens=12, prefix_tokens=4096, loss_batches=1, letter_words=32),
    REAL: Budget(8, 4, 256, stats_tokens=65536, edit_tokens=8192, new_tokens=40, prefix_tokens=32768, loss_batches=8, letter_words=200),
}  # fmt: skip
SMOKE = Budget(1, 2, 32, stats_tokens=256, edit_tokens=256, new_tokens=4, prefix_tokens=256, loss_batches=1, letter_words=3, smoke=True)  # fmt: skip


def smoke() -> bool:
    """Whether $SAEHELPERS_SMOKE asks for the smoke size ("1"); any other value but unset or "0" is an error."""
    value = os.environ.get(SMOKE_ENV, "0").strip()
    if value not in ("0", "1", ""):
        raise ValueError(
            f"{SMOKE_ENV}={value!r}: set it to 1 for the smoke size, or 0 / unset for the full size."
        )
    return value == "1"


def get_budget(release) -> Budget:
    """The budget for `release` (a Release or a preset name), with its layers to sweep filled in."""
    rel = as_release(release)
    if not smoke():
        return replace(BUDGETS[rel.name], sweep_layers=rel.layers)
    first, middle, last = rel.layers[0], rel.layers[len(rel.layers) // 2], rel.layers[-1]
    return replace(SMOKE, sweep_layers=tuple(sorted({first, middle, last})))


__all__ = ["BUDGETS", "SMOKE", "SMOKE_ENV", "Budget", "get_budget", "smoke"]

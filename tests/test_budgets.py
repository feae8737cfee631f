import json
from dataclasses import replace
from pathlib import Path

import pytest

from saehelpers import get_release
from saehelpers.budgets import BUDGETS, SMOKE, SMOKE_ENV, get_budget
from saehelpers.release import REAL

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_full_size_sweeps_every_layer_and_takes_the_preset_numbers(monkeypatch):
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    for preset in ("mini", "gemma-3-1b"):
        budget = get_budget(preset)
        assert budget.sweep_layers == get_release(preset).layers and not budget.smoke
        assert budget.stats_tokens == BUDGETS[preset].stats_tokens
    # the real release reads more text than the stand-in, everywhere
    mini, real = BUDGETS["mini"], BUDGETS["gemma-3-1b"]
    assert all(getattr(real, k) >= getattr(mini, k) for k in ("stats_tokens", "edit_tokens", "prefix_tokens"))


def test_smoke_size_is_the_smallest_with_first_middle_and_last_layer(monkeypatch):
    monkeypatch.setenv(SMOKE_ENV, "1")
    budget = get_budget(get_release("gemma-3-1b"))
    assert budget.smoke and budget.sweep_layers == (0, 12, 24)
    assert get_budget("mini").sweep_layers == (2, 10, 14)
    for full in BUDGETS.values():
        assert all(
            getattr(SMOKE, k) <= getattr(full, k) for k in ("stats_tokens", "new_tokens", "loss_batches")
        )


@pytest.mark.parametrize("bad", ["yes", "2", "true"])
def test_a_bad_smoke_value_says_what_is_valid(monkeypatch, bad):
    monkeypatch.setenv(SMOKE_ENV, bad)
    with pytest.raises(ValueError, match="set it to 1 for the smoke size, or 0 / unset"):
        get_budget("mini")


def test_no_notebook_branches_on_the_preset():
    """Sizes come from the budget table, so the smoke size and the real release run the same cells."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert 'preset == "mini"' not in code and "preset != " not in code, path.name


def test_real_shape_run_builds_the_layers_the_notebooks_load(monkeypatch):
    """scripts/run_real_shape.py: the fake hub holds the sweeps' layers, the middle (00, 02, 05), the
    three-quarter layer (03, 04) and the first (04's early layer)."""
    import sys

    sys.path.insert(0, str(NOTEBOOKS.parent / "scripts"))
    from run_real_shape import needed_layers

    monkeypatch.setenv(SMOKE_ENV, "1")  # needed_layers sets it too; monkeypatch restores it afterwards
    assert needed_layers() == [0, 12, 18, 24]


def test_full_real_shape_run_uses_the_release_budget_and_every_layer(monkeypatch, tmp_path):
    """`run_real_shape.py --full`: the kernels get SAEHELPERS_SMOKE=0 (the real budgets), and the fake hub
    holds all 25 layers, since the sweeps of 01, 03 and 05 then load every one."""
    import sys

    sys.path.insert(0, str(NOTEBOOKS.parent / "scripts"))
    from run_real_shape import needed_layers, real_shape_env

    monkeypatch.setenv(SMOKE_ENV, "1")
    assert needed_layers(full=True) == list(range(25))
    assert real_shape_env(tmp_path, "float32", full=True)[SMOKE_ENV] == "0"
    assert real_shape_env(tmp_path, "float32")[SMOKE_ENV] == "1"
    monkeypatch.setenv(SMOKE_ENV, "0")
    assert get_budget(REAL) == replace(BUDGETS[REAL], sweep_layers=tuple(range(25)))

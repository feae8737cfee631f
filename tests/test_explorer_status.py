"""Notebook 02's explorer, switching layers: one status line while the SAE and its statistics load, then
the card alone (no progress bar, which inside a widget's Output is drawn once and stays at "0%")."""

import pytest

from saehelpers import features, get_release, load_sae


@pytest.mark.heavy
def test_switching_layers_says_what_it_loads_and_draws_no_progress_bar(mini, monkeypatch, capsys):
    from saehelpers.widgets import explorer

    model, tok = mini
    rel = get_release("mini")
    first, other = rel.layers[0], rel.layers[1]
    calls = []
    real = features.feature_stats

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **{**kwargs, "n_tokens": 64, "cache": False})

    monkeypatch.setattr(features, "feature_stats", recording)
    ex = explorer(model, tok, load_sae(first, "mini", dtype="float32"), rel, 0)
    capsys.readouterr()
    ex.layer_box.value = other
    out, err = capsys.readouterr()
    assert calls and all(kwargs["progress"] is False for kwargs in calls)
    assert f"layer {other}: loading its SAE and feature statistics" in out
    assert "feature stats" not in err and "%" not in err  # no tqdm bar
    assert ex.card.layer == other and len(calls) == 2  # the first layer's statistics, then the other's

"""saehelpers.widgets: the explorers draw widgets where they render and a static view with the same facts
everywhere else (Colab's ipywidgets 7, SAEHELPERS_WIDGETS=0, a saved notebook)."""

import pandas as pd
import pytest

from saehelpers import display, get_release, widgets
from saehelpers import features as F
from saehelpers.release import layer_of


@pytest.fixture
def sae(random_sae):
    """The random SAE of the mini release's shape (tests/conftest.py), under this module's short name."""
    return random_sae


def test_explorer_prints_a_static_card_where_widgets_do_not_render(mini, sae, small_batches):
    from saehelpers.widgets import explorer

    model, tok = mini
    rel = get_release("mini")
    stats = F.stream_stats(model, sae, small_batches, k=4, progress=False)
    f, g = (int(i) for i in stats.counts.topk(2).indices)
    ex = explorer(model, tok, sae, rel, f, text="Hello <world>", stats=stats)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # a widget where widgets work...
    plain = bundle["text/plain"]  # ...and the card as text everywhere else
    assert (
        f"Layer {layer_of(sae)} · feature {f} ·" in plain
        and "Top activations:" in plain
        and "On your text" in plain
    )
    ex.feature_box.value = g
    assert ex.card.feature == g and f"feature {g} ·" in ex._repr_mimebundle_()["text/plain"]
    with pytest.raises(ValueError, match="release must be a Release"):
        explorer(model, tok, sae, 6, f, stats=stats)
    with pytest.raises(ValueError, match=rf"0\.\.{rel.d_sae - 1}"):
        explorer(model, tok, sae, rel, rel.d_sae, stats=stats)


@pytest.mark.parametrize("how", ["ipywidgets 7", "SAEHELPERS_WIDGETS=0"])
def test_explorer_falls_back_to_static_html_with_the_same_facts(mini, sae, small_batches, monkeypatch, how):
    import ipywidgets

    from saehelpers import widgets
    from saehelpers.display import Static

    model, tok = mini
    rel = get_release("mini")
    stats = F.stream_stats(model, sae, small_batches, k=4, progress=False)
    f = int(stats.counts.topk(1).indices)
    assert widgets.enabled()
    live = widgets.explorer(model, tok, sae, rel, f, text="Hello <world>", stats=stats)
    if how == "ipywidgets 7":
        monkeypatch.setattr(ipywidgets, "__version__", "7.7.1")  # Colab's
    else:
        monkeypatch.setenv("SAEHELPERS_WIDGETS", "0")
    assert not widgets.enabled()
    static = widgets.explorer(model, tok, sae, rel, f, text="Hello <world>", stats=stats)
    assert isinstance(static, Static)
    assert repr(static) == live.static()  # the same card and text activations as the widget's text view
    page = static._repr_html_()
    assert f"feature {f}" in page and "Static view" in page and "On your text" in page
    assert "&lt;" in page and "<world>" not in page  # the typed text stays text


def test_tree_explorer_without_widgets_shows_every_parents_tree(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from saehelpers.display import Static

    table = pd.DataFrame(
        {
            "parent": [0, 0, 5],
            "child": [7, 9, 11],
            "cosine": [0.5, 0.4, 0.6],
            "p_parent_given_child": [0.9, 0.8, 0.95],
            "p_child_given_parent": [0.2, 0.1, 0.3],
        }
    )
    labels = {0: "zero <b>", 5: "five", 7: "seven", 9: "nine", 11: "eleven"}
    monkeypatch.setenv("SAEHELPERS_WIDGETS", "0")
    view = widgets.tree_explorer(table, labels, {11: "details of eleven"})
    assert isinstance(view, Static)
    assert repr(view) == "\n\n".join(
        [display.tree_text(table, 0, labels), display.tree_text(table, 5, labels) + "\n\ndetails of eleven"]
    )
    assert "zero &lt;b&gt;" in view._repr_html_() and "all 2 parents" in view._repr_html_()

"""An ipywidgets explorer of feature cards that still shows a useful card where widgets are not rendered."""

from __future__ import annotations

import html
import os

import ipywidgets as W
from IPython.display import clear_output, display

from . import features
from .display import Static, highlight, tokens_html, visible
from .loading import load_sae

ENV = "SAEHELPERS_WIDGETS"


def enabled() -> bool:
    """Whether explorers draw ipywidgets: ipywidgets 8 or newer, and $SAEHELPERS_WIDGETS is not "0".

    Colab ships ipywidgets 7, which its front end renders only for 7's own widget models, and a saved
    notebook or GitHub's viewer renders none; there the explorers show the same facts as static HTML.
    """
    major = int(W.__version__.split(".")[0])
    return major >= 8 and os.environ.get(ENV, "1") != "0"


class Explorer(W.VBox):
    """Choose a layer and a feature, or type a text, and see the feature's card.

    The statistics come from `features.feature_stats` (cached on disk; the first look at a layer
    computes them, about as long as the notebook's own stats cell). One SAE is held at a time.
    Viewers that do not render widgets (nbmake, GitHub, a printed notebook) show the text card of
    the current choice instead: `_repr_mimebundle_` puts it in the output's plain-text part.
    """

    def __init__(
        self, model, tokenizer, release, layer, feature=0, text="", sae=None, stats=None, **stats_kwargs
    ):
        self.model, self.tokenizer, self.release, self.stats_kwargs = model, tokenizer, release, stats_kwargs
        layer = release.check_layer(layer)
        feature = features.check_feature(feature, release.d_sae)
        self._layer, self._sae, self._stats = layer, sae, stats
        self.layer_box = W.Dropdown(options=list(release.layers), value=layer, description="layer")
        self.feature_box = W.BoundedIntText(
            value=feature, min=0, max=release.d_sae - 1, description="feature"
        )
        self.text_box = W.Text(value=text, description="text", placeholder="type a text, press Enter",
                               continuous_update=False, layout=W.Layout(width="40em"))  # fmt: skip
        self.out = W.Output()
        for box in (self.layer_box, self.feature_box, self.text_box):
            box.observe(self.refresh, names="value")
        super().__init__([W.HBox([self.layer_box, self.feature_box]), self.text_box, self.out])
        self.refresh()

    def _parts(self):
        """The SAE and statistics of the chosen layer, loaded (or computed) when the layer changes."""
        layer = self.layer_box.value
        if layer != self._layer or self._sae is None:
            self._sae = None  # let the previous SAE go before the next one loads
            self._sae = load_sae(layer, self.release.name, device=self.model.device)
            self._stats, self._layer = None, layer
        if self._stats is None:
            self._stats = features.feature_stats(
                self.model, self.tokenizer, self._sae, layer, self.release.name, **self.stats_kwargs
            )
        return self._sae, self._stats

    def refresh(self, change=None) -> None:
        """Redraw the card (called whenever a box changes)."""
        with self.out:
            clear_output(wait=True)
            sae, stats = self._parts()
            f = self.feature_box.value
            self.card = features.feature_card(stats, f, self.model, self.tokenizer, sae, self.release)
            self.on_text = None
            if self.text_box.value:
                tokens, feats = features.encode_text(
                    self.model, self.tokenizer, sae, self._layer, self.text_box.value
                )
                self.on_text = (tokens, feats[:, f].tolist())
                display(highlight(*self.on_text))
            display(self.card)

    def static(self) -> str:
        """The current card as text, with the typed text's activations when there is one."""
        lines = []
        if self.on_text:
            tokens, acts = self.on_text
            lines.append(f"On your text, feature {self.card.feature}: ")
            lines.append(
                "  " + "".join(visible(t) + (f"({a:.3g})" if a else "") for t, a in zip(tokens, acts))
            )
        return "\n".join([*lines, str(self.card)])

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.static()  # what viewers without widgets show
        return bundle


def explorer(model, tokenizer, release, layer, feature=0, text="", sae=None, stats=None, **stats_kwargs):
    """An `Explorer` starting at (layer, feature); pass the `sae` and `stats` you already have for that layer.

    stats_kwargs go to `features.feature_stats` when another layer is chosen (e.g. n_tokens=...).
    Where widgets are not `enabled()`, the same card (and the typed text's activations) as static HTML.
    """
    if enabled():
        return Explorer(model, tokenizer, release, layer, feature, text, sae, stats, **stats_kwargs)
    layer, feature = release.check_layer(layer), features.check_feature(feature, release.d_sae)
    sae = load_sae(layer, release.name, device=model.device) if sae is None else sae
    if stats is None:
        stats = features.feature_stats(model, tokenizer, sae, layer, release.name, **stats_kwargs)
    card = features.feature_card(stats, feature, model, tokenizer, sae, release)
    parts, lines = [], []
    if text:
        tokens, feats = features.encode_text(model, tokenizer, sae, layer, text)
        acts = feats[:, feature].tolist()
        parts.append(f"<p>On your text, feature {feature}:</p>" + tokens_html(tokens, acts))
        lines += [f"On your text, feature {feature}: ", "  " + "".join(
            visible(t) + (f"({a:.3g})" if a else "") for t, a in zip(tokens, acts))]  # fmt: skip
    note = (f"<p><i>Static view (widgets off: ipywidgets {html.escape(W.__version__)}, {ENV}="
            f"{html.escape(os.environ.get(ENV, '1'))}); call explorer(...) with another layer or feature to see it.</i></p>")  # fmt: skip
    return Static(note + "".join(parts) + card._repr_html_(), "\n".join([*lines, str(card)]))


__all__ = ["Explorer", "explorer"]

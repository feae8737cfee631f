"""Interactive views: the feature-card explorer, the steering panel and the Matryoshka tree explorer.

Each still shows the same facts where widgets are not rendered (`enabled()`): static HTML and text.
"""

from __future__ import annotations

import html
import os

import ipywidgets as W
import pandas as pd
from IPython.display import clear_output, display

from . import cards, features
from .checks import check_feature, check_int, check_sae
from .display import Static, draw_tree, highlight, tokens_html, tree_text, visible
from .loading import load_sae
from .release import as_release
from .steering import check_coef, feature_direction, generate, resid_norms, steer
from .text import token_batches
from .tokens import check_text

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

    def __init__(self, model, tokenizer, sae, release, feature=0, text="", stats=None, **stats_kwargs):
        release = as_release(release)
        self.model, self.tokenizer, self.release, self.stats_kwargs = model, tokenizer, release, stats_kwargs
        layer = check_sae(sae, release, model)
        feature, text = check_feature(feature, release.d_sae), check_text(text)
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
            # No progress bar here: inside a widget's Output a bar is drawn once and never redrawn (a frozen
            # "0%" above the card); refresh prints one line instead, and clears it with the card.
            self._stats = features.feature_stats(
                self.model,
                self.tokenizer,
                self._sae,
                self.release,
                **{"progress": False, **self.stats_kwargs},
            )
        return self._sae, self._stats

    def refresh(self, change=None) -> None:
        """Redraw the card (called whenever a box changes)."""
        with self.out:
            clear_output(wait=True)
            if self.layer_box.value != self._layer or self._stats is None:
                print(
                    f"layer {self.layer_box.value}: loading its SAE and feature statistics "
                    "(computed once, then cached; the first time takes up to a minute)..."
                )
            sae, stats = self._parts()
            clear_output(wait=True)
            f = self.feature_box.value
            self.card = cards.feature_card(self.model, self.tokenizer, sae, self.release, stats, f)
            self.on_text = None
            if self.text_box.value:
                tokens, feats = features.encode_text(self.model, self.tokenizer, sae, self.text_box.value)
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


def explorer(model, tokenizer, sae, release, feature=0, text="", stats=None, **stats_kwargs):
    """An `Explorer` starting at the SAE's layer and `feature`; pass the `stats` you already have for it.

    stats_kwargs go to `features.feature_stats` when another layer is chosen (e.g. n_tokens=...).
    Where widgets are not `enabled()`, the same card (and the typed text's activations) as static HTML.
    """
    if enabled():
        return Explorer(model, tokenizer, sae, release, feature, text, stats, **stats_kwargs)
    release = as_release(release)
    check_sae(sae, release, model)
    feature, text = check_feature(feature, release.d_sae), check_text(text)
    if stats is None:
        stats = features.feature_stats(model, tokenizer, sae, release, **stats_kwargs)
    card = cards.feature_card(model, tokenizer, sae, release, stats, feature)
    parts, lines = [], []
    if text:
        tokens, feats = features.encode_text(model, tokenizer, sae, text)
        acts = feats[:, feature].tolist()
        parts.append(f"<p>On your text, feature {feature}:</p>" + tokens_html(tokens, acts))
        lines += [f"On your text, feature {feature}: ", "  " + "".join(
            visible(t) + (f"({a:.3g})" if a else "") for t, a in zip(tokens, acts))]  # fmt: skip
    note = (f"<p><i>Static view (widgets off: ipywidgets {html.escape(W.__version__)}, {ENV}="
            f"{html.escape(os.environ.get(ENV, '1'))}); call explorer(...) with another SAE or feature to see it.</i></p>")  # fmt: skip
    return Static(note + "".join(parts) + card._repr_html_(), "\n".join([*lines, str(card)]))


# ---------------------------------------------------------------- steering


def steering_panel(
    model, tokenizer, release, layer, feature, coef, prompt, max_new_tokens=24, saes=None, held=None
):
    """Interactive: layer, feature, coefficient, prompt -> plain and steered text. Prints the starting point too.

    `saes` may hold {layer: SAE} already loaded (others load when chosen); `held` a few held-out batches
    to measure each layer's residual spread on (default: two of 4 x 64 tokens). Without ipywidgets (or
    a live kernel) only the printed starting point stays.
    """

    release = as_release(release)
    layer, feature = release.check_layer(layer), check_feature(feature, release.d_sae)
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}.")
    coef, prompt = check_coef(coef), check_text(prompt, "prompt")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", low=1)
    saes, spreads = dict(saes or {}), {}
    held = list(held or token_batches(tokenizer, release.name, 4, 64, n_batches=2))

    def run(layer, feature, coef, prompt):
        if layer not in saes:
            saes[layer] = load_sae(layer, release.name, device=model.device)
        if layer not in spreads:
            spreads[layer] = resid_norms(model, layer, held)[1]
        sae = saes[layer]
        push = check_coef(coef) * feature_direction(sae, feature).float().norm().item()
        plain = generate(model, tokenizer, prompt, max_new_tokens)
        with steer(model, sae, feature, coef):
            steered = generate(model, tokenizer, prompt, max_new_tokens)
        return (
            f"layer {layer}, feature {feature} (group {release.group_of(feature)}), coef {coef:g}: "
            f"||coef * d|| = {push / spreads[layer]:.2f} x the residual spread\n"
            f"prompt:  {prompt!r}\nplain:   {plain!r}\nsteered: {steered!r}"
        )

    print(run(layer, feature, coef, prompt))  # the static result, for viewers without widgets
    if not enabled():
        return

    boxes = dict(
        layer=W.Dropdown(options=list(release.layers), value=layer, description="layer"),
        feature=W.BoundedIntText(value=feature, min=0, max=release.d_sae - 1, description="feature"),
        coef=W.FloatText(value=coef, description="coef"),
        prompt=W.Text(value=prompt, description="prompt", layout=W.Layout(width="90%")),
    )
    button, out = W.Button(description="Generate"), W.Output()

    def on_click(_):
        out.clear_output()
        with out:
            try:
                print(run(**{k: b.value for k, b in boxes.items()}))
            except ValueError as e:  # bad input: say what was wrong, keep the panel alive
                print(e)

    button.on_click(on_click)
    display(W.VBox([*boxes.values(), button, out]))


# ---------------------------------------------------------------- Matryoshka trees


def tree_explorer(table: pd.DataFrame, labels: dict | None = None, details: dict | None = None):
    """Choose a parent and see its tree and its nodes' details; prints the text tree where widgets do not render.

    `details` maps a latent id to a longer text (e.g. `display.card_brief(card)`) shown under the tree.
    """
    import matplotlib.pyplot as plt

    needed = ["parent", "child", "cosine", "p_parent_given_child", "p_child_given_parent"]
    if not isinstance(table, pd.DataFrame) or not set(needed) <= set(table.columns):
        got = list(table.columns) if isinstance(table, pd.DataFrame) else type(table).__name__
        raise ValueError(
            f"table must be a hierarchy table (matryoshka.hierarchy), a DataFrame with the columns {needed}; got {got}."
        )
    parents = list(dict.fromkeys(table.parent.tolist()))
    if not parents:  # a fair outcome (untrained weights, strict thresholds): say so, rather than fail
        note = "No parent-child pairs in this table: lower min_cosine / min_p_parent in hierarchy(), or use more tokens."
        return Static(f"<p><i>{html.escape(note)}</i></p>", note)
    details = details or {}
    box = W.Dropdown(options=parents, value=parents[0], description="parent")
    out = W.Output()

    def text(parent):
        kids = table[table.parent == parent].child.tolist()
        more = [details[f] for f in [parent, *kids] if f in details]
        return "\n\n".join([tree_text(table, parent, labels), *more])

    def show(change=None):
        with out:
            clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(max(6, 2.6 * len(table[table.parent == box.value])), 3.6))
            draw_tree(table, box.value, labels, ax)
            plt.show()
            print(text(box.value))

    class TreeExplorer(W.VBox):
        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            bundle["text/plain"] = text(box.value)  # what viewers without widgets show
            return bundle

    if not enabled():  # every parent's tree as text, the first one also drawn
        fig, ax = plt.subplots(figsize=(max(6, 2.6 * len(table[table.parent == parents[0]])), 3.6))
        draw_tree(table, parents[0], labels, ax)
        plt.show()
        texts = [text(p) for p in parents]
        body = "".join(f"<pre>{html.escape(t)}</pre>" for t in texts)
        return Static(
            f"<p><i>Static view: the trees of all {len(parents)} parents.</i></p>{body}", "\n\n".join(texts)
        )
    box.observe(show, names="value")
    show()
    return TreeExplorer([box, out])


__all__ = ["Explorer", "explorer", "steering_panel", "tree_explorer"]

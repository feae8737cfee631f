"""HTML and text for the project's own feature dashboards: tokens highlighted by activation, feature cards.

Every token and label goes through `html.escape`, so a text holding `<script>` or `&` shows as text,
never as markup. Colours are a translucent orange laid over the page's own background, with the
page's own text colour, so light and dark themes both stay readable; the strongest tokens get dark
text on a near-opaque orange. Hovering a token shows its exact activation.
`plot_label` makes a token safe for a matplotlib label (characters its font lacks as ⟨U+8B6B⟩).
"""

from __future__ import annotations

import functools
import html
import textwrap

import pandas as pd
import torch

from .checks import check_feature, check_finite, check_int, check_vector
from .tokens import check_text, check_texts

RGB = "255, 140, 0"  # the highlight colour (orange), as "r, g, b"
BARS = " ▁▂▃▄▅▆▇█"  # for text histograms


def visible(token: str) -> str:
    """The token with newlines and tabs drawn as ↵ and ⇥, so a context reads on one line."""
    return token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def _font_files() -> tuple:
    """The fonts matplotlib draws text with: one file per entry of font.family (its fallback chain)."""
    from matplotlib import font_manager as fm

    files = []
    for family in fm.FontProperties().get_family():
        try:
            files.append(fm.findfont(fm.FontProperties(family=[family]), fallback_to_default=False))
        except ValueError:  # not installed: matplotlib skips it as well
            pass
    return tuple(files) or (fm.findfont(fm.FontProperties()),)


@functools.lru_cache(maxsize=16)
def _code_points(files: tuple) -> frozenset[int]:
    """The code points at least one of the fonts has a glyph for (cached: reading a charmap takes ms)."""
    from matplotlib.font_manager import get_font

    return frozenset().union(*(get_font(f).get_charmap() for f in files))


def plot_label(text: str) -> str:
    """`text` (a token, a tree label) made safe for matplotlib, which draws a missing glyph as an empty box.

    Every character the configured fonts (rcParams "font.family") cannot draw becomes its code point,
    e.g. 譫 -> ⟨U+8B6B⟩; configure a font that has the script (e.g. Noto Sans CJK) and it is drawn as
    is. `$` is escaped so that a token never switches on mathtext. Newlines are kept.
    """
    have = _code_points(_font_files())
    left, right = ("⟨", "⟩") if {0x27E8, 0x27E9} <= have else ("<", ">")
    shown = (c if c == "\n" or ord(c) in have else f"{left}U+{ord(c):04X}{right}" for c in str(text))
    return "".join(shown).replace("$", r"\$")


def token_span(token: str, act: float, vmax: float, centre: bool = False, title: str | None = None) -> str:
    """One token as an HTML span, its background as strong as act / vmax; `centre` draws a box around it."""
    # Checked here, the one place activations become CSS: a NaN would write "rgba(..., nan)".
    token, act, vmax = check_text(token, "token"), check_finite(act, "act"), check_finite(vmax, "vmax")
    title = None if title is None else check_text(title, "title")
    alpha = min(max(act / vmax, 0.0), 1.0) if vmax > 0 else 0.0
    style = f"background: rgba({RGB}, {alpha:.2f}); white-space: pre; border-radius: 3px; padding: 0 1px"
    if alpha > 0.5:
        style += "; color: #111"  # dark text on strong orange, whatever the theme's text colour
    if centre:
        style += "; outline: 2px solid currentColor"
    tip = f"{act:.3g}" if title is None else title
    if not token:  # only the first bytes of a character (tokens.context_strings): keep its shade visible
        style += "; display: inline-block; min-width: 0.4em"
        tip += " (the first bytes of the next character)"
    return f'<span style="{style}" title="{html.escape(tip)}">{html.escape(visible(token))}</span>'


def tokens_html(tokens, acts, vmax: float | None = None, centre: int | None = None, titles=None) -> str:
    """Tokens side by side, each highlighted by its activation (vmax: the activation drawn full strength)."""
    tokens = [check_text(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
    acts = [
        check_finite(a, f"acts[{i}]", hint="Activations must be finite numbers.") for i, a in enumerate(acts)
    ]
    if len(acts) != len(tokens):
        raise ValueError(f"Got {len(tokens)} tokens but {len(acts)} activations.")
    vmax = max(acts, default=0.0) if vmax is None else check_finite(vmax, "vmax")
    titles = titles or [None] * len(tokens)
    spans = (
        token_span(t, a, vmax, i == centre, tip) for i, (t, a, tip) in enumerate(zip(tokens, acts, titles))
    )
    # Each token keeps its spaces (white-space: pre), so the only places a line may break are the
    # <wbr> between tokens: long contexts wrap at the cell's width instead of running off the side.
    return '<span style="font-family: monospace; line-height: 1.9">' + "<wbr>".join(spans) + "</span>"


def highlight(tokens, acts, vmax: float | None = None, centre: int | None = None):
    """A displayable HTML object of `tokens_html` (for a notebook cell)."""
    from IPython.display import HTML

    return HTML(tokens_html(tokens, acts, vmax, centre))


def _strongest(feats: torch.Tensor, n: int) -> list[int]:
    best = feats.max(0).values
    return [int(f) for f in best.topk(min(n, int((best > 0).sum()))).indices]


def text_features_html(tokens, feats: torch.Tensor, features=None, n: int = 5, label=None) -> str:
    """A table: one row per feature (default: the n with the largest activation anywhere in the text), the
    text highlighted by that feature's activation. Hover a token for its strongest features.

    tokens: the text's tokens (BOS left out); feats: [n_tokens, d_sae] from `features.encode_text`;
    label(f): an optional extra description per feature (e.g. its Matryoshka group).
    """
    hint = "(from features.encode_text; its NaN or inf would reach the page's CSS)"
    feats = check_vector(feats, "feats", (len(tokens), "d_sae"), hint)
    if features is None:
        features = _strongest(feats, check_int(n, "n", low=1, hint="n is how many features to show."))
    else:
        features = [check_feature(f, feats.shape[1]) for f in features]
    top = feats.topk(min(3, feats.shape[1]), dim=1)
    tips = [
        ", ".join(f"#{int(i)}: {v:.3g}" for v, i in zip(vals.tolist(), idx) if v > 0) or "no feature fires"
        for vals, idx in zip(top.values, top.indices)
    ]
    rows = []
    for f in features:
        col = feats[:, f]
        name = f"feature {f}" + (f" · {label(f)}" if label else "")
        cells = [f"<b>{html.escape(name)}</b><br>max {col.max().item():.3g}"]
        titles = [f"feature {f}: {a:.3g} | strongest here: {t}" for a, t in zip(col.tolist(), tips)]
        cells.append(tokens_html(tokens, col, titles=titles))
        rows.append("<tr>" + "".join(f'<td style="text-align: left">{c}</td>' for c in cells) + "</tr>")
    if not rows:
        return "<p>No feature fires on this text.</p>"
    return "<table>" + "".join(rows) + "</table>"


def text_features(tokens, feats, features=None, n: int = 5, label=None):
    """A displayable HTML object of `text_features_html`."""
    from IPython.display import HTML

    return HTML(text_features_html(tokens, feats, features, n, label))


# ---------------------------------------------------------------- feature cards


def _shown_bins(hist, edges):
    on = [i for i, c in enumerate(hist) if c]
    return (on[0], on[-1] + 1) if on else (0, 0)


def hist_svg(hist, edges, width: int = 320, height: int = 60) -> str:
    """The activation histogram as a small inline SVG (bins that hold no token at the ends left out)."""
    a, b = _shown_bins(hist, edges)
    if a == b:
        return "<i>no activations</i>"
    counts, w = hist[a:b], width / (b - a)
    top = max(counts)
    bars = "".join(
        f'<rect x="{i * w:.1f}" y="{height - c / top * height:.1f}" width="{max(w - 1, 1):.1f}" '
        f'height="{c / top * height:.1f}" fill="rgb({RGB})"><title>{edges[a + i]:.3g}–{edges[a + i + 1]:.3g}: '
        f"{c}</title></rect>"
        for i, c in enumerate(counts)
    )
    labels = (
        f'<text x="0" y="{height + 14}" font-size="11" fill="currentColor">{edges[a]:.3g}</text>'
        f'<text x="{width}" y="{height + 14}" font-size="11" fill="currentColor" text-anchor="end">{edges[b]:.3g}</text>'
        f'<text x="{width / 2}" y="{height + 14}" font-size="11" fill="currentColor" text-anchor="middle">'
        "activation (log scale)</text>"
    )
    return f'<svg width="{width}" height="{height + 18}" role="img">{bars}{labels}</svg>'


def hist_text(hist, edges) -> str:
    """The activation histogram as a one-line sparkline."""
    a, b = _shown_bins(hist, edges)
    if a == b:
        return "(no activations)"
    top = max(hist[a:b])
    bars = "".join(BARS[0 if c == 0 else max(1, round(c / top * (len(BARS) - 1)))] for c in hist[a:b])
    return f"{edges[a]:.3g} {bars} {edges[b]:.3g}"


def _summary(card) -> tuple[str, str]:
    start, end = card.group_range
    title = f"Layer {card.layer} · feature {card.feature} · Matryoshka group {card.group} (latents {start}–{end - 1})"
    line = (
        f"Fires on {card.count} of {card.n_tokens} tokens ({card.frequency:.2%}): rank {card.rank} of "
        f"{card.d_sae} by firing frequency. Max activation {card.max:.3g}, mean when firing {card.mean_when_firing:.3g}."
    )
    return title, line


def examples_html(examples, vmax: float) -> str:
    """Examples of a card (`card.top`, `card.sample`) as a table: activation, then the context, token boxed."""
    rows = "".join(
        f'<tr><td style="text-align: right">{e["value"]:.3g}</td><td style="text-align: left">'
        f"{tokens_html(e['strings'], e['acts'], vmax, e['centre'])}</td></tr>"
        for e in examples
    )
    return f"<table>{rows}</table>" if rows else "<p><i>none</i></p>"


def _examples_sections(card) -> str:
    vmax = card.max or 1.0
    return (
        "<p><b>Top activations</b> (boxed: the token; shade: this feature's activation)</p>"
        + examples_html(card.top, vmax)
        + "<p><b>A random sample of where it fires</b> (typical, weaker activations)</p>"
        + examples_html(card.sample, vmax)
    )


def card_examples(card):
    """The card's top activations and random sample, as a displayable HTML object."""
    from IPython.display import HTML

    return HTML(_examples_sections(card))


LOGIT_NOTE = (
    "Logit lens of the decoder direction: unembed(final_norm(d)), the direct path only. It ignores the "
    "layers after this one and the norm's dependence on the rest of the residual stream."
)


def card_html(card) -> str:
    """A feature card (`cards.FeatureCard`) as HTML."""
    title, line = _summary(card)
    parts = [
        f"<h4>{html.escape(title)}</h4><p>{html.escape(line)}</p>",
        hist_svg(card.hist, card.edges),
        _examples_sections(card),
        f"<p><b>Logit lens</b>: {html.escape(LOGIT_NOTE)}</p>",
        card.logits.to_html(index=False, float_format="{:.3g}".format),
        "<p><b>Nearest decoder neighbours</b> (cosine similarity of decoder rows)</p>",
        card.neighbours.to_html(index=False, float_format="{:.3g}".format),
        *(f"<p><i>{html.escape(n)}</i></p>" for n in card.notes),
    ]
    return '<div style="max-width: 60em">' + "".join(parts) + "</div>"


def context_text(e: dict) -> str:
    """An example as one line of text, the activating token in [[brackets]]."""
    return "".join(
        f"[[{visible(t)}]]" if i == e["centre"] else visible(t) for i, t in enumerate(e["strings"])
    )


def card_brief(card, n: int = 3) -> str:
    """The card's first lines and its n top contexts, as text."""
    title, line = _summary(card)
    return "\n".join([title, line, *(f"  {e['value']:8.3g}  {context_text(e)}" for e in card.top[:n])])


def card_text(card) -> str:
    """A feature card as plain text (for viewers that show no HTML, and for print)."""
    title, line = _summary(card)
    lines = [
        title,
        line,
        f"Activation histogram (log bins): {hist_text(card.hist, card.edges)}",
        "Top activations:",
    ]
    lines += [f"  {e['value']:8.3g}  {context_text(e)}" for e in card.top] or ["  none"]
    lines += ["A random sample of where it fires:"]
    lines += [f"  {e['value']:8.3g}  {context_text(e)}" for e in card.sample] or ["  none"]
    lg = card.logits
    lines += [
        "Logit lens (direct path only; ignores later layers and the final norm's dependence on the rest):",
        "  raises: " + ", ".join(repr(t) for t in lg.iloc[:, 0]),
        "  lowers: " + ", ".join(repr(t) for t in lg.iloc[:, 2]),
        "Nearest decoder neighbours: "
        + ", ".join(f"{r.feature} (cos {r.cosine:.2f}, g{r.group})" for r in card.neighbours.itertuples()),
        *card.notes,
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- tables and trees


def side_by_side(prompts, **columns):
    """A table with one row per prompt and one column per way of generating (wrapped, left-aligned).

    Every text is HTML-escaped: a prompt or a generated text holding `<script>` shows as text.
    """
    prompts = check_texts(prompts, "prompts", allow_empty=True)
    columns = {k: check_texts(v, k, allow_empty=True) for k, v in columns.items()}
    for name, texts in columns.items():
        if len(texts) != len(prompts):
            raise ValueError(
                f"Column {name!r} has {len(texts)} texts for {len(prompts)} prompts: give one per prompt."
            )
    df = pd.DataFrame({"prompt": prompts, **columns})
    return (
        df.style.format(escape="html")
        .format_index(escape="html", axis=1)  # a column name is text too
        .set_properties(**{"white-space": "pre-wrap", "text-align": "left"})
        .hide(axis="index")
    )


def _centre(e: dict) -> str:
    """An example's activating token, quoted; one holding only a character's first bytes names that character."""
    strings = e["strings"]
    if strings[e["centre"]]:
        return repr(strings[e["centre"]])
    return "part of " + repr(next((s for s in strings[e["centre"] :] if s), "?")[:1])


def card_label(card, n: int = 3) -> str:
    """A short label for a tree node from a feature card: id, group, frequency, top tokens, logit lens."""
    tokens = list(dict.fromkeys(map(_centre, card.top)))[:n]
    writes = card.logits["raises"].tolist()[:n]
    return (
        f"{card.feature} (g{card.group}, {card.frequency:.1%})\n"
        f"on: {', '.join(tokens) or '-'}\n"
        f"writes: {', '.join(map(repr, writes))}"
    )


def tree_text(table: pd.DataFrame, parent: int, labels: dict | None = None) -> str:
    """One parent and its children from a `hierarchy` table, as indented text (the static view)."""
    labels = labels or {}

    def label(f):
        return " | ".join(labels.get(f, str(f)).splitlines())

    rows = table[table.parent == parent]
    lines = [label(parent)]
    for r in rows.itertuples():
        lines.append(
            f"  └─ {label(r.child)}   [cos {r.cosine:.2f}, P(parent|child) {r.p_parent_given_child:.2f}, "
            f"P(child|parent) {r.p_child_given_parent:.2f}]"
        )
    if rows.empty:
        lines.append("  (no children pass the thresholds)")
    return "\n".join(lines)


def draw_tree(table: pd.DataFrame, parent: int, labels: dict | None = None, ax=None, width: int = 24):
    """Draw one parent (top) and its children (below) from a `hierarchy` table with matplotlib.

    Each edge is labelled with the decoder cosine and P(parent fires | child fires); `labels` maps a
    latent id to its node text (e.g. `card_label`), else the id is shown.
    """
    import matplotlib.pyplot as plt

    labels = labels or {}
    rows = table[table.parent == parent].reset_index(drop=True)
    n = max(len(rows), 1)
    ax = ax or plt.subplots(figsize=(max(6, 2.6 * n), 3.6))[1]
    ax.set(xlim=(-0.5, n - 0.5), ylim=(-0.35, 1.3))
    ax.axis("off")

    def node(x, y, f, colour):
        text = "\n".join(  # plot_label: characters the font lacks as ⟨U+8B6B⟩, not empty boxes
            textwrap.shorten(plot_label(line), width, placeholder="…")
            for line in labels.get(f, str(f)).splitlines()
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc=colour, ec="grey"))  # fmt: skip

    top = (n - 1) / 2
    for i, r in rows.iterrows():
        ax.plot([top, i], [1.0, 0.1], color="grey", lw=1 + 3 * r.p_parent_given_child, zorder=0)
        ax.text((top + i) / 2, 0.55, f"cos {r.cosine:.2f}\nP(p|c) {r.p_parent_given_child:.2f}",
                fontsize=7, ha="center", va="center", color="dimgrey", bbox=dict(fc="white", ec="none"))  # fmt: skip
        node(i, 0.1, int(r.child), "#e8f0fe")
    node(top, 1.0, parent, "#fde9d9")
    if rows.empty:
        ax.text(top, 0.3, "no children pass the thresholds", ha="center", fontsize=8, color="grey")
    return ax


__all__ = [
    "card_label",
    "draw_tree",
    "side_by_side",
    "tree_text",
    "card_brief",
    "card_examples",
    "card_html",
    "card_text",
    "context_text",
    "examples_html",
    "highlight",
    "hist_svg",
    "hist_text",
    "plot_label",
    "text_features",
    "text_features_html",
    "token_span",
    "tokens_html",
    "visible",
]


class Static:
    """HTML with a plain-text twin: what an explorer shows where widgets do not render (see `widgets.enabled`)."""

    def __init__(self, html_text: str, text: str):
        self.html, self.text = html_text, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text

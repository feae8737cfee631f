"""saehelpers.display: every token escaped, highlighting by activation, cards as HTML and text."""

import re
from html.parser import HTMLParser

import pandas as pd
import pytest
import torch

from saehelpers import display as D
from saehelpers.cards import FeatureCard
from saehelpers.features import HIST_EDGES

HOSTILE = ["<script>alert('x')</script>", " & ", '" onmouseover="alert(1)', "<b>bold</b>", "\n", "&amp;"]


class Collect(HTMLParser):
    """The tags, attributes and text an HTML viewer would see."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)


def parse(markup: str) -> Collect:
    p = Collect()
    p.feed(markup)
    return p


def test_hostile_tokens_show_as_text():
    markup = D.tokens_html(HOSTILE, [1.0, 2.0, 0.5, 0.0, 1.0, 3.0])
    seen = parse(markup)
    # Only our own tags: a span per token, and <wbr> (a line may break) between tokens.
    assert set(seen.tags) == {"span", "wbr"} and seen.tags.count("wbr") == len(HOSTILE) - 1
    assert set(seen.attrs) == {"style", "title"}  # no onmouseover or other injected attribute
    assert "".join(seen.text) == "".join(D.visible(t) for t in HOSTILE)  # the viewer shows the raw text
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "&amp;amp;" in markup


def test_hostile_titles_are_escaped():
    span = D.token_span("x", 1.0, 1.0, title='"><script>bad()</script>')
    assert parse(span).tags == ["span"] and "&quot;&gt;&lt;script&gt;" in span


def test_shade_follows_activation_and_stays_readable():
    spans = D.tokens_html(["a", "b", "c", "d"], [0.0, 1.0, 3.0, 4.0], centre=2)
    alphas = [float(a) for a in re.findall(r"rgba\(255, 140, 0, ([\d.]+)\)", spans)]
    assert alphas == [0.0, 0.25, 0.75, 1.0]
    styles = re.findall(r'style="([^"]*)"', spans)[1:]
    # Strong tokens get dark text (readable on orange in any theme); faint ones keep the theme's colour.
    assert ["color: #111" in s for s in styles] == [False, False, True, True]
    assert ["outline" in s for s in styles] == [False, False, True, False]


def test_zero_vmax_and_length_mismatch():
    assert "0.00" in D.token_span("a", 0.0, 0.0)
    with pytest.raises(ValueError, match="2 tokens but 1 activations"):
        D.tokens_html(["a", "b"], [1.0])


def test_text_features_rows_and_escaping():
    feats = torch.zeros(3, 10)
    feats[0, 4], feats[2, 4], feats[1, 7] = 2.0, 1.0, 5.0
    markup = D.text_features_html(["<x>", "&", "y"], feats, n=5, label=lambda f: f"<g{f}>")
    seen = parse(markup)
    assert "x" not in seen.tags and "g4" not in seen.tags
    assert markup.index("feature 7") < markup.index("feature 4")  # strongest first; only the 2 that fire
    assert markup.count("<tr>") == 2 and "&lt;g4&gt;" in markup
    assert D.text_features_html(["a"], torch.zeros(1, 4)) == "<p>No feature fires on this text.</p>"
    with pytest.raises(ValueError, match=r"feats must have shape \(2, d_sae\)"):
        D.text_features_html(["a", "b"], torch.zeros(3, 4))


def make_card(**overrides):
    hist = [0] * (len(HIST_EDGES) - 1)
    hist[40], hist[42] = 3, 1
    example = {"value": 2.5, "index": 7, "tokens": [5, 6, 7], "acts": [0.0, 2.5, 1.0], "centre": 1,
               "strings": ["<script>", "&", "\n"]}  # fmt: skip
    card = dict(
        layer=6, feature=12, group=1, group_range=(8, 32), n_tokens=1000, count=4, frequency=0.004, rank=3,
        d_sae=2048, max=2.5, mean_when_firing=1.5, hist=hist, edges=HIST_EDGES.tolist(), top=[example],
        sample=[example], neighbours=pd.DataFrame({"feature": [3], "cosine": [0.5], "group": [0], "frequency": [0.1]}),
        logits=pd.DataFrame({"raises": ["<b>"], "logit ↑": [1.0], "lowers": ["&lt;"], "logit ↓": [-1.0]}),
    )  # fmt: skip
    return FeatureCard(**(card | overrides))


def test_card_html_escapes_everything():
    markup = make_card()._repr_html_()
    seen = parse(markup)
    assert "script" not in seen.tags and seen.tags.count("b") == 4  # only the card's own 4 headings
    assert "&amp;lt;" in markup  # the token "&lt;" shows as those four characters
    assert "Layer 6 · feature 12 · Matryoshka group 1 (latents 8–31)" in markup
    assert "<svg" in markup and "rank 3 of 2048" in markup


def test_card_text():
    text = str(make_card())
    assert "[[&]]" in text and "<script>↵" in text.replace("[[&]]", "")
    assert "Fires on 4 of 1000 tokens (0.40%): rank 3 of 2048" in text
    assert "raises: '<b>'" in text and "3 (cos 0.50, g0)" in text
    assert "▁" in text or "█" in text


def test_histograms_show_only_the_occupied_range():
    hist = [0, 0, 4, 0, 2, 0]
    edges = [1, 2, 3, 4, 5, 6, 7]
    assert D.hist_text(hist, edges) == "3 █ ▄ 6"
    assert D.hist_svg(hist, edges).count("<rect") == 3
    assert D.hist_text([0, 0], [1, 2, 3]) == "(no activations)"


def test_card_brief_and_examples():
    card = make_card()
    brief = D.card_brief(card, n=1)
    assert brief.splitlines()[0].startswith("Layer 6 · feature 12") and brief.splitlines()[
        -1
    ].strip().startswith("2.5")
    assert len(D.card_brief(card, n=0).splitlines()) == 2
    markup = D.card_examples(card).data
    assert "Top activations" in markup and "random sample" in markup and "&lt;script&gt;" in markup
    assert "script" not in parse(markup).tags

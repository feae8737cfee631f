"""Tokens as text: whole characters in contexts (no �), and labels matplotlib can draw (no empty boxes)."""

import warnings

import matplotlib
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from saehelpers import display as D
from saehelpers import tokens

TEXT = "(«譫/ de\n𓀀Linux"  # 譫 and 𓀀 are not in Gemma's vocabulary: byte-fallback tokens
PIECES = [
    "(",
    "«",
    "<0xE8>",
    "<0xAD>",
    "<0xAB>",
    "/",
    "▁de",
    "\n",
    "<0xF0>",
    "<0x93>",
    "<0x80>",
    "<0x80>",
    "Linux",
]
DEJAVU = {"font.family": ["DejaVu Sans"]}  # matplotlib's own font: no CJK, no Bengali
CJK, BENGALI = "譫語", "বাংলা"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from saehelpers.loading import mini_model_dir

    return AutoTokenizer.from_pretrained(mini_model_dir())


@pytest.fixture(scope="module")
def ids(tok):
    ids = tok(TEXT, add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == PIECES  # the characters really are split across tokens
    assert [tok.decode([i]) for i in ids][2:5] == ["�"] * 3  # what decoding one token at a time shows
    return ids


# ---------------------------------------------------------------- finding 4: broken characters


def test_context_strings_give_each_character_to_the_token_that_completes_it(tok, ids):
    strings = tokens.context_strings(tok, ids)
    assert strings == ["(", "«", "", "", "譫", "/", " de", "\n", "", "", "", "𓀀", "Linux"]
    assert "".join(strings) == tok.decode(ids) == TEXT and not any("�" in s for s in strings)


def test_a_character_cut_by_the_context_edge_shows_its_bytes(tok, ids):
    assert tokens.context_strings(tok, ids[3:6]) == ["⟨0xAD⟩", "⟨0xAB⟩", "/"]  # its first byte is outside
    assert tokens.context_strings(tok, ids[:4]) == ["(", "«", "⟨0xE8⟩", "⟨0xAD⟩"]  # its last byte is outside


def test_token_strings_show_a_lone_byte_token_as_its_byte(tok, ids):
    assert tokens.token_strings(tok, ids[:6]) == ["(", "«", "⟨0xE8⟩", "⟨0xAD⟩", "⟨0xAB⟩", "/"]
    assert tokens.token_strings(tok, [ids[6]]) == [tok.decode([ids[6]])] == [" de"]


def test_a_partial_token_keeps_its_shade_in_html():
    markup = D.tokens_html(["", "譫"], [2.0, 1.0])
    first, second = markup.split("</span>")[:2]
    assert "rgba(255, 140, 0, 1.00)" in first and "min-width" in first and "first bytes" in first
    assert "min-width" not in second and second.endswith(">譫")


def test_card_label_names_the_character_of_a_partial_centre():
    e = {"strings": ["(", "«", "", "", "譫", "/"], "centre": 2}
    assert D._centre(e) == "part of '譫'" and D._centre(e | {"centre": 4}) == "'譫'"


# ---------------------------------------------------------------- finding 3: missing glyphs


def draw(fig):
    """Render the figure; the warnings matplotlib gave about missing glyphs."""
    FigureCanvasAgg(fig)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in seen if "Glyph" in str(w.message)]


def test_plot_label_escapes_what_the_font_cannot_draw():
    with matplotlib.rc_context(DEJAVU):
        assert D.plot_label(CJK) == "⟨U+8B6B⟩⟨U+8A9E⟩"
        assert D.plot_label(" " + BENGALI) == " ⟨U+09AC⟩⟨U+09BE⟩⟨U+0982⟩⟨U+09B2⟩⟨U+09BE⟩"
        assert D.plot_label("«ok» ⟨0xE8⟩\nx") == "«ok» ⟨0xE8⟩\nx"  # drawable text is left alone
        assert D.plot_label("$5 and $6") == r"\$5 and \$6"  # never mathtext
        assert D.plot_label("ℊ") == "⟨U+210A⟩"
    with matplotlib.rc_context({"font.family": ["DejaVu Sans", "STIXGeneral"]}):
        assert D.plot_label("ℊ") == "ℊ"  # a font later in the fallback chain has it


def test_tokens_as_tick_labels_draw_without_missing_glyphs():
    tokens = [CJK, " " + BENGALI, "$", " the", "$"]
    with matplotlib.rc_context(DEJAVU):
        fig = Figure()
        ax = fig.subplots()
        ax.set_xticks(range(len(tokens)), tokens)
        assert draw(fig)  # the raw tokens: the warnings this fix removes
        ax.set_xticks(range(len(tokens)), [D.plot_label(t) for t in tokens])
        assert draw(fig) == []
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == [
        "⟨U+8B6B⟩⟨U+8A9E⟩",
        " ⟨U+09AC⟩⟨U+09BE⟩⟨U+0982⟩⟨U+09B2⟩⟨U+09BE⟩",
    ]


def test_tree_nodes_with_cjk_and_bengali_tokens_draw_without_missing_glyphs():
    table = pd.DataFrame(
        {"parent": [0, 0], "child": [1, 2], "cosine": [0.5, 0.4], "p_parent_given_child": [0.9, 0.8]}
    )
    labels = {0: f"0 (g0, 1.0%)\non: '{CJK}'", 1: f"1 (g1, 0.5%)\non: '{BENGALI}'", 2: "2\non: part of '譫'"}
    with matplotlib.rc_context(DEJAVU):
        fig = Figure(figsize=(8, 3.6))
        ax = D.draw_tree(table, 0, labels, ax=fig.subplots())
        assert draw(fig) == []
    texts = [t.get_text() for t in ax.texts]
    assert "0 (g0, 1.0%)\non: '⟨U+8B6B⟩⟨U+8A9E⟩'" in texts
    assert "2\non: part of '⟨U+8B6B⟩'" in texts
    assert not any(c in "".join(texts) for c in CJK + BENGALI)

"""The lessons' sentences about numbers, checked on the run the learner sees.

Each test reads one lesson's own executed run (`claims.notebook`: this session's `pytest --nbmake` run of
it, or one run made now): its variables after the last cell and what its cells printed. It first names the
sentence it guards (`run.sentence(quote)` fails when the lesson no longer says it), then checks the numbers
that sentence is about, and fails when one of them is missing or 0. No test recomputes a lesson's sample or
copies one of its inputs, so a sentence cannot be false in the notebook while its test passes.
"""

import re
from collections import Counter

import claims
import numpy as np
import pytest
import torch
from claims import positive

from saehelpers import get_release

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out

# ---------------------------------------------------------------- 00: one sentence through an SAE


@pytest.fixture(scope="module")
def nb00():
    return claims.notebook("00_quickstart")


def test_00_the_most_repeated_features_sit_in_the_first_group(nb00):
    run = nb00
    run.sentence(
        "on the mini preset the two that appear most often in the table, in any of its three columns, both sit in the first group, g0"
    )
    run.sentence("which appear on one token only")
    rel, top = run.var("release"), run.var("top")
    counts = Counter(top.indices.flatten().tolist())  # the table's three columns, every token
    (a, na), (b, nb), (_, nc) = counts.most_common(3)
    assert positive(nb, "the second feature's count") > nc, counts  # two features stand out
    assert rel.group_of(a) == rel.group_of(b) == 0, (a, b)
    assert sum(c == 1 for c in counts.values()) >= 3  # specific features, on one token only


def test_00_bos_outweighs_every_other_token_and_errors_are_about_a_tenth(nb00):
    run = nb00
    run.sentence("the BOS vector's squared norm alone outweighs all the other tokens' together")
    run.sentence("the error is much the same for every token of this sentence, about a tenth of its norm")
    sq = run.var("x").float().norm(dim=-1) ** 2
    assert sq[0] > positive(sq[1:].sum().item(), "the other tokens' squared norms")
    err = np.array(run.var("rel_err")[1:])
    assert len(err) == len(run.var("tokens")) - 1 and positive(err.min(), "the smallest error")
    assert 0.05 < err.min() and err.max() < 0.2 and err.max() < 2 * np.median(err), err


def test_00_ev_rises_with_every_prefix_and_about_zero_stays_positive(nb00):
    run = nb00
    run.sentence("Explained variance rises with every group: each wider prefix rebuilds this sentence better")
    run.sentence('`about="zero"` measures from the origin instead and stays positive (the second column)')
    evs, zero = run.var("evs"), run.var("evs_zero")
    assert len(evs) == len(zero) == len(run.var("release").matryoshka_widths)
    assert all(a < b for a, b in zip(evs, evs[1:])), evs
    assert all(z > 0 for z in zero) and positive(zero[0], "the first prefix's EV about zero")
    assert f"EV {evs[-1]:6.3f} about the mean, {zero[-1]:.3f} about zero" in run.text(
        run.code_cell("evs_zero")
    )


# ---------------------------------------------------------------- 01: every layer


@pytest.fixture(scope="module")
def nb01():
    return claims.notebook("01_loading_every_layer")


def test_01_one_shared_threshold_and_l0_counts_preacts_above_it(nb01):
    run = nb01
    run.sentence("**one threshold θ, shared by every latent**")
    run.sentence(
        "So a token's L0 is simply *how many pre-activations clear the one bar θ*: nothing fixes it at k"
    )
    rel, thresholds, l0 = run.var("release"), run.var("thresholds"), run.var("l0")
    assert thresholds.unique().numel() == 1 and positive(run.var("theta"), "θ") > 0
    assert "the same as the SAE's own encode: True" in run.text(run.code_cell("pre > theta"))
    assert l0.min() < rel.k < l0.max(), l0  # varies around k, not fixed at it


def test_01_mini_decoder_rows_are_far_from_norm_one(nb01):
    run = nb01
    run.sentence("so their rows are far from norm 1 and vary from latent to latent")
    norms = run.var("norms")
    assert positive(norms.min(), "the smallest decoder norm") > 2 and norms.max() > 2 * norms.min(), norms


def test_01_ev_falls_with_depth_and_delta_loss_does_not_follow_it(nb01):
    run = nb01
    table, rel = run.var("table"), run.var("release")
    run.sentence(
        "On the mini preset the first SAE layer keeps the most variance and every later one keeps less, in order of depth"
    )
    ev = table["explained_variance"]
    assert list(table.index) == list(rel.layers) and ev.is_monotonic_decreasing and ev.is_unique, ev
    # "the first layer, with the best EV, is among the two costliest to splice in, at more than twice the cost
    # of layer 6, the cheapest"
    quote = "is among the two costliest to splice in, at more than twice the cost of layer {}, the cheapest"
    dl = table["delta_loss"]
    cheap, first = dl.idxmin(), rel.layers[0]
    run.sentence(quote.format(cheap))
    assert dl[first] >= dl.sort_values().iloc[-2] and dl[first] > 2 * positive(
        dl[cheap], "the cheapest delta loss"
    )
    run.sentence("About-zero EV sits above about-the-mean EV")
    assert (table["explained_variance_zero"] > ev).all()
    run.sentence(
        "On the mini preset CE loss recovered looks excellent at every layer, even where delta loss is large"
    )
    assert (table["ce_recovered"] > 0.9).all() and dl.max() > 0.5
    run.sentence("delta loss is above zero at every layer (on the mini preset, large at some)")
    assert (dl > 0).all()
    run.sentence("EV and delta loss need not rank the layers alike (on the mini preset they do not)")
    assert ev.rank().tolist() != (-dl).rank().tolist()


def test_01_card_ev_falls_at_every_step_from_the_middle_layers(nb01):
    """01: on the real release the card's EV "falls at every step from the middle layers to the last" (a release fact)."""
    from saehelpers.release import CARD_EXPLAINED_VARIANCE as card

    nb01.sentence("falls at every step from the middle\n  layers to the last")
    tail = card[len(card) // 2 :]
    assert len(tail) > 5 and all(a > b for a, b in zip(tail, tail[1:]))


def test_01_dead_means_not_seen_on_these_tokens(nb01):
    run = nb01
    run.sentence("on so few tokens most latents count as dead")
    run.sentence('"dead" here means "did not fire on these tokens", and it falls as\n  the sample grows')
    table, layer = run.var("table"), run.var("layer")
    on_sentence = run.var("sentence_dead")
    assert on_sentence > 0.5 and on_sentence > positive(
        table["dead_fraction"][layer], "the sweep's dead fraction"
    )
    run.sentence("The *dead* column is large on the mini preset")
    assert (table["dead_fraction"] > 0.2).all()


def test_01_l0_runs_from_a_handful_to_about_three_times_k(nb01):
    run = nb01
    run.sentence("on the mini preset, from a handful up to about three times k: the printed range")
    k, lo, top = run.var("release").k, run.var("lo"), run.var("top")
    assert lo <= k / 4 and 2.5 * k < positive(top, "the largest L0") < 3.5 * k, (lo, top)


def test_01_memory_after_the_first_sae_moves_by_about_a_hundred_mb_at_most(nb01):
    run = nb01
    run.sentence(
        "After the first\nSAE, memory goes up and down by up to about a hundred MB from layer to layer"
    )
    memory, sae_mb = run.var("memory"), run.var("sae_mb")
    steps = np.diff(memory)
    assert len(steps) == len(run.var("LAYERS")) - 1 and np.abs(steps).max() < 200, memory
    assert 0 < positive(sae_mb, "one SAE's MB") < 10  # "only a few MB (printed)"


def test_01_right_after_loading_rss_is_less_than_libraries_plus_weights(nb01):
    run = nb01
    run.sentence("So right after loading, RSS is less than the libraries plus the weights")
    out = run.text(run.code_cell("rss_before_model = "))
    weights = float(out.split("model weights")[1].split("MB")[0].replace(",", ""))
    rss = float(out.split("process RSS ")[2].split("MB")[0].replace(",", ""))
    assert rss < run.var("rss_before_model") + positive(weights, "the model's weights in MB")


def test_01_two_halves_of_the_sample_disagree_in_the_second_decimal(nb01, mini):
    """01: "two different samples of that size already disagree in the second decimal": the sweep's own two batches."""
    import saehelpers
    from saehelpers import hooks
    from saehelpers.metrics import explained_variance, token_mask

    run = nb01
    run.sentence("two different samples of that size already disagree in the second\ndecimal")
    model, tok = mini
    batches, layer = run.var("batches"), run.var("layer")
    assert len(batches) >= 2
    sae = saehelpers.load_sae(layer, "mini")
    evs = []
    for batch in batches[:2]:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        x = hooks.resid_post(model, ids, [layer], mask)[layer][token_mask(ids, mask, tok.bos_token_id)]
        with torch.no_grad():
            evs.append(explained_variance(x, sae.decode(sae.encode(x))))
    assert abs(evs[0] - evs[1]) > 0.005, evs


def test_01_busy_tokens_are_not_costlier_to_predict(nb01, mini):
    """01, Try this: "On the mini preset's held-out text they do not (the rank correlation is at most about zero at
    every layer), though at some layers the tokens that were themselves hard to predict do use more latents"."""
    import pandas as pd

    import saehelpers
    from saehelpers import hooks
    from saehelpers.metrics import token_mask

    run = nb01
    run.sentence(
        "On the mini\npreset's held-out text they do not (the rank correlation is at most about zero at every layer)"
    )
    model, tok = mini
    batches, rel = run.var("batches"), run.var("release")
    rho_at, rho_of = {}, {}
    for layer in rel.layers:
        sae = saehelpers.load_sae(layer, "mini")
        at, of = [], []
        for batch in batches:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            keep = token_mask(ids, mask, tok.bos_token_id)
            with torch.no_grad(), hooks.capture(model, [layer]) as cap:
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                l0 = (sae.encode(cap[layer]) != 0).sum(-1).float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].mT, ids[:, 1:], reduction="none")
            pair = keep[:, :-1] & keep[:, 1:]
            at.append(
                torch.stack([l0[:, :-1][pair], nll[pair]], 1)
            )  # L0 at t, loss of the prediction made at t
            of.append(torch.stack([l0[:, 1:][pair], nll[pair]], 1))  # L0 at t, loss of predicting t
        for rho, pairs in ((rho_at, at), (rho_of, of)):
            v = pd.DataFrame(torch.cat(pairs).numpy())
            rho[layer] = v[0].corr(v[1], method="spearman")
    assert all(r < 0.05 for r in rho_at.values()), rho_at
    assert max(rho_of.values()) > 0.3, rho_of


# ---------------------------------------------------------------- 02: feature cards


@pytest.fixture(scope="module")
def nb02():
    return claims.notebook("02_exploring_features")


def test_02_some_rows_broad_some_on_one_or_two_tokens(nb02):
    run = nb02
    run.sentence("some rows are shaded on most tokens")
    run.sentence("while others light up\none or two tokens")
    feats = run.var("feats")
    shown = feats.max(0).values.topk(6).indices  # display.text_features(n=6): the largest anywhere
    fires = (feats[:, shown] > 0).sum(0)
    assert positive(fires.max().item(), "the busiest row's tokens") > 0.6 * len(feats)
    assert ((fires >= 1) & (fires <= 2)).any(), fires


def test_02_group_medians_fall_and_most_firings_are_weak(nb02):
    from saehelpers.features import HIST_EDGES

    run = nb02
    run.sentence("the lines of the first groups sit further right")
    freq, rel, stats = run.var("freq"), run.var("release"), run.var("stats")
    medians = [np.median(freq[a:b]) for a, b in rel.groups]
    assert positive(medians[-1], "the last group's median") and all(
        a > b for a, b in zip(medians, medians[1:])
    )
    printed = run.text(run.code_cell("median firing frequency"))
    assert f"g0 {medians[0]:.2%}" in printed
    run.sentence("on the mini preset, about four in five of\nthose that fire 20 times or more here")
    edges = torch.as_tensor(HIST_EDGES)
    mid = (edges[:-1] * edges[1:]).sqrt()
    busy = (stats.counts >= 20).nonzero().flatten()
    assert len(busy) > 100
    weak = torch.stack([stats.hist[f][mid < stats.max[f] / 2].sum() / stats.hist[f].sum() for f in busy])
    assert 0.7 < (weak > 0.5).float().mean() < 0.9


_MARKERS = {  # words only one of the three languages uses, to tell the printed contexts apart
    "es": {"el", "los", "las", "que", "y", "como", "cuando", "mi", "lo", "por", "con", "del", "fue", "muy"},
    "fr": {"les", "des", "et", "est", "une", "pour", "dans", "qui", "du", "au", "fichiers", "système"},
    "it": {
        "il",
        "di",
        "della",
        "per",
        "che",
        "delle",
        "nomi",
        "sono",
        "gli",
        "ad",
        "dalla",
        "si",
        "tutti",
        "è",
    },
}


def _language(line: str) -> str | None:
    """The language whose marker words a printed context holds most of (None: none of them)."""
    words = line.lower().replace("|", " ").split()
    hits = {lang: sum(w in m for w in words) for lang, m in _MARKERS.items()}
    best = max(hits, key=hits.get)
    return best if hits[best] else None


def test_02_contrast_winners_are_mostly_italian_not_french(nb02):
    from saehelpers.text import read_jsonl_gz, shipped_sample_path

    run = nb02
    run.sentence(
        'On the mini preset none of the four is "French": their top contexts on held-out text are mostly *Italian*'
    )
    out = run.text(run.code_cell("for f in [*broad.index[:2], *specific.index[:2]]"))
    contexts = [line for line in out.splitlines() if re.match(r"\s+[\d.]+\s", line)]  # "  9.62  text"
    langs = Counter(_language(line) for line in contexts)
    marked = sum(n for lang, n in langs.items() if lang)
    assert len(contexts) >= 8 and positive(marked, "printed contexts in a marked language") >= 6, langs
    assert langs["it"] > marked / 2 and langs["fr"] < marked / 4, langs
    run.sentence("the held-out text holds a little more Italian than French, and more\nSpanish than either")
    chars = Counter()
    for doc in read_jsonl_gz(shipped_sample_path()):  # the held-out text the cards read
        chars[doc["lang"]] += len(doc["text"])
    assert chars["es"] > chars["it"] > chars["fr"] > 0.8 * chars["it"], chars


# ---------------------------------------------------------------- 03: steering


@pytest.fixture(scope="module")
def nb03():
    return claims.notebook("03_steering")


def _repeats(texts, word, times=3):
    """Whether one of the texts holds `word` `times` times in a row."""
    return any(" ".join([word] * times) in t for t in texts)


def test_03_04_the_edited_layer_is_the_topmost_on_mini_and_three_quarters_up_on_the_real_release(nb03):
    run = nb03
    run.sentence("on the mini preset, with SAEs at only a few layers, it is the topmost\none")
    rel, layer = run.var("release"), run.var("layer")
    assert layer == rel.layers[-1] and len(rel.layers) > 1
    run.sentence("on the real release that is\nabout three quarters of the way up the model")
    real = get_release("gemma-3-1b")
    at = real.layers[len(real.layers) * 3 // 4]
    assert 0.65 < at / real.n_model_layers < 0.8


def test_03_residual_norm_is_mostly_the_shared_mean_and_bos_is_far_out(nb03):
    run = nb03
    run.sentence("(on the mini preset it does: see the plot below)")
    norm_x, spread_x = run.var("norm_x").float(), run.var("spread_x").float()
    assert norm_x.median() > 2 * positive(spread_x.median().item(), "the median spread")
    run.sentence("On the mini preset it is wide, and BOS sits far\nto the right of every other token")
    assert run.var("bos_norm") > 2 * norm_x.max()


def test_03_sweep_effect_starts_then_breaks_into_repetition_and_the_loss_misses_the_break(nb03):
    run = nb03
    s = run.var("sweep").set_index("m")
    texts, m_best, multiples = run.var("sweep_texts"), run.var("m_best"), run.var("MULTIPLES")
    act = s["activation read back"] / positive(run.var("max_act"), "a_max")
    loss, distinct = s["loss (nats/token)"], s["distinct words"]
    i = multiples.index(m_best)
    m_next = multiples[i + 1]
    run.sentence("at $m \\le 0.5$\nnothing much happens, and the read-back activation stays near 0")
    assert (act[act.index <= 0.5] < 0.05).all(), act
    run.sentence("Within one step the text turns French and the\nread-back activation rises, with the loss")
    assert 0.5 < m_best <= 2 and act[m_best] > 0.3 and loss[m_best] > loss[0] + 1, s
    sweet = " ".join(texts[m_best]).split()
    assert sum(w in sweet for w in ("la", "de", "très", "un", "les", "à", "le", "et")) >= 3, texts[m_best]
    run.sentence("One or two steps past the sweet spot the text breaks into repetition")
    assert distinct[multiples[i + 2]] < run.var("REPEAT") * distinct[0]
    assert act[act.index > m_best].max() < act[m_best]  # "the read-back activation falls"
    run.sentence('("levo levo levo …", and by m = 4 "bienvenue plus bienvenue plus …")')
    assert _repeats(texts[m_next], "levo") and _repeats(texts[4], "bienvenue plus"), (texts[m_next], texts[4])
    run.sentence(
        "at the first step past the sweet spot it is\nlower than at the sweet spot, though the text is worse"
    )
    assert loss[m_next] < loss[m_best] and distinct[m_next] < distinct[m_best]


def test_03_read_back_starts_at_three_quarters_of_a_spread_and_past_one_it_breaks(nb03):
    run = nb03
    run.sentence(
        "on the mini preset the feature starts to read back at\nabout three quarters of a spread, and the text breaks into repetition past one"
    )
    s = run.var("sweep").set_index("m")
    act = s["activation read back"] / run.var("max_act")
    push, distinct = s["push / spread"], s["distinct words"]
    starts = act.index[act > 0.1].min()  # the first multiple with a real effect
    assert 0.6 < positive(push[starts], "the push where the read-back starts") < 0.9, push
    repetitive = distinct.index[distinct < run.var("REPEAT") * distinct.iloc[0]].min()
    assert push[repetitive] > 1.0 and push[run.var("m_best")] <= 1.0, (push, distinct)


def test_03_clamp_holds_the_feature_at_c_where_adding_lifts_it(nb03):
    run = nb03
    run.sentence(
        "adding lifts it further, to about its own value plus $c$,\nwhile clamping holds it at $c$; clamp to 0 sets it to 0 everywhere"
    )
    edited, c = run.var("edited"), run.var("max_act")
    clean, added, clamped, zero = edited.values()  # clean, add, clamp to c, clamp to 0 (the cell's order)
    on = clean > 1  # where it fires by itself
    assert positive(on.sum().item(), "tokens where the feature fires by itself") >= 3
    assert ((added - clean - c)[on].abs() < 0.2 * c).all(), (added - clean)[on]
    assert ((clamped - c).abs() < 0.15 * c).all() and (zero == 0).all()


def test_03_clamp_matches_add_at_the_sweet_spot_then_both_break(nb03):
    run = nb03
    t, m_best = run.var("clamp_texts"), run.var("m_best")
    multiples = run.var("MULTIPLES")
    m_next = multiples[multiples.index(m_best) + 1]
    run.sentence("at the sweet spot the two texts start alike and part after a few words")
    added, clamped = t[f"add, m = {m_best:g}"], t[f"clamp, m = {m_best:g}"]
    assert all(a.split()[0] == c.split()[0] for a, c in zip(added, clamped)) and added != clamped
    run.sentence("Clamping costs less loss")
    table = run.var("add_vs_clamp")
    assert table.loc[(m_best, "clamp"), "loss (nats/token)"] < table.loc[(m_best, "add"), "loss (nats/token)"]
    run.sentence('One step\nfurther both break into the same repetition on one prompt ("levo levo levo …")')
    assert _repeats(t[f"add, m = {m_next:g}"], "levo") and _repeats(t[f"clamp, m = {m_next:g}"], "levo")
    run.sentence("clamping is at most a little\nmore varied (the distinct-words column)")
    gap = table.loc[(m_next, "clamp"), "distinct words"] - table.loc[(m_next, "add"), "distinct words"]
    assert 0 <= gap < 0.1, gap


def test_03_numbers_win_over_french_when_both_are_added(nb03):
    run = nb03
    run.sentence(
        "On the mini preset the numbers feature wins outright: the combined texts\nare runs of digits"
    )
    reads_back, texts = run.var("reads_back"), run.var("combo_texts")
    (fr, num), _ = reads_back["French + numbers"]
    (fr0, num0), _ = reads_back["French"]
    assert fr < positive(fr0, "French read back on the French texts") / 2 and num > num0
    both = "".join(texts["French + numbers"])
    assert sum(ch.isdigit() for ch in both) > len(both) / 3, both


def test_03_lower_layers_french_features_write_other_text_than_the_top_layers(nb03):
    run = nb03
    by_layer, layer = run.var("by_layer"), run.var("layer")
    run.sentence("On the mini preset they do not: only the topmost SAE layer writes French")
    top = by_layer.loc[layer]
    lower = by_layer.drop(index=layer)
    assert len(lower) >= 2
    run.sentence("more weakly than the topmost one (a quarter to a half of its\nread-back)")
    own = lower["own read back / its a_max"] / positive(
        top["own read back / its a_max"], "the top layer's read-back"
    )
    assert own.between(0.2, 0.55).all(), own
    run.sentence("yet the one ruler reads almost nothing")
    assert (lower["French read back / a_max"] < 0.05).all() and (
        lower["French read back / a_max"] < top["French read back / a_max"] / 5
    ).all()


_FRENCH_WORDS = {
    " toujours",
    " même",
    " aussi",
    " également",
    " plusieurs",
    " quels",
    " quelque",
    " quoi",
    " tout",
    " là",
}


def test_03_the_french_feature_reads_dutch_and_digits_and_writes_french(nb03):
    run = nb03
    run.sentence(
        "On held-out text the feature fires on Dutch\nmanual-page lines and on digits in dialogue, not on French"
    )
    card = run.var("card")
    assert card.feature == run.var("feature")
    top = ["".join(e["strings"]) for e in card.top]
    dutch = [
        t for t in top if {"uit", "uit]", "[uit]", "de", "elke", "worden"} & set(t.replace("[", " ").split())
    ]
    digits = [t for t in top if any(ch.isdigit() for ch in t)]
    assert positive(len(dutch), "Dutch top contexts") >= len(top) / 2 and digits, top
    french = [
        t for t in top if {"le", "la", "les", "est", "une", "très", "je", "nous"} & set(t.lower().split())
    ]
    assert not french, french
    run.sentence("Only its logit\nlens is French (' toujours', ' même', ' aussi', ...)")
    lens = set(card.logits["raises"])
    assert len(lens & _FRENCH_WORDS) >= 4, lens


def test_03_coarse_feature_is_broad_and_english_and_the_fine_one_never_fired(nb03):
    run = nb03
    t = run.var("coarse_fine")
    coarse, fine = t.loc["coarse"], t.loc["fine"]
    french_col = next(c for c in t.columns if c.startswith("French ("))
    run.sentence("On the mini preset the coarse feature fires on nearly half of all held-out tokens")
    assert coarse["group"] == 0 and 0.4 < coarse["fires on (held-out share)"] < 0.5
    run.sentence('Its logit lens\nis English ("an", "particular", "actual")')
    assert {" an", " particular", " actual"} <= set(coarse["logit lens"])
    run.sentence("the text reads it back, and the main French feature does not")
    assert coarse["own activation read back / a_max"] > 0.2 and coarse[french_col] < 0.05
    texts, plain = run.var("texts"), run.var("plain")
    assert texts["coarse"] != plain and "".join(texts["coarse"]).isascii()  # changed, and still English
    run.sentence(
        "The fine feature did not fire on a single held-out token of the\nstatistics (its share is 0)"
    )
    assert fine["group"] == len(run.var("release").groups) - 1 and fine["fires on (held-out share)"] == 0
    assert run.var("stats").counts[int(fine["feature"])] == 0
    run.sentence("Its logit lens is not French either (tokens of\nother scripts)")
    assert not set(fine["logit lens"]) & _FRENCH_WORDS and not all(w.isascii() for w in fine["logit lens"])
    run.sentence("Pushed alone, it changes the English text and writes no French; it does not even read back")
    assert (
        texts["fine"] != plain and fine["own activation read back / a_max"] < 0.05 and fine[french_col] < 0.05
    )


# ---------------------------------------------------------------- 04: ablation


@pytest.fixture(scope="module")
def nb04():
    return claims.notebook("04_ablation")


def test_04_every_prompt_is_right_before_it_is_measured(nb04):
    run = nb04
    run.sentence("Check the last column: every number should be positive")
    assert (run.var("clean_diff") > 0).all() and positive(run.var("clean"), "the clean m") > 0


def test_04_candidates_broad_and_narrow_and_the_first_groups_fire_more(nb04):
    run = nb04
    rel, stats, candidates, at_last = (
        run.var("release"),
        run.var("stats"),
        run.var("candidates"),
        run.var("at_last"),
    )
    run.sentence(
        "Look for candidates that are active on several kinds of prompt and others active on one kind only"
    )
    kinds = torch.stack(
        [(at_last[i : i + 2, candidates] > 0).any(0) for i in (0, 2, 4)]
    )  # cities, brackets, numbers
    n_kinds = kinds.sum(0)
    assert (n_kinds >= 2).any() and (n_kinds == 1).any(), n_kinds
    run.sentence(
        "every candidate of\nthe first two groups fires on a larger share of held-out tokens than any of the later groups"
    )
    freq = {f: stats.frequency[f].item() for f in candidates}
    early = [freq[f] for f in candidates if rel.group_of(f) <= 1]
    later = [freq[f] for f in candidates if rel.group_of(f) > 1]
    assert early and later and min(early) > max(later), freq


def test_04_set_ablation_costs_a_little_more_than_the_sum_of_single_effects(nb04):
    run = nb04
    run.sentence("the measured line follows the dashed one for the first two features and then runs below it")
    run.sentence("candidates cost a little more than their single effects add up to")
    together, singles = np.array(run.var("together")), run.var("singles")
    gaps = together - singles  # below 0: removed together they cost more than the sum
    assert len(gaps) == len(run.var("candidates")) >= 4
    assert (np.abs(gaps[:2]) < 0.02).all() and (gaps[2:] < -0.02).all(), gaps
    assert np.abs(gaps).max() < 0.1 * positive(
        np.abs(together).max(), "the largest change"
    )  # small next to it


def test_04_zero_and_mean_ablation_differ_most_where_the_prediction_leans_not_where_it_fires(nb04):
    run = nb04
    run.sentence("the candidate that fires most\noften (with the largest mean) barely differs")
    run.sentence(
        "the largest printed difference belongs to the candidate whose\nremoval costs the most, though it fires on few tokens"
    )
    zero, mean, stats = run.var("zero"), run.var("mean"), run.var("stats")
    candidates = run.var("candidates")
    diff = (zero - mean).abs()
    freq = {f: stats.frequency[f].item() for f in candidates}
    biggest = diff.idxmax()
    assert biggest == zero.abs().idxmax() and positive(diff[biggest], "the largest difference") > 0
    assert freq[biggest] < np.median(list(freq.values())), freq
    busiest = max(freq, key=freq.get)
    assert stats.mean[busiest] == stats.mean[candidates].max() and diff[busiest] < diff[biggest] / 2, diff


def test_04_smaller_prefix_raises_the_loss_and_lowers_m_at_every_step(nb04):
    run = nb04
    run.sentence("As the prefix shrinks, expect both\nloss lines to rise and $m$ to fall")
    run.sentence("on the mini preset they do,\nat every step")
    prefixes = run.var("prefixes")
    assert prefixes["error term"].nunique() == 2
    for _, part in prefixes.groupby("error term"):
        part = part.sort_values("prefix width kept")
        assert len(part) == len(run.var("release").matryoshka_widths)
        assert part["loss"].is_monotonic_decreasing and part["loss"].is_unique, part
        assert part["m"].is_monotonic_increasing and part["m"].is_unique, part


def test_04_attribution_ranks_worse_at_the_earliest_layer_and_size_does_not_predict_the_miss(nb04):
    run = nb04
    run.sentence("on the mini preset the estimate ranks the features worse at the earliest layer")
    rho, rho_early = run.var("rho"), run.var("rho_early")
    assert rho_early < rho and positive(rho, "the rank correlation at the notebook's layer") > 0
    run.sentence("on the mini preset it is weak (printed)")
    misses = run.var("misses")
    assert len(misses) == run.var("N_TOP")
    assert abs(misses["miss"].rank().corr(misses["total activation"].rank())) < 0.5


# ---------------------------------------------------------------- 05: Matryoshka prefixes


@pytest.fixture(scope="module")
def nb05():
    return claims.notebook("05_matryoshka_prefixes")


def test_05_small_prefix_fair_then_diminishing_and_deeper_is_harder_at_full_width(nb05):
    run = nb05
    ev, prefixes, rel = run.var("ev"), run.var("prefixes"), run.var("release")
    assert list(ev.index) == list(run.var("LAYERS")) and list(ev.columns) == list(rel.matryoshka_widths)
    run.sentence(
        "the first, tiny prefix already explains a fifth to nearly a third of the variance on its own"
    )
    assert ev.iloc[:, 0].between(0.18, 0.34).all(), ev.iloc[:, 0]
    run.sentence(f"with\n{rel.matryoshka_widths[0] / rel.d_sae:.1%} of the latents")
    run.sentence("Past the second group, each further group, four times wider, adds less than the one before")
    gains = ev.diff(axis=1).iloc[:, 1:].to_numpy()  # what each group after the first adds
    assert (gains > 0).all() and (gains[:, 1:-1] > gains[:, 2:]).all(), gains
    assert "EV rises with every group on every layer: True" in run.text(
        run.code_cell("EV rises with every group")
    )
    run.sentence(
        "At full width the first layers are the easiest to reconstruct and the last two the\nhardest, about equally (within 0.02 here)"
    )
    a, b, c, d = ev.iloc[:, -1].tolist()  # in layer order
    assert a > b > max(c, d) and abs(c - d) < 0.02, (a, b, c, d)
    run.sentence("at the smallest widths the order is not that clean")
    assert not ev.iloc[:, 0].is_monotonic_decreasing
    run.sentence("about zero, even the smallest prefix scores above 0.85 on the mini preset")
    zero = prefixes[prefixes.width == rel.matryoshka_widths[0]].ev_zero
    assert len(zero) == len(ev) and ((zero > 0.85) & (zero < 1)).all(), zero


def test_05_loss_falls_with_every_width_not_diminishing_and_not_in_proportion_to_ev(nb05):
    run = nb05
    dl, ev = run.var("dl"), run.var("ev")
    run.sentence("the loss increase falls with every width, like the unexplained variance")
    assert (dl.diff(axis=1).iloc[:, 1:] < 0).all().all(), dl
    assert positive(dl.iloc[:, -1].min(), "the smallest full-width loss increase") > 0
    run.sentence(
        "compare two layers at full width, and the one that leaves out less variance can cost the model more loss"
    )
    full_ev, full_dl = ev.iloc[:, -1], dl.iloc[:, -1]
    assert any(full_ev[a] > full_ev[b] and full_dl[a] > full_dl[b] for a in dl.index for b in dl.index)
    run.sentence(
        "explained variance rises with every group, with\n  diminishing returns past the second group, and the loss increase falls with every group, on every layer"
    )
    drops = -dl.diff(axis=1).iloc[:, 1:].to_numpy()  # what each group after the first takes off the loss
    # the loss's drops do not shrink group by group (the summary claims no diminishing returns for the loss)
    assert not (drops[:, 1:] < drops[:, :-1]).all(), drops


def test_05_first_groups_fire_most_and_take_a_large_share_of_firings(nb05):
    run = nb05
    by_group, rel = run.var("by_group"), run.var("release")
    run.sentence("the median (black bar) falls from group to group")
    med = by_group["median"]
    assert len(med) == len(rel.groups) and med.is_monotonic_decreasing and med.is_unique, med
    w = rel.matryoshka_widths[1]
    run.sentence(
        f"the first two groups, {w / rel.d_sae:.1%} of the latents on the mini preset, take about a quarter"
    )
    share = by_group["share_of_firings"].iloc[:2].sum()
    assert 0.18 < share < 0.32, share


def test_05_tree_score_is_cosine_times_p_parent(nb05):
    run = nb05
    run.sentence("The table's `score` is the product $\\cos(d_p, d_c) \\cdot P(p \\mid c)$")
    tree = run.var("tree")
    assert positive(len(tree), "parent-child pairs") and np.allclose(
        tree.score, tree.cosine * tree.p_parent_given_child
    )
    assert (tree.cosine >= 0.2).all() and (tree.p_parent_given_child >= 0.5).all()  # the cell's thresholds


# ---------------------------------------------------------------- 06: the toy hierarchy


@pytest.fixture(scope="module")
def nb06():
    return claims.notebook("06_toy_hierarchy")


def test_06_matryoshka_avoids_absorption_only_for_first_group_parents(nb06):
    run = nb06
    tables = run.var("tables")
    plain, nested = tables["plain"], tables["Matryoshka"]
    run.sentence(
        "in the plain SAE some parent latents stay silent on a large share of the samples where a child is\npresent"
    )
    assert (plain.absorption > 0.1).any(), plain
    run.sentence(
        "a parent whose latent sits in the first group fires on every child sample (absorption\nnear 0) and leans a little toward its children (cosine below 1: hedging)"
    )
    first, later = nested[nested.group == 0], nested[nested.group > 0]
    assert len(first) >= 1 and (first.absorption < 0.02).all() and (first.cosine < 0.98).all(), nested
    run.sentence("its children's latents are purer than\nthe plain SAE's")
    for p in first.index:
        if plain.absorption[p] > 0.1:
            assert nested.child_cosine[p] > plain.child_cosine[p]
    run.sentence("that parent is then absorbed as in the plain SAE, and the right plot turns around for it")
    assert len(later) >= 1, nested  # the seeded run shows both cases
    for p in later.index:
        assert nested.absorption[p] > 0.1
        if plain.absorption[p] < 0.02:
            assert plain.child_cosine[p] > nested.child_cosine[p]
    run.sentence("nesting makes absorption costly, it does not forbid it")
    assert 0 < positive(nested.absorption.mean(), "the Matryoshka mean absorption") < plain.absorption.mean()


def test_06_hierarchy_misses_absorbed_families_and_mostly_finds_first_group_ones(nb06):
    run = nb06
    check = run.var("check")
    run.sentence("The discovery does **not** recover every planted family here")
    assert 0 <= check.recovered.sum() < len(check) and len(check) >= 2
    run.sentence(
        "a parent whose latent the Matryoshka SAE put in a later group is not among the parents the discovery starts\n  from (the first group), so none of its children are found"
    )
    run.sentence("the children found are mostly its true children")
    for _, row in check.iterrows():
        truth, got = set(row["latents of its true children"]), set(row["children found"])
        if row["group"] > 0:
            assert not got, row
        else:
            assert len(truth & got) >= 2, row
    found = run.var("found")
    assert positive(len(found), "pairs found") and (found.p_parent_given_child > 0.5).all()


def test_06_most_true_features_have_a_latent_on_the_diagonal(nb06):
    run = nb06
    run.sentence("so a perfect\ndictionary is a bright diagonal of cosines near 1")
    printed = run.text(run.code_cell("def best_match("))
    m = re.search(r"(\d+) of (\d+) features have a latent at cosine > 0.9", printed)
    assert m, printed
    assert positive(int(m.group(1)), "features matched at cosine > 0.9") >= 0.5 * int(m.group(2))


def test_06_a_feature_no_latent_learned_is_a_blank_row(nb06):
    run = nb06
    run.sentence("A row whose diagonal square is\nblank is a true feature that no latent learned")
    cos, matched = run.var("cos"), run.var("matched")  # the last heatmap drawn: the Matryoshka SAE's
    assert cos.shape == (len(matched), len(matched))
    blank = np.abs(np.diag(cos)) < 0.1
    assert blank.any() and len(set(matched)) < len(matched), (np.diag(cos), matched)

"""Hostile input across the public API: a ValueError that says what is valid, nothing silent, no HTML injection.

Every case in CASES must raise ValueError (never a raw TypeError / IndexError / ... from torch, pandas,
tokenizers or Python) whose message matches a pattern naming what is valid, and leave the model clean:
no saehelpers hook left, and the same logits on a fixed prompt as before any case ran.
"""

import copy
import dataclasses
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch

import saehelpers
from saehelpers import (
    ablation,
    activations,
    cards,
    display,
    features,
    hooks,
    lm,
    matryoshka,
    metrics,
    steering,
    text,
    tokens,
    toy,
    widgets,
)
from saehelpers.checks import check_finite

LAYER = 6
PROMPT = "The capital of France is"
NAN, INF = float("nan"), float("inf")
VOCAB = r"0\.\.262143"


@pytest.fixture(scope="module")
def w(mini):
    """Everything a case may need: the mini model, tokenizer, layer-6 SAE (float32), its release, and bad twins."""
    model, tok = mini
    rel = saehelpers.get_release("mini")
    sae = saehelpers.load_sae(LAYER, "mini", dtype="float32")
    far = copy.deepcopy(sae)  # an SAE for a layer the model does not have
    far.cfg.metadata.hook_name = "blocks.30.hook_resid_post"
    wide = dataclasses.replace(
        rel, d_sae=2 * rel.d_sae, matryoshka_widths=(*rel.matryoshka_widths[:-1], 2 * rel.d_sae)
    )
    task = ablation.make_task(tok, [(PROMPT, " Paris", " London")])
    batches = [next(text.token_batches(tok, "mini", batch_size=1, seq_len=16, n_batches=1))]
    return dataclasses.make_dataclass(
        "World", ["model", "tok", "sae", "rel", "far", "wide", "task", "batches"]
    )(model, tok, sae, rel, far, wide, task, batches)


def logits_of(model, tok) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tok(PROMPT, return_tensors="pt").input_ids).logits


@pytest.fixture(scope="module")
def clean_logits(w):
    return logits_of(w.model, w.tok)


def run(result):
    """Make a call do its work: enter a context manager (run nothing in it), or take an iterator's first item."""
    if hasattr(result, "__enter__"):
        with result:
            pass
    elif isinstance(result, Iterator):
        next(result, None)
    return result


def nan_vec(n=640):
    return torch.full((n,), NAN)


# (id, call, pattern the ValueError's message must match)
CASES = [
    # ---- layers: negative, float, bool, tensors, beyond the model, a string for a list
    ("layer-negative", lambda w: saehelpers.load_sae(-1, "mini"), r"No SAE for layer -1 .*layers 2, 6, 10, 14"),
    ("layer-float", lambda w: saehelpers.load_sae(6.0, "mini"), r"layer must be an int, got 6\.0 \(float\)"),
    ("layer-bool", lambda w: saehelpers.load_sae(True, "mini"), r"layer must be an int, got True \(bool\)"),
    ("layer-2-element-tensor", lambda w: saehelpers.load_sae(torch.tensor([6, 10]), "mini"), r"layer must be an int"),
    ("layer-0d-float-tensor", lambda w: saehelpers.load_sae(torch.tensor(6.0), "mini"), r"layer must be an int"),
    ("layer-numpy-out-of-range", lambda w: saehelpers.load_sae(np.int64(99), "mini"), r"No SAE for layer 99 .*layers 2, 6, 10, 14"),
    ("layer-beyond-model", lambda w: hooks.capture(w.model, [18]), r"an int in 0\.\.17 .*18 decoder layers"),
    ("layers-as-string", lambda w: hooks.capture(w.model, "14"), r"layers must be an int or a list of ints in 0\.\.17.*'14'"),
    ("steer-at-layer-99", lambda w: steering.steer(w.model, 99, torch.zeros(640), 1.0), r"0\.\.17"),
    ("resid-norms-layer-negative", lambda w: steering.resid_norms(w.model, -1, w.batches), r"0\.\.17 .*got -1"),
    ("iter-saes-string", lambda w: saehelpers.iter_saes("14", preset="mini"), r"layers.*'14'"),
    ("iter-saes-empty-list", lambda w: saehelpers.iter_saes([], preset="mini"), r"at least one layer"),
    # ---- features: negative, float, bool, tensors, out of range, none
    ("feature-negative", lambda w: steering.steer(w.model, w.sae, -1, 1.0), r"Feature -1 is out of range.*0\.\.2047"),
    ("feature-float", lambda w: steering.steer(w.model, w.sae, 3.0, 1.0), r"feature id must be an int in 0\.\.2047, got 3\.0 \(float\)"),
    ("feature-numpy-out-of-range", lambda w: steering.steer(w.model, w.sae, np.int64(5000), 1.0), r"Feature 5000 is out of range.*0\.\.2047"),
    ("feature-bool", lambda w: steering.clamp(w.model, w.sae, True, 1.0), r"feature id must be an int in 0\.\.2047, got True"),
    ("feature-0d-float-tensor", lambda w: ablation.ablate(w.model, w.sae, torch.tensor(2.0)), r"feature id must be an int in 0\.\.2047, got 2\.0"),
    ("feature-2-element-tensor", lambda w: cards.neighbours(w.sae, torch.tensor([1, 2])), r"feature id must be an int in 0\.\.2047"),
    ("feature-beyond-width", lambda w: ablation.true_effects(w.model, w.sae, w.task, [2048], progress=False), r"Feature 2048 is out of range.*0\.\.2047"),
    ("features-empty", lambda w: steering.read_back(w.model, w.tok, w.sae, [], PROMPT, " Paris"), r"No features given.*0\.\.2047"),
    ("feature-not-in-feats", lambda w: display.text_features_html(["a"], torch.ones(1, 4), features=[9]), r"Feature 9 is out of range.*0\.\.3"),
    ("feature-stats-negative", lambda w: features.FeatureStats(4).top(-1), r"Feature -1 is out of range.*0\.\.3"),
    # ---- Matryoshka widths and groups
    ("width-not-a-boundary", lambda w: ablation.ablate_outside(w.model, w.sae, w.rel, 3), r"not a Matryoshka group boundary.*\[8, 32, 128, 512, 2048\]"),
    ("width-bool", lambda w: ablation.ablate_outside(w.model, w.sae, w.rel, True), r"prefix width must be an int.*\[8, 32, 128, 512, 2048\]"),
    ("width-0d-float-tensor", lambda w: ablation.ablate_outside(w.model, w.sae, w.rel, torch.tensor(8.0)), r"prefix width must be an int.*\[8, 32, 128, 512, 2048\]"),
    ("width-nan", lambda w: matryoshka.check_width(w.rel, NAN), r"prefix width must be an int"),
    ("group-negative", lambda w: ablation.ablate_group(w.model, w.sae, w.rel, -1), r"group must be an int in 0\.\.4, got -1"),
    ("group-numpy-float", lambda w: ablation.ablate_group(w.model, w.sae, w.rel, np.float64(1.0)), r"group must be an int in 0\.\.4"),
    # ---- top-k, n and other counts
    ("changes-n-negative", lambda w: ablation.token_changes(w.tok, torch.zeros(10), torch.zeros(10), n=-1), r"n must be an int in 1\.\.10, got -1"),
    ("changes-n-float", lambda w: ablation.token_changes(w.tok, torch.zeros(10), torch.zeros(10), n=2.0), r"n must be an int in 1\.\.10, got 2\.0"),
    ("text-features-n-negative", lambda w: display.text_features_html(["a"], torch.ones(1, 4), n=-1), r"n must be an int >= 1, got -1"),
    ("lens-k-zero", lambda w: lm.logit_lens(w.model, w.sae.W_dec[0], k=0), r"k must be an int in 1\.\.262144"),
    ("neighbours-n-bool", lambda w: cards.neighbours(w.sae, 3, n=True), r"n must be an int in 1\.\.2047, got True \(bool\)"),
    ("neighbours-n-too-many", lambda w: cards.neighbours(w.sae, 3, n=2048), r"n must be an int in 1\.\.2047"),
    ("stats-n-tokens-float", lambda w: features.feature_stats(w.model, w.tok, w.sae, w.rel, n_tokens=1.5, cache=False, progress=False), r"n_tokens must be an int >= 1, got 1\.5"),
    ("batches-batch-size-float", lambda w: text.token_batches(w.tok, "mini", batch_size=1.5), r"batch_size must be an int >= 1, got 1\.5"),
    ("batches-n-batches-negative", lambda w: text.token_batches(w.tok, "mini", n_batches=-1), r"n_batches must be an int >= 1, got -1"),
    ("texts-limit-negative", lambda w: text.iter_texts("mini", limit=-1), r"limit must be an int >= 0, got -1"),
    ("text-batches-size-zero", lambda w: tokens.text_batches(w.tok, ["hi"], batch_size=0), r"batch_size must be an int >= 1, got 0"),
    ("max-new-tokens-absurd", lambda w: steering.generate(w.model, w.tok, PROMPT, 10**9), r"max_new_tokens must be an int in 1\.\.32768"),
    ("seed-float", lambda w: steering.generate(w.model, w.tok, PROMPT, 2, do_sample=True, seed=1.5), r"seed must be an int >= 0, got 1\.5"),
    ("toy-seed-float", lambda w: toy.make_toy(seed=1.5), r"seed must be an int >= 0, got 1\.5"),
    ("toy-d-zero", lambda w: toy.make_toy(d=0), r"d must be an int >= 1, got 0"),
    ("hierarchy-top-k-negative", lambda w: matryoshka.hierarchy(w.sae, w.rel, torch.zeros(4, 2048), top_k=-1), r"top_k must be an int >= 1"),
    ("hierarchy-top-k-float", lambda w: matryoshka.hierarchy(w.sae, w.rel, torch.zeros(4, 2048), top_k=1.5), r"top_k must be an int >= 1"),
    # ---- coefficients, values, thresholds: NaN, inf, absurd
    ("coef-nan", lambda w: steering.steer(w.model, w.sae, 3, NAN), r"coef must be finite"),
    ("coef-absurd", lambda w: steering.steer(w.model, w.sae, 3, 1e30), r"coef must be a finite number in -1e\+06\.\.1e\+06, got 1e\+30"),
    ("clamp-value-inf", lambda w: steering.clamp(w.model, w.sae, 3, INF), r"value must be finite"),
    ("clamp-value-absurd", lambda w: steering.clamp(w.model, w.sae, 3, -1e30), r"value must be a finite number in -1e\+06\.\.1e\+06"),
    ("top-p-nan", lambda w: steering.generate(w.model, w.tok, PROMPT, 2, do_sample=True, top_p=NAN), r"top_p must be finite"),
    ("temperature-nan-greedy", lambda w: steering.generate(w.model, w.tok, PROMPT, 2, temperature=NAN), r"temperature must be finite"),
    ("means-nan", lambda w: ablation.ablate(w.model, w.sae, 3, means=nan_vec(2048)), r"means contains NaN or inf"),
    ("vector-inf", lambda w: steering.steer(w.model, LAYER, torch.full((640,), INF), 1.0), r"vector contains NaN or inf"),
    ("logits-nan", lambda w: ablation.token_changes(w.tok, torch.full((10,), NAN), torch.zeros(10)), r"clean_logits contains NaN or inf"),
    ("lens-direction-nan", lambda w: cards.lens_table(w.model, w.tok, nan_vec()), r"direction contains NaN or inf"),
    ("lens-direction-shape", lambda w: cards.lens_table(w.model, w.tok, torch.zeros(3)), r"direction must have shape \(640,\)"),
    ("logit-lens-nan", lambda w: lm.logit_lens(w.model, nan_vec()), r"NaN or inf"),
    ("logit-lens-shape", lambda w: lm.logit_lens(w.model, torch.zeros(3)), r"shape"),
    ("toy-probability-nan", lambda w: toy.make_toy(p_parent=NAN), r"p_parent must be finite \(a finite number in 0\.\.1\)"),
    ("dense-threshold-nan", lambda w: metrics.dense_fraction(torch.tensor([1, 2]), 10, NAN), r"threshold must be finite"),
    ("ce-recovered-nan", lambda w: metrics.ce_loss_recovered(2.0, NAN, 4.0), r"spliced must be finite"),
    ("hierarchy-min-cosine-nan", lambda w: matryoshka.hierarchy(w.sae, w.rel, torch.zeros(4, 2048), min_cosine=NAN), r"min_cosine must be finite"),
    ("hierarchy-min-p-parent-nan", lambda w: matryoshka.hierarchy(w.sae, w.rel, torch.zeros(4, 2048), min_p_parent=NAN), r"min_p_parent must be finite"),
    ("hierarchy-min-child-fires-nan", lambda w: matryoshka.hierarchy(w.sae, w.rel, torch.zeros(4, 2048), min_child_fires=NAN), r"min_child_fires must be an int"),
    ("css-act-nan", lambda w: display.tokens_html(["a"], [NAN]), r"acts\[0\] must be finite"),
    ("css-act-inf", lambda w: display.tokens_html(["a", "b"], [INF, 1.0]), r"acts\[0\] must be finite"),
    ("css-vmax-nan", lambda w: display.token_span("a", 1.0, NAN), r"vmax must be finite"),
    ("css-feats-nan", lambda w: display.text_features_html(["a"], torch.full((1, 4), NAN)), r"feats contains NaN or inf"),
    # ---- token ids
    ("token-id-negative", lambda w: steering.lens_probability(w.model, w.tok, PROMPT, " Paris", [-1]), rf"token_ids holds -1, which is no token: token ids are ints in {VOCAB}"),
    ("token-id-beyond-vocab", lambda w: steering.lens_probability(w.model, w.tok, PROMPT, " Paris", [10**9]), rf"holds 1000000000, which is no token.*{VOCAB}"),
    ("token-id-float", lambda w: steering.lens_probability(w.model, w.tok, PROMPT, " Paris", [1.5]), rf"token_ids must be a list of token ids.*{VOCAB}"),
    ("token-strings-negative", lambda w: tokens.token_strings(w.tok, [5, -1]), rf"ids holds -1, which is no token.*{VOCAB}"),
    # ---- texts: empty, not strings, lone surrogates, one bad item in a list
    ("prompt-empty", lambda w: steering.generate(w.model, w.tok, "", 2), r"prompts\[0\] is '' \(str\): every text must be a non-empty string"),
    ("prompt-lone-surrogate", lambda w: steering.generate(w.model, w.tok, "a\ud800", 2), r"prompts\[0\] holds '\\ud800' at index 1.*surrogate"),
    ("prompts-an-int", lambda w: steering.generate(w.model, w.tok, 5, 2), r"prompts must be a string or a list of strings, got 5 \(int\)"),
    ("prompts-one-none", lambda w: steering.generate(w.model, w.tok, ["fine", None], 2), r"prompts\[1\] is None \(NoneType\)"),
    ("read-back-prompts-int", lambda w: steering.read_back(w.model, w.tok, w.sae, 3, 5, " x"), r"prompts must be a string or a list of strings"),
    ("max-activation-surrogate", lambda w: steering.max_activation(w.model, w.tok, w.sae, ["fine", "\ud800"]), r"texts\[1\] holds '\\ud800'"),
    ("max-activation-empty-text", lambda w: steering.max_activation(w.model, w.tok, w.sae, [""]), r"texts\[0\] is ''"),
    ("encode-text-int", lambda w: features.encode_text(w.model, w.tok, w.sae, 5), r"text must be a non-empty string, got 5"),
    ("contrast-one-bad-item", lambda w: features.contrast(w.model, w.tok, w.sae, w.rel, ["fine", 3], ["x"]), r"texts_a\[1\] is 3"),
    ("distinct-words-none", lambda w: steering.distinct_words(["a b", None]), r"texts\[1\] is None"),
    ("task-empty-prompt", lambda w: ablation.make_task(w.tok, [("", " Paris", " London")]), r"items\[0\]\[0\] is '' \(str\): every text must be a non-empty string"),
    ("task-pair-not-triple", lambda w: ablation.make_task(w.tok, [(PROMPT, " Paris")]), r"items\[0\] is .*: each item must be a \(prompt, correct, wrong\) triple"),
    ("batches-text-surrogate", lambda w: text.token_batches(w.tok, batch_size=1, texts=["fine", "\ud800"]), r"texts\[1\] holds '\\ud800'"),
    ("side-by-side-none", lambda w: display.side_by_side(["a"], steered=[None]), r"steered\[0\] is None"),
    ("html-token-int", lambda w: display.tokens_html([5], [1.0]), r"tokens\[0\] must be a string, got 5"),
    ("explorer-text-int", lambda w: widgets.explorer(w.model, w.tok, w.sae, w.rel, 3, text=5, stats=features.FeatureStats(2048)), r"text must be a string, got 5"),
    ("panel-prompt-empty", lambda w: widgets.steering_panel(w.model, w.tok, w.rel, LAYER, 3, 1.0, ""), r"prompt must be a non-empty string"),
    # ---- presets and releases
    ("preset-unknown", lambda w: saehelpers.load_sae(LAYER, "gemma-2"), r"Unknown preset 'gemma-2'\. Valid presets: 'gemma-3-1b', 'mini'"),
    ("release-int", lambda w: ablation.ablate_group(w.model, w.sae, 5, 1), r"release must be a Release .*or a preset name"),
    ("release-unknown-name", lambda w: features.contrast(w.model, w.tok, w.sae, "nope", ["a"], ["b"]), r"Unknown preset 'nope'"),
    ("get-release-int", lambda w: saehelpers.get_release(5), r"Unknown preset 5\. Valid presets"),
    # ---- SAEs that do not fit the model or the release
    ("sae-layer-model-lacks-steer", lambda w: steering.steer(w.model, w.far, 3, 1.0), r"reads 'blocks\.30\.hook_resid_post', but the model has only 18 decoder layers \(0\.\.17\)"),
    ("sae-layer-model-lacks-ablate", lambda w: ablation.ablate(w.model, w.far, 3), r"only 18 decoder layers"),
    ("sae-layer-model-lacks-encode", lambda w: features.encode_text(w.model, w.tok, w.far, "hi"), r"only 18 decoder layers"),
    ("sae-release-width-mismatch", lambda w: ablation.ablate_group(w.model, w.sae, w.wide, 1), r"The SAE has 2048 latents but the 'mini' layout has 4096"),
    ("sae-from-another-preset", lambda w: features.contrast(w.model, w.tok, w.sae, "gemma-3-1b", ["a"], ["b"]), r"SAE/release mismatch.*2048 latents.*'gemma-3-1b' release has d_model 1152 and 32768"),
    # ---- positions
    ("positions-negative", lambda w: steering.steer(w.model, w.sae, 3, 1.0, positions=[-1]), r"positions must be .*>= 0"),
    ("positions-string", lambda w: ablation.ablate(w.model, w.sae, 3, positions="12"), r"positions must be a token position >= 0.*'12'"),
    # ---- a number, a string or a model where an SAE goes (issue 34): refused before any work
    ("sae-a-number-sae-stats", lambda w: activations.sae_stats(w.model, 3, w.batches, progress=False), r"Expected a SAELens SAE .*got 3 \(int\)"),
    ("sae-a-number-neighbours", lambda w: cards.neighbours(3, 1), r"Expected a SAELens SAE .*got 3 \(int\)"),
    ("sae-a-number-feature-stats", lambda w: features.feature_stats(w.model, w.tok, 3, w.rel, cache=False), r"Expected a SAELens SAE"),
    ("sae-a-string-encode-text", lambda w: features.encode_text(w.model, w.tok, "sae", "hi"), r"Expected a SAELens SAE .*\(str\)"),
    ("sae-a-number-encode-batches", lambda w: matryoshka.encode_batches(3, torch.zeros(2, 640)), r"Expected a SAELens SAE"),
    ("sae-a-number-prefix-decode", lambda w: matryoshka.prefix_decode(3, w.rel, torch.zeros(2, 2048)), r"Expected a SAELens SAE"),
    ("sae-a-number-clamp", lambda w: steering.clamp(w.model, 3, 1, 1.0), r"Expected a SAELens SAE"),
    ("sae-a-number-direction", lambda w: steering.feature_direction(3, 1), r"Expected a SAELens SAE"),
    ("sae-the-model-ablate", lambda w: ablation.ablate(w.model, w.model, 1), r"Expected a SAELens SAE"),
    # ---- non-integer latent ids (issue 34)
    ("latent-float-group-of", lambda w: w.rel.group_of(1.5), r"feature id must be an int in 0\.\.2047, got 1\.5 \(float\)"),
    ("latent-string-group-of", lambda w: w.rel.group_of("3"), r"feature id must be an int in 0\.\.2047, got '3' \(str\)"),
    ("latent-bool-group-of", lambda w: w.rel.group_of(True), r"feature id must be an int in 0\.\.2047, got True"),
    # ---- NaN in a metric's inputs, token ids outside the vocabulary (issue 34)
    ("ev-nan", lambda w: metrics.explained_variance(torch.full((2, 4), NAN), torch.zeros(2, 4)), r"x holds 8 NaN or inf"),
    ("ev-accumulator-nan", lambda w: metrics.EVAccumulator().add(torch.zeros(2, 4), torch.full((2, 4), INF)), r"x_hat holds 8 NaN or inf"),
    ("l0-nan", lambda w: metrics.l0(torch.full((2, 4), NAN)), r"feature_acts holds 8 NaN"),
    ("firing-counts-nan", lambda w: metrics.firing_counts(torch.full((2, 4), NAN)), r"feature_acts holds 8 NaN"),
    ("ce-logits-nan", lambda w: metrics.ce_loss(torch.full((1, 3, 5), NAN), torch.zeros(1, 3, dtype=torch.long)), r"logits holds 15 NaN"),
    ("kl-logits-nan", lambda w: metrics.kl_div(torch.zeros(1, 3, 5), torch.full((1, 3, 5), NAN)), r"other_logits holds 15 NaN"),
    ("ce-token-beyond-vocab", lambda w: metrics.ce_loss(torch.zeros(1, 3, 5), torch.tensor([[1, 2, 7]])), r"input_ids holds 7, which is no token .*0\.\.4"),
    ("ce-token-negative", lambda w: metrics.ce_loss(torch.zeros(1, 3, 5), torch.tensor([[1, -2, 3]])), r"input_ids holds -2, which is no token"),
    ("ce-token-ids-float", lambda w: metrics.ce_loss(torch.zeros(1, 3, 5), torch.tensor([[1.0, 2.0, 3.0]])), r"input_ids must be integer token ids in 0\.\.4"),
    # ---- a non-callable where a function goes (issue 34)
    ("replace-fn-a-number", lambda w: hooks.replace(w.model, LAYER, 3), r"fn must be a function, e\.g\. lambda h: .*got 3 \(int\)"),
    ("attribute-metric-a-string", lambda w: ablation.attribute(w.model, w.sae, w.task, metric="ld"), r"metric must be a function.*got 'ld' \(str\)"),
    ("true-effects-metric-a-number", lambda w: ablation.true_effects(w.model, w.sae, w.task, [1], metric=0, progress=False), r"metric must be a function"),
    ("measure-edit-a-context", lambda w: steering.measure(w.model, w.tok, w.sae, 1, PROMPT, [5], edit=5), r"edit must be a function, e\.g\. lambda: steer"),
    # ---- display tables
    ("side-by-side-lengths", lambda w: display.side_by_side(["a", "b"], steered=["x"]), r"Column 'steered' has 1 texts for 2 prompts: give one per prompt"),
    ("tree-explorer-not-a-table", lambda w: widgets.tree_explorer([1, 2]), r"table must be a hierarchy table"),
]  # fmt: skip


@pytest.mark.parametrize("make, match", [pytest.param(make, match, id=name) for name, make, match in CASES])
def test_hostile_input_is_refused_clearly(w, clean_logits, make, match):
    with pytest.raises(ValueError, match=match):
        run(make(w))
    assert hooks.active_hooks(w.model) == 0
    assert torch.equal(logits_of(w.model, w.tok), clean_logits)


def test_the_table_is_wide_enough():
    ids = [name for name, *_ in CASES]
    assert len(ids) == len(set(ids)) >= 30


# ---------------------------------------------------------------- valid by design


def resid_at(w, edit) -> torch.Tensor:
    ids = w.tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad(), edit, hooks.capture(w.model, [LAYER], stop=True) as acts:
        w.model(input_ids=ids)
    return acts[LAYER]


def test_valid_by_design_inputs_work_like_the_plain_int(w, clean_logits):
    """A NumPy int layer, a one-element tensor feature, a preset name for a release: the same as the plain form."""
    plain = saehelpers.load_sae(LAYER, "mini", dtype="float32")
    numpy_layer = saehelpers.load_sae(np.int64(LAYER), "mini", dtype="float32")
    assert numpy_layer.cfg.metadata.hook_name == plain.cfg.metadata.hook_name
    assert torch.equal(numpy_layer.W_dec, plain.W_dec)
    loaded = 0
    for one in saehelpers.iter_saes(
        LAYER, preset="mini", dtype="float32"
    ):  # one layer where a list is expected
        assert torch.equal(one.W_dec, plain.W_dec)  # (the loop frees each SAE when it moves on)
        loaded += 1
    assert loaded == 1

    want = resid_at(w, steering.steer(w.model, w.sae, 3, 2.0))
    for feature in (torch.tensor([3]), torch.tensor(3), np.int64(3)):
        assert torch.equal(resid_at(w, steering.steer(w.model, w.sae, feature, 2.0)), want)
    assert torch.equal(resid_at(w, steering.steer(w.model, w.sae, 3, np.float32(2.0))), want)
    assert torch.equal(resid_at(w, steering.steer(w.model, w.sae, 3, torch.tensor(2.0))), want)
    assert cards.neighbours(w.sae, torch.tensor([3])).equals(cards.neighbours(w.sae, 3))

    want = resid_at(w, ablation.ablate_group(w.model, w.sae, w.rel, 1))
    assert torch.equal(resid_at(w, ablation.ablate_group(w.model, w.sae, "mini", np.int64(1))), want)
    assert torch.equal(
        resid_at(w, ablation.ablate(w.model, w.sae, np.array([3, 5]))),
        resid_at(w, ablation.ablate(w.model, w.sae, [3, 5])),
    )
    assert list(hooks.resid_post(w.model, w.task.input_ids, np.int64(LAYER))) == [LAYER]
    # One string is one text, not its characters.
    long = "one two three four five six seven eight nine ten eleven twelve"
    assert torch.equal(
        next(text.token_batches(w.tok, batch_size=1, texts=long))["input_ids"],
        next(text.token_batches(w.tok, batch_size=1, texts=[long]))["input_ids"],
    )
    assert check_finite(np.float64(0.5), "x", 0, 1) == check_finite(torch.tensor([0.5]), "x", 0, 1) == 0.5
    assert hooks.active_hooks(w.model) == 0
    assert torch.equal(logits_of(w.model, w.tok), clean_logits)


# ---------------------------------------------------------------- HTML: every path from text to markup

HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "&amp;", '" onmouseover="alert(1)']
HOSTILE_TEXT = 'Hi <script>alert(1)</script> and <img src=x onerror=alert(1)> or &amp; "quoted" end.'


class Seen(HTMLParser):
    """The tags, attribute names and text a browser would see."""

    def __init__(self, markup: str):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(markup: str, shown=()):
    """No tag or event handler came from the data, and each of `shown` reads as the text it is."""
    low = markup.lower()
    assert "<script" not in low and "<img" not in low, markup
    seen = Seen(markup)
    assert not {"script", "img"} & set(seen.tags)
    assert not [a for a in seen.attrs if a.startswith("on")], seen.attrs
    assert "&lt;" in markup
    for s in shown:
        assert s in "".join(seen.text), (s, markup)


@pytest.fixture(scope="module")
def hostile_card(w):
    """Statistics over the hostile text, and the card of the feature that fires most on it."""
    stats = features.stream_stats(
        w.model, w.sae, tokens.text_batches(w.tok, [HOSTILE_TEXT] * 2), progress=False
    )
    feature = int(stats.max.argmax())
    card = cards.feature_card(w.model, w.tok, w.sae, w.rel, stats, feature, n_examples=4)
    card.notes.append(HOSTILE[0])
    card.logits["raises"] = [HOSTILE[i % len(HOSTILE)] for i in range(len(card.logits))]
    return stats, feature, card


def test_every_html_path_escapes_hostile_text(w, hostile_card, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    stats, feature, card = hostile_card
    acts = [1.0, 2.0, 0.5, 3.0]
    tip = '"><script>alert(1)</script>'
    assert_inert(display.token_span(HOSTILE[1], 1.0, 2.0, title=tip), [HOSTILE[1]])
    assert 'title="&quot;&gt;&lt;script&gt;' in display.token_span("x", 1.0, 1.0, title=tip)
    for markup in (display.tokens_html(HOSTILE, acts), display.highlight(HOSTILE, acts).data):
        assert_inert(markup, ["".join(HOSTILE)])
        assert "&amp;amp;" in markup  # "&amp;" shows as those five characters
    feats = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5], [0.0, 3.0]])
    label = lambda f: HOSTILE[1]  # noqa: E731
    assert_inert(display.text_features_html(HOSTILE, feats, label=label), ["".join(HOSTILE), HOSTILE[1]])
    assert_inert(display.text_features(HOSTILE, feats, label=label).data, [HOSTILE[1]])
    example = {
        "value": 2.0,
        "index": 0,
        "tokens": [1, 2, 3, 4],
        "acts": acts,
        "centre": 1,
        "strings": HOSTILE,
    }
    assert_inert(display.examples_html([example], 3.0), ["".join(HOSTILE)])

    assert_inert(card._repr_html_(), [HOSTILE[0], HOSTILE[1]])
    assert_inert(display.card_html(card), [HOSTILE[0]])
    assert_inert(display.card_examples(card).data)

    table = display.side_by_side(HOSTILE, **{HOSTILE[0]: HOSTILE, "plain": HOSTILE[::-1]}).to_html()
    assert_inert(table, HOSTILE)

    monkeypatch.setenv("SAEHELPERS_WIDGETS", "0")
    view = widgets.explorer(w.model, w.tok, w.sae, w.rel, feature, text=HOSTILE_TEXT, stats=stats)
    assert_inert(view._repr_html_(), [HOSTILE_TEXT])  # the typed text, token by token, reads as typed

    tree = pd.DataFrame(
        {"parent": [0, 0], "child": [9, 11], "cosine": [0.5, 0.4], "p_parent_given_child": [0.9, 0.8],
         "p_child_given_parent": [0.2, 0.1]}
    )  # fmt: skip
    labels = {0: HOSTILE[0], 9: HOSTILE[1], 11: HOSTILE[3]}
    static = widgets.tree_explorer(tree, labels, {11: HOSTILE[2]})
    assert_inert(static._repr_html_(), [HOSTILE[0], HOSTILE[1], HOSTILE[3], HOSTILE[2]])


def test_nan_and_inf_never_reach_css(w):
    """Activations become `rgba(..., alpha)`: a NaN or inf is refused, anything finite gives an alpha in 0..1."""
    for bad in (NAN, INF, -INF):
        with pytest.raises(ValueError, match="must be finite"):
            display.token_span("a", bad, 1.0)
        with pytest.raises(ValueError, match="must be finite"):
            display.tokens_html(["a", "b"], [1.0, 2.0], vmax=bad)
        example = {
            "value": 1.0,
            "index": 0,
            "tokens": [1, 2],
            "acts": [bad, 1.0],
            "centre": 0,
            "strings": ["a", "b"],
        }
        with pytest.raises(ValueError, match="must be finite"):
            display.examples_html([example], 1.0)
        with pytest.raises(ValueError, match="NaN or inf"):
            display.text_features_html(["a", "b"], torch.tensor([[1.0, bad], [0.0, 1.0]]))
        with pytest.raises(ValueError, match="must be finite"):
            dataclasses.replace(small_card(), max=bad)._repr_html_()
    markup = display.tokens_html(["a", "b", "c", "d", "e"], [-5.0, 0.0, 1e-30, 1e30, 3e38])
    markup += display.tokens_html(["a", "b"], [1.0, 2.0], vmax=0.0) + display.tokens_html(
        ["a"], [1.0], vmax=-1.0
    )
    alphas = re.findall(r"rgba\(255, 140, 0, ([^)]*)\)", markup)
    assert len(alphas) == 8 and all(0.0 <= float(a) <= 1.0 for a in alphas), alphas


def small_card():
    """A card with plain examples (the test overrides its max)."""
    from saehelpers.features import HIST_EDGES

    example = {"value": 1.0, "index": 0, "tokens": [1], "acts": [1.0], "centre": 0, "strings": ["a"]}
    return cards.FeatureCard(
        layer=6, feature=1, group=0, group_range=(0, 8), n_tokens=10, count=1, frequency=0.1, rank=1, d_sae=2048,
        max=1.0, mean_when_firing=1.0, hist=[0] * (len(HIST_EDGES) - 1), edges=HIST_EDGES.tolist(), top=[example],
        sample=[example], logits=pd.DataFrame({"raises": ["a"], "logit ↑": [1.0], "lowers": ["b"], "logit ↓": [-1.0]}),
        neighbours=pd.DataFrame({"feature": [3], "cosine": [0.5], "group": [0], "frequency": [0.1]}),
    )  # fmt: skip

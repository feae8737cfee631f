"""The shipped mini release: files, format, and its quality floors, recomputed.

The metrics are recomputed from the shipped files with saehelpers' own metric functions (an
implementation independent of scripts/build_mini_release.py) on the held-out slice that the build
also measured (`release.json["metrics_test_slice"]`), so the two must agree closely; the floors are
asserted on the recomputed values and on the full held-out measurement in release.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from saehelpers.activations import sae_stats
from saehelpers.hooks import resid_post, splice_sae
from saehelpers.metrics import ce_loss, explained_variance, token_mask
from saehelpers.release import mini_dir
from saehelpers.text import corpus_version, shipped_sample_path, token_batches

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_mini_release import FLOORS  # noqa: E402

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out

# Quality floors the mini release is built to (held-out text, BOS excluded): issue 19's, which the build
# script checks and records in release.json.
EV_FLOOR = FLOORS["explained_variance"]  # every layer but the last
EV_FLOOR_LATEST = FLOORS["explained_variance_last"]
L0_REL_TOL = FLOORS["l0_rel_to_k"]
DEAD_MAX = FLOORS["dead_fraction"]
DELTA_LOSS_MAX = FLOORS["delta_loss"]  # every layer but the first
# Agreement between this recomputation and the build's numbers on the same slice: only float
# rounding differs (batching, summation order), so these are tight.
TOL = {"explained_variance": 2e-3, "explained_variance_about_zero": 2e-3, "l0_mean": 0.05, "delta_loss": 0.02}


@pytest.fixture(scope="module")
def meta():
    return json.loads((mini_dir() / "release.json").read_text())


@pytest.fixture(scope="module")
def saes(meta):
    from saehelpers import load_sae

    return {layer: load_sae(layer, "mini", device="cpu", dtype="float32") for layer in meta["layers"]}


def test_files_and_format(meta):
    total = 0
    for layer in meta["layers"]:
        folder = mini_dir() / f"blocks.{layer}.hook_resid_post"
        cfg = json.loads((folder / "cfg.json").read_text())
        # What SAELens 6 writes for a batch-top-k SAE: the inference architecture is JumpReLU.
        assert cfg["architecture"] == "jumprelu"
        assert (cfg["d_in"], cfg["d_sae"]) == (meta["d_model"], meta["d_sae"])
        assert cfg["metadata"]["hook_name"] == f"blocks.{layer}.hook_resid_post"
        assert cfg["metadata"]["training_architecture"] == "matryoshka_batchtopk"
        with safe_open(folder / "sae_weights.safetensors", "pt") as f:
            assert set(f.keys()) == {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        total += (folder / "sae_weights.safetensors").stat().st_size
    assert total <= 25 * 2**20
    assert meta["matryoshka_widths"][-1] == meta["d_sae"]
    assert all(b == 4 * a for a, b in zip(meta["matryoshka_widths"], meta["matryoshka_widths"][1:]))
    assert shipped_sample_path().stat().st_size <= 3 * 2**20


def test_release_and_its_sample_name_one_corpus_version(meta):
    """The SAEs and the shipped held-out sample (whose version `corpus_dir()` reads) come from one corpus."""
    version = corpus_version()
    tagged = meta["text_source"].startswith("saehelpers mini corpus v")  # v1's release predates the tag
    expected = f"saehelpers mini corpus v{version}:" if tagged else "saehelpers mini corpus:"
    assert meta["text_source"].startswith(expected), (meta["text_source"], version)
    assert version == 1 or tagged


def _meta():
    return json.loads((mini_dir() / "release.json").read_text())


LAYERS = _meta()["layers"]
AFTER_FIRST = LAYERS[1:]  # the loss floor spares the first layer, whose SAE the whole model reads through

# Floors that the shipped build (issue 19's v2: 3M distinct tokens of corpus v2, 1 epoch, 1464 steps
# of 2048 tokens; about 105 minutes on 2 CPU cores) does NOT meet, with its measured values. They are
# not lowered: each is a strict xfail, so it fails loudly once a build meets it, and the mark must
# then be removed.
SHORTFALLS = {
    # Layer 10 trades explained variance for next-token loss (`--damp 1.5`, see the build script):
    # on v1's data a trial with damp 4 reached EV 0.846 but a loss increase of 1.42 nats (floor 1.0).
    ("ev", 10): "explained variance 0.835 (floor 0.85), traded for a loss increase of 0.92 nat",
}


def _cases(floor, layers):
    out = []
    for layer in layers:
        why = SHORTFALLS.get((floor, layer))
        marks = (
            [pytest.mark.xfail(strict=True, reason=f"floor not met by the shipped build: {why}")]
            if why
            else []
        )
        out.append(pytest.param(layer, marks=marks, id=f"layer{layer}"))
    return out


def _ev_floor(layer):
    return EV_FLOOR_LATEST if layer == max(LAYERS) else EV_FLOOR


@pytest.mark.parametrize("layer", _cases("ev", LAYERS))
def test_floor_explained_variance(meta, layer):
    m = meta["metrics"][str(layer)]
    assert m["explained_variance_about_zero"] >= m["explained_variance"]
    assert m["explained_variance"] >= _ev_floor(layer), m["explained_variance"]


@pytest.mark.parametrize("layer", _cases("prefix", LAYERS))
def test_floor_prefixes_increase(meta, layer):
    ev = meta["metrics"][str(layer)]["ev_per_prefix"]
    assert len(ev) == len(meta["matryoshka_widths"])
    assert all(a < b for a, b in zip(ev, ev[1:])), ev
    assert abs(ev[-1] - meta["metrics"][str(layer)]["explained_variance"]) < 1e-4


@pytest.mark.parametrize("layer", _cases("l0", LAYERS))
def test_floor_l0_near_k(meta, layer):
    assert abs(meta["metrics"][str(layer)]["l0_mean"] - meta["k"]) <= L0_REL_TOL * meta["k"]


@pytest.mark.parametrize("layer", _cases("dead", LAYERS))
def test_floor_dead_latents(meta, layer):
    assert meta["metrics"][str(layer)]["dead_fraction"] <= DEAD_MAX


@pytest.mark.parametrize("layer", _cases("delta_loss", AFTER_FIRST))
def test_floor_delta_loss(meta, layer):
    m = meta["metrics"][str(layer)]
    assert m["delta_loss"] == pytest.approx(m["ce_loss_spliced"] - m["ce_loss_clean"], abs=1e-4)
    assert m["delta_loss"] <= DELTA_LOSS_MAX


def test_release_records_the_floors_it_was_built_to(meta):
    if "floors" not in meta:  # v1 predates the record
        pytest.skip("this release.json records no floors (v1)")
    assert meta["floors"]["floors"] == FLOORS
    assert meta["floors"]["met"] == (not meta["floors"]["misses"])


@pytest.fixture(scope="module")
def recomputed(mini, meta, saes):
    model, tok = mini
    s = meta["metrics_test_slice_settings"]
    layers, widths = meta["layers"], meta["matryoshka_widths"]
    batches = list(
        token_batches(
            tok, "mini", s["model_batch"], s["seq_len"], s["eval_rows"] // s["model_batch"], "heldout"
        )
    )
    xs = {layer: [] for layer in layers}
    for b in batches:
        acts = resid_post(model, b["input_ids"], layers, attention_mask=b["attention_mask"])
        keep = token_mask(b["input_ids"], b["attention_mask"], tok.bos_token_id)
        for layer in layers:
            xs[layer].append(acts[layer][keep])
    out = {}
    with torch.no_grad():
        for layer in layers:
            x, sae = torch.cat(xs[layer]), saes[layer]
            f = sae.encode(x)
            prefixes = []
            for w in widths:
                g = f.clone()
                g[:, w:] = 0
                prefixes.append(explained_variance(x, sae.decode(g), about="mean"))
            out[layer] = {
                "explained_variance": explained_variance(x, sae.decode(f), about="mean"),
                "explained_variance_about_zero": explained_variance(x, sae.decode(f), about="zero"),
                "ev_per_prefix": prefixes,
                "l0_mean": float((f > 0).sum(-1).float().mean()),
                "dead_fraction": float(1 - (f > 0).any(0).float().mean()),
            }
        ce_batches = batches[: s["ce_rows"] // s["model_batch"] or 1]
        ids = torch.cat([b["input_ids"] for b in ce_batches])[: s["ce_rows"]]
        mask = torch.cat([b["attention_mask"] for b in ce_batches])[: s["ce_rows"]]
        scored = token_mask(ids, mask, tok.bos_token_id)
        clean = ce_loss(model(input_ids=ids, attention_mask=mask).logits, ids, scored)
        for layer in layers:
            with splice_sae(model, saes[layer], include_bos=False):
                spliced = ce_loss(model(input_ids=ids, attention_mask=mask).logits, ids, scored)
            out[layer]["delta_loss"] = spliced - clean
    return out


def test_recomputed_floors(meta, recomputed):
    """The floors again on the recomputed slice; the known shortfalls are left to the tests above."""
    for layer in LAYERS:
        m = recomputed[layer]
        if ("ev", layer) not in SHORTFALLS:
            assert m["explained_variance"] >= _ev_floor(layer), (layer, m["explained_variance"])
        assert all(a < b for a, b in zip(m["ev_per_prefix"], m["ev_per_prefix"][1:])), (
            layer,
            m["ev_per_prefix"],
        )
        assert abs(m["l0_mean"] - meta["k"]) <= L0_REL_TOL * meta["k"], (layer, m["l0_mean"])
        if layer in AFTER_FIRST:
            assert m["delta_loss"] <= DELTA_LOSS_MAX, (layer, m["delta_loss"])


def test_recomputed_agrees_with_release_json(meta, recomputed):
    for layer in meta["layers"]:
        built = meta["metrics_test_slice"][str(layer)]
        got = recomputed[layer]
        for key, tol in TOL.items():
            assert got[key] == pytest.approx(built[key], abs=tol), (layer, key, got[key], built[key])
        assert got["ev_per_prefix"] == pytest.approx(built["ev_per_prefix"], abs=2e-3)
        # A prefix of the full evaluation's tokens: latents dead on all of them are dead here too.
        assert got["dead_fraction"] >= meta["metrics"][str(layer)]["dead_fraction"] - 1e-6
        assert got["dead_fraction"] == pytest.approx(built["dead_fraction"], abs=1e-3)


def test_notebook_sweep_agrees_with_release_json(mini, meta, saes):
    """Notebook 01's sweep function (`activations.sae_stats`), on the build's test slice, gives release.json's
    numbers: so what a learner sees in the notebook's table is what README and release.json publish.

    One layer (the middle one): the code path is the same for every layer, `recomputed` checks all four
    layers' numbers independently, and each call costs three float32 forward passes plus the unembedding."""
    model, tok = mini
    s = meta["metrics_test_slice_settings"]
    rows = list(token_batches(tok, "mini", s["model_batch"], s["seq_len"], 1, "heldout"))[0]
    ce = {
        "input_ids": rows["input_ids"][: s["ce_rows"]],
        "attention_mask": rows["attention_mask"][: s["ce_rows"]],
    }
    layer = meta["layers"][len(meta["layers"]) // 2]
    built = meta["metrics_test_slice"][str(layer)]
    ev = sae_stats(model, saes[layer], [rows], progress=False)
    assert ev.explained_variance == pytest.approx(built["explained_variance"], abs=TOL["explained_variance"])
    assert ev.l0 == pytest.approx(built["l0_mean"], abs=TOL["l0_mean"])
    assert ev.dead_fraction == pytest.approx(built["dead_fraction"], abs=1e-3)
    # The loss rows are the first ce_rows of the same batch: one call serves both when they are all of it.
    same = s["ce_rows"] >= len(rows["input_ids"])
    loss = ev if same else sae_stats(model, saes[layer], [ce], progress=False)
    assert loss.delta_loss == pytest.approx(built["delta_loss"], abs=TOL["delta_loss"]), layer

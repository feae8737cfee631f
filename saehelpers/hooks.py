"""Forward hooks at `blocks.N.hook_resid_post` (the output of decoder layer N) of a transformers model.

Every hook is installed by a context manager that removes it on exit, exceptions included, so
after any cell the model is the clean model. `blocks.N.hook_resid_post` is transformers'
`hidden_states[N + 1]` (index 0 is the embeddings).

They work inside `model.generate` with the KV cache: each forward call then sees only the new
tokens, and positions are read from the `position_ids` the model passes to its layers, so
"position 0" (BOS) means the same thing in the prompt and during generation. (`generate` derives
position ids from the attention mask, so BOS is position 0 in left-padded batches too; a plain
forward call on a left-padded batch without `position_ids` numbers the padding first.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from .checks import as_int, check_callable, check_vector
from .release import layer_of


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; the capture context swallows it."""


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's decoder layers (layer N's output is `blocks.N.hook_resid_post`)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(
            f"{type(model).__name__} has no `.model.layers`; saehelpers hooks expect a transformers "
            "decoder-only causal LM such as Gemma3ForCausalLM (from `saehelpers.load_model`)."
        )
    return layers


def check_layers(model, layers) -> list[int]:
    n = len(decoder_layers(model))
    if as_int(layers) is not None:
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):  # "14" is not layers 1 and 4
        raise ValueError(
            f"layers must be an int or a list of ints in 0..{n - 1} for this model ({n} decoder layers), "
            f"got {layers!r} ({type(layers).__name__})."
        )
    out = []
    for layer in layers:
        if as_int(layer) is None or not 0 <= as_int(layer) < n:
            raise ValueError(
                f"layer must be an int in 0..{n - 1} for this model ({n} decoder layers), got {layer!r}."
            )
        out.append(as_int(layer))
    if not out:
        raise ValueError("Give at least one layer.")
    return out


def _output(out) -> torch.Tensor:
    # transformers 5 decoder layers return a tensor; older ones a tuple whose first item is it.
    return out[0] if isinstance(out, tuple) else out


def _with_output(out, new: torch.Tensor):
    return (new, *out[1:]) if isinstance(out, tuple) else new


def _positions(kwargs, hidden: torch.Tensor) -> torch.Tensor:
    """Absolute token positions [batch, seq] of this forward call (0 = BOS)."""
    pos = kwargs.get("position_ids")
    if pos is None:
        pos = kwargs.get("cache_position")
    if pos is None:
        return torch.arange(hidden.shape[1], device=hidden.device).expand(hidden.shape[0], -1)
    pos = pos.to(hidden.device)
    if pos.dim() == 1:
        pos = pos.unsqueeze(0)
    return pos.expand(hidden.shape[0], -1)


@contextmanager
def _hooks(pairs, pre=()):
    """Forward hooks (module, fn) and forward pre-hooks (module, fn) for the block, removed on exit."""
    handles = []
    try:
        for module, fn in pairs:
            fn._saehelpers = True  # marks our hooks, to tell them from transformers' own
            handles.append(module.register_forward_hook(fn, with_kwargs=True))
        for module, fn in pre:
            fn._saehelpers = True
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


class Captured(dict):
    """layer -> resid_post of the last forward call; `history[layer]` keeps every call when asked."""

    def __init__(self):
        super().__init__()
        self.history: dict[int, list[torch.Tensor]] = {}


@contextmanager
def capture(model, layers, stop: bool = False, keep_all: bool = False, detach: bool = True):
    """Capture resid_post at `layers` while the block runs: `with capture(model, [2, 6]) as acts: model(ids)`.

    stop=True ends the forward pass right after the deepest layer (no logits: much faster for an
    early layer); the early stop is swallowed when it leaves the `with` block, so put the model call
    last in the block. keep_all=True also keeps every call's tensors in `acts.history` (e.g. each
    step of `generate`). detach=False keeps the graph, for gradients.
    """
    layers = check_layers(model, layers)
    acts = Captured()
    last = max(layers)
    mods = decoder_layers(model)

    def make(layer):
        def hook(module, args, kwargs, out):
            h = _output(out)
            h = h.detach() if detach else h
            acts[layer] = h
            if keep_all:
                acts.history.setdefault(layer, []).append(h)
            if stop and layer == last:
                raise StopForward

        return hook

    try:
        with _hooks([(mods[layer], make(layer)) for layer in layers]):
            yield acts
    except StopForward:
        pass


@torch.no_grad()
def resid_post(model, input_ids, layers, attention_mask=None) -> dict[int, torch.Tensor]:
    """resid_post at each of `layers` from ONE forward pass that stops after the deepest of them."""
    with capture(model, layers, stop=True) as acts:
        model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return dict(acts)


def _as_vector(model, vector) -> torch.Tensor:
    return check_vector(vector, "The vector", (model.config.hidden_size,), hint="(the model's d_model)")


def position_mask(
    pos: torch.Tensor, positions, include_bos: bool, bos: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool [batch, seq]: the tokens at `positions` (absolute; None: all), BOS left out unless include_bos.
    bos marks the BOS tokens (by token id, as `edit` gives it); None falls back to position 0."""
    if positions is None:
        mask = torch.ones_like(pos, dtype=torch.bool)
    else:
        want = torch.as_tensor(list(positions), device=pos.device)
        mask = torch.isin(pos, want)
    if not include_bos:
        mask &= ~(pos == 0 if bos is None else bos.to(mask.device))
    return mask


def check_positions(positions):
    if positions is None:
        return None
    if as_int(positions) is not None:
        positions = [positions]
    if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
        raise ValueError(
            f"positions must be a token position >= 0 (0 is BOS), a list of them, or None for all; got {positions!r}."
        )
    positions = list(positions)
    bad = [p for p in positions if as_int(p) is None or as_int(p) < 0]
    if bad or not positions:
        raise ValueError(
            f"positions must be a non-empty list of token positions >= 0 (0 is BOS), or None for all; got {bad or positions}."
        )
    return [as_int(p) for p in positions]


@contextmanager
def edit(model, layer: int, fn):
    """Replace resid_post at `layer` by `fn(h, pos, bos)` while the block runs: the position-aware primitive
    under `add_vector`, `replace` and saehelpers.ablation.

    h: resid_post [batch, seq, d_model]; pos: each token's absolute position [batch, seq] (right during
    `generate` with a KV cache, see the module docstring); bos: bool [batch, seq], True at BOS tokens, found
    by token id (the ids the model embeds in this call; position 0 only when it is given embeddings, not
    ids). `position_mask(pos, positions, include_bos, bos)` turns them into a mask. fn returns the new
    resid_post (same shape). The hooks are removed when the block ends, exceptions included.
    """
    (layer,) = check_layers(model, [layer])
    check_callable(fn, "fn", "lambda h, pos, bos: h")
    bos_id = model.config.bos_token_id
    seen = {}

    def remember(module, args, kwargs):  # the embedding's input: this call's token ids
        seen["ids"] = args[0] if args else kwargs.get("input")

    def hook(module, args, kwargs, out):
        h = _output(out)
        pos, ids = _positions(kwargs, h), seen.pop("ids", None)
        if bos_id is not None and isinstance(ids, torch.Tensor) and ids.shape == h.shape[:2]:
            bos = ids.to(h.device) == bos_id
        else:
            bos = pos == 0
        return _with_output(out, fn(h, pos, bos))

    with _hooks([(decoder_layers(model)[layer], hook)], [(model.get_input_embeddings(), remember)]):
        yield


@contextmanager
def add_vector(model, layer: int, vector, positions: Sequence[int] | None = None, include_bos: bool = False):
    """Add `vector` to resid_post at `layer` while the block runs (steering).

    positions: absolute token positions to change (None: every position, including each new
    token during `generate`). BOS (found by its token id) is left alone unless include_bos=True: its
    norm is far larger than other positions' and the model relies on it.
    """
    (layer,) = check_layers(model, [layer])
    vector = _as_vector(model, vector)
    positions = check_positions(positions)

    def fn(h, pos, bos):
        mask = position_mask(pos, positions, include_bos, bos)
        return h + mask.unsqueeze(-1).to(h.dtype) * vector.to(device=h.device, dtype=h.dtype)

    with edit(model, layer, fn):
        yield


@contextmanager
def replace(model, layer: int, fn: Callable[[torch.Tensor], torch.Tensor], positions=None, include_bos=False):
    """Replace resid_post at `layer` by `fn(resid)` while the block runs (e.g. an SAE's reconstruction).

    `fn` gets and returns a [batch, seq, d_model] tensor. positions / include_bos pick where the
    new value is used (default: every position but BOS, which keeps its clean value as in every
    published number: the SAE is not meant to reconstruct BOS's huge activation); elsewhere the
    original is kept.
    """
    (layer,) = check_layers(model, [layer])
    positions = check_positions(positions)
    check_callable(fn, "fn", "lambda h: sae.decode(sae.encode(h))")

    def new_value(h, pos, bos):
        new = fn(h)
        if not isinstance(new, torch.Tensor) or new.shape != h.shape:
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise ValueError(f"replace(): fn must return a tensor of shape {tuple(h.shape)}, got {got}.")
        new = new.to(h.dtype)
        if positions is not None or not include_bos:
            new = torch.where(position_mask(pos, positions, include_bos, bos).unsqueeze(-1), new, h)
        return new

    with edit(model, layer, new_value):
        yield


def splice_sae(model, sae, include_bos: bool = False):
    """Run the model with resid_post at the SAE's layer replaced by the SAE's reconstruction (BOS kept clean
    unless include_bos=True, as `activations.sae_stats` and `matryoshka.prefix_loss` measure it)."""
    layer = layer_of(sae, model)

    def recon(h):
        return sae.decode(sae.encode(h.to(sae.device, sae.dtype))).to(h.device, h.dtype)

    return replace(model, layer, recon, include_bos=include_bos)


def active_hooks(model) -> int:
    """Number of saehelpers hooks on the model (0 when the model is clean). Each `edit` (replace, add_vector,
    an ablation) holds two: its layer's hook and a pre-hook on the embedding that reads the token ids.

    transformers installs hooks of its own (e.g. for `output_hidden_states`); those are not counted.
    """
    return sum(
        getattr(fn, "_saehelpers", False)
        for m in model.modules()
        for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    )

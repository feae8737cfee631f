"""Lesson 01: capture a layer's output with a forward hook (and never leave the hook behind); L0 and dead
latents from a batch of feature activations."""

from __future__ import annotations

import torch

from .. import hooks, metrics
from .core import Case, Exercise, ExerciseFailed, Mistake, check, generator

# ---------------------------------------------------------------- 01.1 capture resid_post

NAME = "capture_resid_post"


def _capture(model, layer, input_ids):
    """The right answer, written as a learner would: a forward hook on the layer, removed in `finally:`."""
    captured = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = hooks.decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return captured[0]


def _reference(model, layer, input_ids):
    return hooks.resid_post(model, input_ids, [layer])[layer]


def _resid_pre(model, layer, input_ids):
    """Wrong: the block's input (a pre-hook), i.e. resid_pre, not what the block writes."""
    captured = []

    def hook(module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])

    handle = hooks.decoder_layers(model)[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return captured[0]


def _leaky(model, layer, input_ids):
    """Wrong: the right tensor, but the hook is never removed."""
    captured = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    hooks.decoder_layers(model)[layer].register_forward_hook(hook)
    with torch.no_grad():
        model(input_ids)
    return captured[0]


def _no_finally(model, layer, input_ids):
    """Wrong: removes the hook after the forward pass, but not when the forward pass raises."""
    captured = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = hooks.decoder_layers(model)[layer].register_forward_hook(hook)
    with torch.no_grad():
        model(input_ids)
    handle.remove()
    return captured[0]


RESID_PRE = Mistake(
    "resid_pre",
    _resid_pre,
    "this is the layer's input (resid_pre, the previous layer's output), not its output. "
    "Use register_forward_hook, whose hook gets the layer's output, not register_forward_pre_hook.",
)
LEAKY = Mistake(
    "leaky",
    _leaky,
    "the tensor is right, but your hook was still on the model after your function returned: every later "
    "forward pass would run it (and keep its tensors alive). Keep the handle that register_forward_hook "
    "returns and call handle.remove() in a finally: block.",
)
NO_FINALLY = Mistake(
    "no_finally",
    _no_finally,
    "when the forward pass raised an error, your hook stayed on the model. Remove it in a finally: block "
    "(try: run the model; finally: handle.remove()), which runs whether the forward pass succeeds or raises.",
)
CAPTURE_MISTAKES = (RESID_PRE, LEAKY, NO_FINALLY)

# Hooks that libraries install on purpose and keep (transformers records hidden states with hooks of
# its own the first time `output_hidden_states=True` is used); only the learner's are leaks.
_LIBRARIES = ("transformers", "accelerate", "torch", "peft")
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")
_FLAG_DICTS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _learner_hooks(model) -> set[int]:
    """The ids of every forward (pre-)hook on the model's modules, libraries' own left out."""
    out = set()
    for module in model.modules():
        for attr in _HOOK_DICTS:
            for key, fn in getattr(module, attr).items():
                if (getattr(fn, "__module__", None) or "").split(".")[0] not in _LIBRARIES:
                    out.add(key)
    return out


def _remove_hooks(model, keys: set[int]) -> None:
    for module in model.modules():
        for attr in (*_HOOK_DICTS, *_FLAG_DICTS):
            table = getattr(module, attr, None)
            if table is not None:
                for key in keys & set(table):
                    del table[key]


class _Watch:
    """Calls fn and removes (and counts) any hook it left on the model, whether fn returned or raised."""

    def __init__(self, fn, model):
        self.fn, self.model, self.left = fn, model, 0

    def __call__(self, *args, **kwargs):
        before = _learner_hooks(self.model)
        try:
            return self.fn(*args, **kwargs)
        finally:
            new = _learner_hooks(self.model) - before
            _remove_hooks(self.model, new)
            self.left += len(new)


class _Stop(RuntimeError):
    pass


def _not_yours(module, args, output):
    return None  # changes nothing: it stands for the hooks libraries keep on a model


def _case_ids(model, seed: int) -> torch.Tensor:
    vocab = model.get_input_embeddings().num_embeddings
    bos = model.config.bos_token_id if model.config.bos_token_id is not None else 2
    ids = torch.randint(1000, min(vocab, 50_000), (2, 5), generator=generator(seed))
    ids[:, 0] = bos
    return ids.to(model.device)


def check_capture(fn, model) -> None:
    """fn(model, layer, input_ids) -> [batch, seq, d_model]: the output of decoder layer `layer`
    (blocks.{layer}.hook_resid_post), captured with a forward hook that is removed even when the model
    raises."""
    if not callable(fn):
        return check(NAME, fn, _reference, [])  # raises, saying to pass the function itself
    layers = hooks.decoder_layers(model)
    ids = _case_ids(model, 1)
    cases = [
        Case(f"layer {layer} of {len(layers)}, 2 rows of {ids.shape[1]} tokens", (model, layer, ids))
        for layer in (0, len(layers) // 2)
    ]
    low = model.dtype in (torch.bfloat16, torch.float16)
    rtol, atol = (2e-2, 0.5) if low else (1e-4, 1e-2)
    cache = hooks.resid_post(model, ids, [case.args[1] for case in cases])  # one pass for both cases

    def reference(model, layer, input_ids):
        return cache[layer]

    # A hook that is not the learner's on each hooked layer, as transformers' own can be: a function that
    # clears a hook dict instead of removing its own hook takes it too, and the checker says so.
    others = [layers[case.args[1]].register_forward_hook(_not_yours) for case in cases]
    watched = _Watch(fn, model)
    try:
        check(NAME, watched, reference, cases, (RESID_PRE,), rtol, atol, quiet=True)
    except ExerciseFailed as e:
        if watched.left:
            raise ExerciseFailed(
                f"{e} Also, your function left {watched.left} hook(s) on the model; the checker removed "
                "them. Remove yours with handle.remove() in a finally: block."
            ) from None
        raise
    finally:
        for handle in others:
            handle.remove()
    if watched.left:
        raise ExerciseFailed(
            f"{NAME}, on {cases[0].label}: {LEAKY.message} (The checker removed the {watched.left} hook(s) "
            "your function left, so the model is clean again.)"
        )

    # A forward pass that raises: the hook must go all the same.
    def stop(module, args):
        raise _Stop("the checker made this forward pass fail on purpose")

    layer = cases[-1].args[1]
    watched = _Watch(fn, model)
    stopper = model.get_input_embeddings().register_forward_pre_hook(stop)
    try:
        watched(model, layer, ids.clone())
    except NotImplementedError:
        raise
    except Exception:
        pass  # the failure the checker caused (or the learner's own reaction to it)
    finally:
        stopper.remove()
    if watched.left:
        raise ExerciseFailed(
            f"{NAME}, on layer {layer} with a forward pass that raises: {NO_FINALLY.message} (The checker "
            f"removed the {watched.left} hook(s) your function left, so the model is clean again.)"
        )
    n = len(cases) + 1
    print(
        f"✓ {NAME}: all {n} checks pass (right tensor, and no hook left behind, even when the model raises)."
    )


# ---------------------------------------------------------------- 01.2 L0 and dead latents


def _l0_and_dead(feature_acts):
    return metrics.l0(feature_acts)[0], metrics.dead_fraction(metrics.firing_counts(feature_acts))


def _total_count(feature_acts):
    return float((feature_acts != 0).sum()), _l0_and_dead(feature_acts)[1]


def _share_of_latents(feature_acts):
    mean_l0, dead = _l0_and_dead(feature_acts)
    return mean_l0 / feature_acts.shape[-1], dead


def _zero_entries(feature_acts):
    return _l0_and_dead(feature_acts)[0], (feature_acts == 0).double().mean().item()


def _dead_count(feature_acts):
    return _l0_and_dead(feature_acts)[0], float((metrics.firing_counts(feature_acts) == 0).sum())


def _alive_fraction(feature_acts):
    mean_l0, dead = _l0_and_dead(feature_acts)
    return mean_l0, 1 - dead


L0_MISTAKES = (
    Mistake(
        "total_count",
        _total_count,
        "your L0 is the count of nonzero activations over all tokens together. L0 is per token: count the "
        "nonzero latents on each token (sum over the last dimension), then average over tokens.",
    ),
    Mistake(
        "share_of_latents",
        _share_of_latents,
        "your L0 is a share of the latents (divided by d_sae). L0 is a count: how many latents are nonzero "
        "on a token, averaged over tokens.",
    ),
    Mistake(
        "zero_entries",
        _zero_entries,
        "your dead fraction is the share of zero entries in the whole matrix. A latent is dead when its "
        "column is zero on every token: find, for each latent, whether it fired on any token, then take the "
        "share of latents that never did.",
    ),
    Mistake(
        "dead_count",
        _dead_count,
        "you returned the number of dead latents. Return the fraction: divide by d_sae.",
    ),
    Mistake(
        "alive_fraction",
        _alive_fraction,
        "you returned the fraction of latents that fired at least once (alive). Dead is the rest: the "
        "latents that never fire.",
    ),
)


def _l0_cases() -> list[Case]:
    cases = []
    for seed, (n, d, dead) in enumerate([(6, 10, 3), (8, 16, 2), (5, 12, 5)]):
        g = generator(200 + seed)
        acts = torch.rand(n, d, generator=g) * 5
        acts[torch.rand(n, d, generator=g) < 0.6] = 0  # sparse, as feature activations are
        acts[0, torch.randperm(d, generator=g)[:2]] = 1.5  # a few latents fire at least once
        acts[:, torch.randperm(d, generator=g)[:dead]] = 0  # and some never do
        cases.append(Case(f"{n} tokens x {d} latents", (acts,)))
    return cases


def check_l0_and_dead(fn) -> None:
    """fn(feature_acts) -> (mean L0 per token, fraction of latents that never fire), for feature_acts
    of shape [n_tokens, d_sae]."""
    return check("l0_and_dead", fn, _l0_and_dead, _l0_cases(), L0_MISTAKES)


EXERCISES = [
    Exercise(check_capture, _capture, CAPTURE_MISTAKES, needs=("model",)),
    Exercise(check_l0_and_dead, _l0_and_dead, L0_MISTAKES),
]

"""Steering: push the residual stream along a feature's decoder direction (or any vector), or clamp a feature.

    adding:    x  <-  x + coef * d_f                  at resid_post of `layer`
    clamping:  x  <-  x + (value - a_f(x)) * d_f      a_f(x) = the feature's SAE activation on x

d_f is row f of the SAE's decoder, `sae.W_dec[f]`, at its trained norm, so `coef` is in the feature's own
activation units: coef = 5 adds what the feature writes when it fires at 5. Both edit every position but
BOS (position 0): BOS's norm dwarfs the others' and every later token attends to it, so a push there is
not "more of the feature" but a different model. They are context managers built on `saehelpers.hooks`:
they work inside `model.generate` with the KV cache and leave the model clean on exit, exceptions included.

    with steer(model, sae, feature, coef):      # at the SAE's layer
        texts = generate(model, tokenizer, prompts)
    with steer(model, layer, vector, coef):     # any vector, at a layer
"""

from __future__ import annotations

import numbers
from contextlib import contextmanager, nullcontext

import torch

from . import hooks, lm, metrics
from .activations import bos_id, collect_resid
from .checks import (
    as_int,
    check_callable,
    check_feature,
    check_features,
    check_finite,
    check_int,
    check_sae,
    check_vector,
)
from .release import layer_of
from .tokens import check_texts, check_token_ids, pad_rows

# ---------------------------------------------------------------- checks


# Coefficients and clamp values are in the feature's activation units, where hundreds is already
# extreme; far beyond that the model's float arithmetic overflows into inf / NaN rather than steering.
MAX_COEF = 1e6


def check_coef(coef, name: str = "coef") -> float:
    """`coef` as a float; ValueError unless it is one finite real number with |coef| <= MAX_COEF."""
    return check_finite(
        coef,
        name,
        -MAX_COEF,
        MAX_COEF,
        hint="Give e.g. 4.0 (0 = no change), in the feature's activation units.",
    )


def feature_direction(sae, feature) -> torch.Tensor:
    """The feature's decoder row `W_dec[feature]` [d_model]: what it adds to the residual per unit of activation."""
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    return sae.W_dec[check_feature(feature, sae.cfg.d_sae)].detach()


def _where(model, at) -> tuple[int, object]:
    """(layer, sae or None) from `at`: an SAE (its layer) or a layer number."""
    if as_int(at) is not None:
        (layer,) = hooks.check_layers(model, [at])
        return layer, None
    if hasattr(at, "cfg") and hasattr(at, "W_dec"):
        return layer_of(at, model), at
    raise ValueError(
        f"Steer at an SAE (its layer; feature ids allowed) or at a layer number (vectors only), got {at!r}."
    )


def direction(model, at, feature_or_vector) -> torch.Tensor:
    """What to steer along, as float32 [d_model]: a feature id of the SAE `at` (its decoder row) or any vector."""
    layer, sae = _where(model, at)
    f = as_int(feature_or_vector)
    if f is not None:
        if sae is None:
            raise ValueError(
                f"Feature id {f} needs its SAE: steer at sae=saehelpers.load_sae({layer}) instead of "
                f"layer {layer}, or pass a vector."
            )
        return feature_direction(sae, f).float()
    one = isinstance(feature_or_vector, numbers.Number) or (
        isinstance(feature_or_vector, torch.Tensor) and feature_or_vector.dim() == 0
    )
    if sae is not None and one:  # a float or bool meant as a feature id: say what an id is
        check_feature(feature_or_vector, sae.cfg.d_sae)
    d = model.config.hidden_size
    v = check_vector(
        feature_or_vector,
        "The vector",
        (d,),
        hint="(the model's d_model; or steer along a feature id, an int)",
    )
    return v.detach().float()


# ---------------------------------------------------------------- the two edits


def steer(model, at, feature_or_vector, coef=1.0, positions=None, include_bos: bool = False):
    """Context manager: add `coef * direction` to resid_post, where `at` says.

    at: an SAE (steer at its layer; `feature_or_vector` may be one of its feature ids) or a layer
    number (a vector only). positions: absolute token positions to steer (None: all, including
    every generated token).
    """
    coef = check_coef(coef)
    layer, _ = _where(model, at)
    v = coef * direction(model, at, feature_or_vector)
    return hooks.add_vector(model, layer, v, positions=positions, include_bos=include_bos)


def clamp(model, sae, feature, value, positions=None, include_bos: bool = False):
    """Context manager: set `feature`'s activation to `value` at the SAE's layer: x + (value - a_f(x)) * d_f.

    Where the feature is off (a_f = 0) this adds value * d_f, like `steer`; where it is on, it replaces
    the feature's contribution instead of adding to it. value = 0 removes the feature (an ablation).
    """
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    value = check_coef(value, "value")
    layer = layer_of(sae, model)
    d = direction(model, sae, feature)
    f = check_feature(feature, sae.cfg.d_sae)

    def set_feature(x):
        a = sae.encode(x.to(sae.device, sae.dtype))[..., f].to(x.dtype)  # the feature's activation now
        return x + (value - a).unsqueeze(-1) * d.to(x.device, x.dtype)

    return hooks.replace(model, layer, set_feature, positions=positions, include_bos=include_bos)


# ---------------------------------------------------------------- generation


@contextmanager
def _seeded(seed):
    """Seed torch's RNG inside the block, then give the caller back their CPU RNG state (None: no seeding)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # also seeds CUDA's generators
        yield


@contextmanager
def _contiguous_unembed(model):
    """Make the unembedding's input contiguous while `generate` runs.

    For the prompt, transformers unembeds only the last position, a [batch, 1, d_model] slice that
    keeps the prompt's strides; torch's matmul then expands the [vocab, d_model] weight to
    [batch, d_model, vocab] and copies it: on the mini model 1 GB and about 2 s per `generate`
    call. A contiguous input takes the plain matrix product.
    """
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (args[0].contiguous(), *args[1:])
    )
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts,
    max_new_tokens: int = 30,
    do_sample: bool = False,
    seed: int | None = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    **generate_kwargs,
):
    """Continue each prompt (a string or a list of them) and return only the new text, as `prompts` was given.

    Greedy by default; do_sample=True samples with `temperature` / `top_p` from a seeded RNG, so the same
    seed, prompts and steering give the same text (the caller's RNG state is left as it was). The prompts
    run as one left-padded batch with the KV cache; run it inside `steer`/`clamp` to steer. Other keyword
    arguments go to `model.generate`.
    """
    longest = getattr(model.config, "max_position_embeddings", None)  # no text outgrows the context
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 1, longest)
    single = isinstance(prompts, str)
    prompts = check_texts(prompts, "prompts")
    seed = None if seed is None else check_int(seed, "seed", low=0)
    # Checked even for greedy decoding, where they are unused: a NaN here is a bug upstream.
    temperature, top_p = check_finite(temperature, "temperature"), check_finite(top_p, "top_p")
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    if do_sample:  # top_k=0: no top-k cut, whatever the model's generation_config says
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"Sampling needs temperature > 0 and 0 < top_p <= 1, got temperature={temperature}, "
                f"top_p={top_p}. For greedy decoding pass do_sample=False instead."
            )
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    with _seeded(seed if do_sample else None), _contiguous_unembed(model):
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
            **generate_kwargs,
        )
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return texts[0] if single else texts


# ---------------------------------------------------------------- measuring


def _read(tokenizer, prompts, texts, device):
    """prompt + text as one right-padded batch: (input_ids, attention_mask, new) where `new` marks the text's tokens."""
    prompts = check_texts(prompts, "prompts")
    texts = check_texts(texts, "texts", allow_empty=True)  # a generation may stop at once
    if len(prompts) != len(texts):
        raise ValueError(f"Give one text per prompt: got {len(prompts)} prompts and {len(texts)} texts.")
    rows = [
        (tokenizer(p)["input_ids"], tokenizer(t, add_special_tokens=False)["input_ids"])
        for p, t in zip(prompts, texts)
    ]
    ids, mask = pad_rows(tokenizer, [p + t for p, t in rows])
    new = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, t) in enumerate(rows):
        new[i, len(p) : len(p) + len(t)] = True
    if not new.any():
        raise ValueError("All texts are empty: there is nothing to measure.")
    return ids.to(device), mask.to(device), new.to(device)


def _predicting_new(new: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is a new one (the predictions that produced the text)."""
    pred = torch.zeros_like(new)
    pred[:, :-1] = new[:, 1:]
    return pred


@torch.no_grad()
def read_back(model, tokenizer, sae, features, prompts, texts):
    """Read generated text back with the model as it is (run it OUTSIDE any steering): `(activation, loss)`.

    activation: the mean SAE activation of `features` (an id, or a list of ids -> a list) over the text's
    tokens, as the clean model sees them. loss: the model's next-token loss on the text's tokens, in
    nats: how surprising the text is to the unsteered model (a fluency cost).
    """
    layer = layer_of(sae, model)
    many = as_int(features) is None  # a list of ids gives a list
    ids_f = check_features(features, sae.cfg.d_sae)
    ids, mask, new = _read(tokenizer, prompts, texts, model.device)
    with hooks.capture(model, [layer]) as acts:
        hidden = lm.final_hidden(model, ids, mask)
    acts_f = sae.encode(acts[layer][new].to(sae.device, sae.dtype))[:, ids_f].float().mean(0).tolist()
    scored = _predicting_new(new) | new  # from the last prompt token on
    losses = lm.next_token_losses(model, ids, scored, hidden)[0]
    if len(losses) == 0:
        raise ValueError("No prediction to score: give texts with at least one token.")
    loss = losses.mean().item()
    return (acts_f if many else acts_f[0]), loss


def distinct_words(texts) -> float:
    """The share of distinct words in each text (1 = no word repeated), averaged over texts: a repetition gauge.

    Repetitive text is cheap for a model to predict, so the loss misses it; this does not. Texts without
    words count as 1 (nothing repeated).
    """
    texts = check_texts(texts, allow_empty=True)
    shares = [len(set(words)) / len(words) if (words := t.split()) else 1.0 for t in texts]
    return sum(shares) / len(shares)


@torch.no_grad()
def lens_probability(model, tokenizer, prompts, texts, token_ids) -> float:
    """Mean probability the model puts on `token_ids` (summed) when predicting each token of the texts.

    Run it INSIDE the steering block, on the steered text: it measures what steering does to the
    model's predictions, teacher-forced on what it wrote.
    """
    token_ids = check_token_ids(token_ids, model.config.vocab_size)
    if not token_ids:
        raise ValueError("token_ids is empty: give the ids of one or more tokens to sum the probability of.")
    ids, mask, new = _read(tokenizer, prompts, texts, model.device)
    pred = _predicting_new(new)
    hidden = lm.final_hidden(model, ids, mask)[pred]
    logits = lm.unembed(model, hidden).float()  # [n, vocab], only where needed
    token_ids = torch.tensor(token_ids, device=logits.device)
    return (logits[:, token_ids].logsumexp(-1) - logits.logsumexp(-1)).exp().mean().item()


def measure(model, tokenizer, sae, feature, prompts, lens_ids, edit=None, **generate_kwargs) -> dict:
    """Generate under `edit` (a function returning a steering context, e.g. `lambda: steer(...)`; None: none)
    and measure: the feature's activation read back, the probability of `lens_ids`, the clean model's loss.
    """
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    if edit is not None:
        check_callable(edit, "edit", "lambda: steer(model, sae, feature, coef)")
    with edit() if edit is not None else nullcontext():
        texts = generate(model, tokenizer, prompts, **generate_kwargs)
        p_lens = lens_probability(model, tokenizer, prompts, texts, lens_ids)
    activation, loss = read_back(model, tokenizer, sae, feature, prompts, texts)
    return {"activation": activation, "lens_prob": p_lens, "loss": loss, "texts": texts}


@torch.no_grad()
def resid_norms(model, layer: int, batches) -> tuple[float, float]:
    """`(median ||x||, median ||x - mean(x)||)` of resid_post at `layer` over `batches` (BOS and padding left out).

    Gemma's residual stream has a few huge dimensions that are almost the same for every token, so
    ||x|| mostly measures them; the second number, the token-to-token spread, is what a push competes with.
    """
    (layer,) = hooks.check_layers(model, [layer])  # before the batches are read
    x = collect_resid(model, batches, [layer], progress=False).acts[layer]
    return x.norm(dim=-1).median().item(), (x - x.mean(0)).norm(dim=-1).median().item()


@torch.no_grad()
def max_activation(model, tokenizer, sae, texts) -> torch.Tensor:
    """Each feature's largest activation [d_sae] over the tokens of `texts` (BOS left out), e.g. where it is at home."""
    layer = layer_of(sae, model)
    texts = check_texts(texts)
    best = torch.zeros(sae.cfg.d_sae, device=sae.device)  # on the SAE's device until the end
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids.to(model.device)
        keep = metrics.token_mask(ids, bos_token_id=bos_id(model))[0]  # BOS by its id, as everywhere
        x = hooks.resid_post(model, ids, [layer])[layer][0][keep]
        best = torch.maximum(best, sae.encode(x.to(sae.device, sae.dtype)).float().amax(0))
    return best.cpu()


__all__ = [
    "check_coef",
    "clamp",
    "direction",
    "feature_direction",
    "generate",
    "lens_probability",
    "max_activation",
    "measure",
    "read_back",
    "resid_norms",
    "steer",
]

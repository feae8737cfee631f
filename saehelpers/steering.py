"""Steering: push the residual stream along a feature's decoder direction (or any vector), or clamp a feature.

    adding:    x  <-  x + coef * d_f                  at resid_post of `layer`
    clamping:  x  <-  x + (value - a_f(x)) * d_f      a_f(x) = the feature's SAE activation on x

d_f is row f of the SAE's decoder, `sae.W_dec[f]`, at its trained norm, so `coef` is in the feature's own
activation units: coef = 5 adds what the feature writes when it fires at 5. Both edit every position but
BOS (position 0): BOS's norm dwarfs the others' and every later token attends to it, so a push there is
not "more of the feature" but a different model. They are context managers built on `saehelpers.hooks`:
they work inside `model.generate` with the KV cache and leave the model clean on exit, exceptions included.

    with steer(model, layer, feature, coef, sae=sae):
        texts = generate(model, tokenizer, prompts)
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager, nullcontext

import torch

from . import hooks, lm
from .checks import as_int, check_feature, check_int
from .loading import check_sae_at

# ---------------------------------------------------------------- checks


def check_coef(coef, name: str = "coef") -> float:
    """`coef` as a float; ValueError unless it is one finite real number."""
    if isinstance(coef, torch.Tensor) and coef.numel() == 1 and not coef.is_complex():
        coef = coef.item()
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real):
        raise ValueError(f"{name} must be a real number (e.g. 4.0), got {coef!r} ({type(coef).__name__}).")
    if not math.isfinite(coef):
        raise ValueError(
            f"{name} must be finite, got {coef}. Give a finite number such as 4.0 (0 = no change)."
        )
    return float(coef)


def feature_direction(sae, feature) -> torch.Tensor:
    """The feature's decoder row `W_dec[feature]` [d_model]: what it adds to the residual per unit of activation."""
    return sae.W_dec[check_feature(feature, sae.cfg.d_sae)].detach()


def direction(model, layer: int, feature_or_vector, sae=None) -> torch.Tensor:
    """What to steer along, as float32 [d_model]: a feature id of `sae` (its decoder row) or any vector."""
    f = as_int(feature_or_vector)
    if f is not None:
        if sae is None:
            raise ValueError(
                f"Feature id {f} needs its SAE: pass sae=saehelpers.load_sae({layer}), or pass a vector instead."
            )
        check_sae_at(sae, layer, model)
        return feature_direction(sae, f).float()
    d = model.config.hidden_size
    v = torch.as_tensor(feature_or_vector)
    if v.shape != (d,):
        raise ValueError(
            f"Steer along a feature id (an int) or a vector of shape ({d},) (the model's d_model); "
            f"got shape {tuple(v.shape)}."
        )
    if not v.is_floating_point():
        raise ValueError(f"The vector must be floating point (float32, bfloat16, ...), got {v.dtype}.")
    if not torch.isfinite(v).all():
        raise ValueError("The vector contains NaN or inf; give a finite vector.")
    return v.detach().float()


# ---------------------------------------------------------------- the two edits


def steer(
    model, layer: int, feature_or_vector, coef=1.0, sae=None, positions=None, include_bos: bool = False
):
    """Context manager: add `coef * direction` to resid_post at `layer` (a feature id needs its `sae`).

    positions: absolute token positions to steer (None: all, including every generated token).
    """
    coef = check_coef(coef)
    v = coef * direction(model, layer, feature_or_vector, sae)
    return hooks.add_vector(model, layer, v, positions=positions, include_bos=include_bos)


def clamp(model, sae, layer: int, feature, value, positions=None, include_bos: bool = False):
    """Context manager: set `feature`'s activation to `value` at `layer`: x + (value - a_f(x)) * d_f.

    Where the feature is off (a_f = 0) this adds value * d_f, like `steer`; where it is on, it replaces
    the feature's contribution instead of adding to it. value = 0 removes the feature (an ablation).
    """
    value = check_coef(value, "value")
    d = direction(model, layer, feature, sae)
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
    single = isinstance(prompts, str)
    prompts = [prompts] if single else list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty string or a non-empty list of non-empty strings.")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", low=1)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    if do_sample:  # top_k=0: no top-k cut, whatever the model's generation_config says
        temperature, top_p = check_coef(temperature, "temperature"), check_coef(top_p, "top_p")
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
    prompts, texts = ([prompts], [texts]) if isinstance(prompts, str) else (list(prompts), list(texts))
    if len(prompts) != len(texts):
        raise ValueError(f"Give one text per prompt: got {len(prompts)} prompts and {len(texts)} texts.")
    rows = [
        (tokenizer(p)["input_ids"], tokenizer(t, add_special_tokens=False)["input_ids"])
        for p, t in zip(prompts, texts)
    ]
    n = max(len(p) + len(t) for p, t in rows)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    new = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, t) in enumerate(rows):
        ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        mask[i, : len(p) + len(t)] = 1
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
def read_back(model, tokenizer, sae, layer: int, features, prompts, texts):
    """Read generated text back with the model as it is (run it OUTSIDE any steering): `(activation, loss)`.

    activation: the mean SAE activation of `features` (an id, or a list of ids -> a list) over the text's
    tokens, as the clean model sees them. loss: the model's next-token loss on the text's tokens, in
    nats: how surprising the text is to the unsteered model (a fluency cost).
    """
    check_sae_at(sae, layer, model)
    many = not isinstance(features, (numbers.Integral, torch.Tensor))
    ids_f = [check_feature(f, sae.cfg.d_sae) for f in (features if many else [features])]
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
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("Give at least one text.")
    shares = [len(set(words)) / len(words) if (words := t.split()) else 1.0 for t in texts]
    return sum(shares) / len(shares)


@torch.no_grad()
def lens_probability(model, tokenizer, prompts, texts, token_ids) -> float:
    """Mean probability the model puts on `token_ids` (summed) when predicting each token of the texts.

    Run it INSIDE the steering block, on the steered text: it measures what steering does to the
    model's predictions, teacher-forced on what it wrote.
    """
    ids, mask, new = _read(tokenizer, prompts, texts, model.device)
    pred = _predicting_new(new)
    hidden = lm.final_hidden(model, ids, mask)[pred]
    logits = lm.unembed(model, hidden).float()  # [n, vocab], only where needed
    token_ids = torch.as_tensor(token_ids, device=logits.device)
    return (logits[:, token_ids].logsumexp(-1) - logits.logsumexp(-1)).exp().mean().item()


def measure(
    model, tokenizer, sae, layer: int, feature, prompts, lens_ids, edit=None, **generate_kwargs
) -> dict:
    """Generate under `edit` (a function returning a steering context, e.g. `lambda: steer(...)`; None: none)
    and measure: the feature's activation read back, the probability of `lens_ids`, the clean model's loss.
    """
    with edit() if edit is not None else nullcontext():
        texts = generate(model, tokenizer, prompts, **generate_kwargs)
        p_lens = lens_probability(model, tokenizer, prompts, texts, lens_ids)
    activation, loss = read_back(model, tokenizer, sae, layer, feature, prompts, texts)
    return {"activation": activation, "lens_prob": p_lens, "loss": loss, "texts": texts}


@torch.no_grad()
def resid_norms(model, layer: int, batches) -> tuple[float, float]:
    """`(median ||x||, median ||x - mean(x)||)` of resid_post at `layer` over `batches` (BOS and padding left out).

    Gemma's residual stream has a few huge dimensions that are almost the same for every token, so
    ||x|| mostly measures them; the second number, the token-to-token spread, is what a push competes with.
    """
    from .activations import collect_resid

    x = collect_resid(model, batches, [layer], progress=False).acts[layer]
    return x.norm(dim=-1).median().item(), (x - x.mean(0)).norm(dim=-1).median().item()


@torch.no_grad()
def max_activation(model, tokenizer, sae, layer: int, texts) -> torch.Tensor:
    """Each feature's largest activation [d_sae] over the tokens of `texts` (BOS left out), e.g. where it is at home."""
    check_sae_at(sae, layer, model)
    texts = [texts] if isinstance(texts, str) else list(texts)
    best = torch.zeros(sae.cfg.d_sae)
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids.to(model.device)
        x = hooks.resid_post(model, ids, [layer])[layer][0, 1:]
        best = torch.maximum(best, sae.encode(x.to(sae.device, sae.dtype)).float().amax(0).cpu())
    return best


# ---------------------------------------------------------------- showing


def side_by_side(prompts, **columns):
    """A table with one row per prompt and one column per way of generating (wrapped, left-aligned).

    Every text is HTML-escaped: a prompt or a generated text holding `<script>` shows as text.
    """
    import pandas as pd

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    columns = {k: [v] if isinstance(v, str) else list(v) for k, v in columns.items()}
    for name, texts in columns.items():
        if len(texts) != len(prompts):
            raise ValueError(
                f"Column {name!r} has {len(texts)} texts for {len(prompts)} prompts: give one per prompt."
            )
    df = pd.DataFrame({"prompt": prompts, **columns})
    return (
        df.style.format(escape="html")
        .set_properties(**{"white-space": "pre-wrap", "text-align": "left"})
        .hide(axis="index")
    )


def panel(model, tokenizer, preset, layer, feature, coef, prompt, max_new_tokens=24, saes=None, held=None):
    """Interactive: layer, feature, coefficient, prompt -> plain and steered text. Prints the starting point too.

    `saes` may hold {layer: SAE} already loaded (others load when chosen); `held` a few held-out batches
    to measure each layer's residual spread on (default: two of 4 x 64 tokens). Without ipywidgets (or
    a live kernel) only the printed starting point stays.
    """
    from .loading import load_sae
    from .release import get_release
    from .text import token_batches

    release = get_release(preset)
    saes, spreads = dict(saes or {}), {}
    held = list(held or token_batches(tokenizer, preset, 4, 64, n_batches=2))

    def run(layer, feature, coef, prompt):
        if layer not in saes:
            saes[layer] = load_sae(layer, preset, device=model.device)
        if layer not in spreads:
            spreads[layer] = resid_norms(model, layer, held)[1]
        sae = saes[layer]
        push = check_coef(coef) * feature_direction(sae, feature).float().norm().item()
        plain = generate(model, tokenizer, prompt, max_new_tokens)
        with steer(model, layer, feature, coef, sae=sae):
            steered = generate(model, tokenizer, prompt, max_new_tokens)
        return (
            f"layer {layer}, feature {feature} (group {release.group_of(feature)}), coef {coef:g}: "
            f"||coef * d|| = {push / spreads[layer]:.2f} x the residual spread\n"
            f"prompt:  {prompt!r}\nplain:   {plain!r}\nsteered: {steered!r}"
        )

    print(run(layer, feature, coef, prompt))  # the static result, for viewers without widgets
    from .widgets import enabled

    if not enabled():
        return
    import ipywidgets as w
    from IPython.display import display

    boxes = dict(
        layer=w.Dropdown(options=list(release.layers), value=layer, description="layer"),
        feature=w.BoundedIntText(value=feature, min=0, max=release.d_sae - 1, description="feature"),
        coef=w.FloatText(value=coef, description="coef"),
        prompt=w.Text(value=prompt, description="prompt", layout=w.Layout(width="90%")),
    )
    button, out = w.Button(description="Generate"), w.Output()

    def on_click(_):
        out.clear_output()
        with out:
            try:
                print(run(**{k: b.value for k, b in boxes.items()}))
            except ValueError as e:  # bad input: say what was wrong, keep the panel alive
                print(e)

    button.on_click(on_click)
    display(w.VBox([*boxes.values(), button, out]))


__all__ = [
    "check_coef",
    "clamp",
    "direction",
    "feature_direction",
    "generate",
    "lens_probability",
    "max_activation",
    "measure",
    "panel",
    "read_back",
    "resid_norms",
    "side_by_side",
    "steer",
]

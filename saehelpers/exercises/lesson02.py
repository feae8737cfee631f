"""Lesson 02: encode by hand with a JumpReLU SAE's weights; the strongest firings of one feature."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Mistake, check, generator

# ---------------------------------------------------------------- 02.1 encode


def _encode(sae, x):
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    return torch.where(pre > sae.threshold, pre.relu(), torch.zeros_like(pre))


def _reference(sae, x):
    with torch.no_grad():
        return sae.encode(x)


def _no_b_dec(sae, x):
    pre = x @ sae.W_enc + sae.b_enc
    return torch.where(pre > sae.threshold, pre.relu(), torch.zeros_like(pre))


def _plain_relu(sae, x):
    return ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).relu()


def _decoder_weights(sae, x):
    pre = (x - sae.b_dec) @ sae.W_dec.T + sae.b_enc
    return torch.where(pre > sae.threshold, pre.relu(), torch.zeros_like(pre))


ENCODE_MISTAKES = (
    Mistake(
        "no_b_dec",
        _no_b_dec,
        "b_dec was not subtracted from x. This SAE has apply_b_dec_to_input=True: the encoder reads "
        "x - b_dec.",
    ),
    Mistake(
        "plain_relu",
        _plain_relu,
        "latents whose pre-activation is positive but not above their threshold are nonzero in your result. "
        "A JumpReLU keeps a pre-activation only where it is above sae.threshold (one value per latent), and "
        "sets the rest to 0.",
    ),
    Mistake(
        "decoder_weights",
        _decoder_weights,
        "you encoded with the decoder's weights (W_dec.T). The encoder has its own matrix, "
        "W_enc [d_in, d_sae], which is not the decoder's transpose.",
    ),
)

# Rounding: how far a pre-activation computed another way (another order of operations, float32 from
# bfloat16 weights) may be from the SAE's own, relative to the sum of the absolute terms of its dot product.
_REL = {torch.bfloat16: 2**-8, torch.float16: 2**-10}


def _tolerant(f):
    """f with its output set to sae.encode's wherever rounding alone can explain the difference: where
    the two differ by less than the pre-activation's rounding error, or where the pre-activation is that
    close to its threshold (computed another way it may land on the other side)."""

    def wrapped(sae, x):
        with torch.no_grad():
            want = _reference(sae, x)
            w_enc = sae.W_enc.float()
            pre = (x.float() - sae.b_dec.float()) @ w_enc + sae.b_enc.float()
            terms = (x.float().abs() + sae.b_dec.float().abs()) @ w_enc.abs() + sae.b_enc.float().abs()
            margin = _REL.get(sae.dtype, 2**-18) * terms
            border = (pre - sae.threshold.float()).abs() <= margin
        got = f(sae, x)
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            with torch.no_grad():
                g = got.detach().to(want.device, torch.float32)
                close = border | ((g - want.float()).abs() <= margin)
                got = torch.where(close, want.to(got.dtype), got.detach().to(want.device))
        return got

    wrapped.__name__ = getattr(f, "__name__", "fn")
    return wrapped


def _toy_sae(seed: int):
    """A small JumpReLU SAE (d_in 8, d_sae 16) whose b_dec and per-latent thresholds both matter."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    g = generator(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=16, dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(8, 16, generator=g) / 8**0.5)
        sae.W_dec.copy_(torch.randn(16, 8, generator=g) / 8**0.5)
        sae.b_dec.copy_(torch.randn(8, generator=g))
        sae.b_enc.copy_(0.3 * torch.randn(16, generator=g))
        sae.threshold.copy_(0.2 + 0.8 * torch.rand(16, generator=g))
    return sae


def _realistic_x(sae, n: int, seed: int) -> torch.Tensor:
    """Inputs the SAE could have seen: b_dec plus a few decoder rows, each with a coefficient a little
    above the latent's threshold (so in the residual stream's scale), and some noise."""
    g = generator(seed)
    d_sae, d_in = sae.cfg.d_sae, sae.cfg.d_in
    w_dec, b_dec, threshold = (
        sae.W_dec.detach().float().cpu(),
        sae.b_dec.detach().float().cpu(),
        sae.threshold,
    )
    latents = torch.randint(0, d_sae, (n, 24), generator=g)
    coef = threshold.detach().float().cpu()[latents] * (1 + 3 * torch.rand(n, 24, generator=g))
    acts = torch.zeros(n, d_sae).scatter_add_(1, latents, coef)
    x = b_dec + acts @ w_dec
    x = x + 0.1 * x.std() * torch.randn(n, d_in, generator=g)
    return x.to(sae.device, sae.dtype)


def check_encode(fn, sae) -> None:
    """fn(sae, x) -> [n_tokens, d_sae]: the SAE's feature activations, by hand from its weights:
    pre = (x - b_dec) @ W_enc + b_enc, kept where pre > threshold, else 0."""
    cases = []
    for seed, n in ((0, 5), (1, 3)):
        toy = _toy_sae(300 + seed)
        x = 2 * torch.randn(n, 8, generator=generator(310 + seed)) + toy.b_dec.detach()
        cases.append(Case(f"a small SAE (d_in 8, d_sae 16), {n} tokens", (toy, x)))
    x = _realistic_x(sae, 4, 320)
    cases.append(Case(f"your SAE ({sae.cfg.d_in} -> {sae.cfg.d_sae}, {sae.dtype}), 4 tokens", (sae, x)))
    if not callable(fn):
        return check("encode", fn, _reference, cases)  # raises, saying to pass the function itself
    mistakes = tuple(Mistake(m.name, _tolerant(m.fn), m.message) for m in ENCODE_MISTAKES)
    return check("encode", _tolerant(fn), _reference, cases, mistakes)


# ---------------------------------------------------------------- 02.2 top positions


def _top_positions(acts, k):
    flat = acts.flatten()
    n = min(k, int((flat > 0).sum()))
    seq = acts.shape[1]
    return [(int(i) // seq, int(i) % seq) for i in flat.topk(n).indices]


def _smallest_first(acts, k):
    return _top_positions(acts, k)[::-1]


def _zeros_included(acts, k):
    seq = acts.shape[1]
    return [(int(i) // seq, int(i) % seq) for i in acts.flatten().topk(min(k, acts.numel())).indices]


def _swapped(acts, k):
    return [(p, t) for t, p in _top_positions(acts, k)]


def _flat(acts, k):
    seq = acts.shape[1]
    return [t * seq + p for t, p in _top_positions(acts, k)]


def _by_n_texts(acts, k):
    n_texts, seq = acts.shape
    return [divmod(t * seq + p, n_texts) for t, p in _top_positions(acts, k)]


TOP_MISTAKES = (
    Mistake(
        "smallest_first",
        _smallest_first,
        "you found the right positions but listed them smallest first. List the largest activation first "
        "(topk does; argsort needs descending=True).",
    ),
    Mistake(
        "zeros_included",
        _zeros_included,
        "when fewer than k activations are positive, your list goes on with positions where the feature does "
        "not fire (activation 0). Keep only activations > 0, so the list may be shorter than k.",
    ),
    Mistake(
        "swapped",
        _swapped,
        "your pairs are (position, text_index). Return (text_index, position): the row of acts first.",
    ),
    Mistake(
        "flat",
        _flat,
        "you returned flat indices into acts.flatten(). Turn each into a pair (text_index, position): "
        "divide by the sequence length (acts.shape[1]); quotient and remainder.",
    ),
    Mistake(
        "by_n_texts",
        _by_n_texts,
        "you split the flat indices by the number of texts. A flat index is text_index * seq + position: "
        "divide by the sequence length, acts.shape[1].",
    ),
)


def _top_cases() -> list[Case]:
    cases = []
    # (n_texts, seq, how many fire, k): plenty firing; one short of k; far fewer than k.
    for seed, (n_texts, seq, fire, k) in enumerate([(3, 5, 8, 4), (2, 3, 5, 6), (4, 6, 3, 5)]):
        g = generator(400 + seed)
        values = torch.zeros(n_texts * seq)
        where = torch.randperm(n_texts * seq, generator=g)[:fire]
        values[where] = (torch.randperm(fire, generator=g) + 1).float() / fire * 4  # distinct: no ties
        label = f"{n_texts} texts x {seq} positions, {fire} activations > 0, k={k}"
        cases.append(Case(label, (values.reshape(n_texts, seq), k)))
    return cases


def check_top_positions(fn) -> None:
    """fn(acts, k) -> [(text_index, position), ...]: where the k largest positive activations of one feature
    are in acts [n_texts, seq], largest first; fewer than k if fewer are positive."""
    return check("top_positions", fn, _top_positions, _top_cases(), TOP_MISTAKES)


EXERCISES = [
    Exercise(check_encode, _encode, ENCODE_MISTAKES, needs=("sae",)),
    Exercise(check_top_positions, _top_positions, TOP_MISTAKES),
]

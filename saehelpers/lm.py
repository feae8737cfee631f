"""The model's next-token predictions without ever holding a [batch, seq, vocab] logits tensor.

A full forward pass of Gemma-3 makes logits for all 262,144 vocabulary entries at every position:
16 rows x 128 tokens is 2.1 GB in float32, more than the rest of a mini-preset kernel together.
Here the model runs up to its final (normed) hidden states, and the unembedding is applied
`CHUNK` positions at a time, only where a loss or a KL needs it.
"""

from __future__ import annotations

import torch

from . import metrics
from .checks import check_int, check_vector

# Positions unembedded at a time. Each pass works in three float32 [CHUNK, vocab] buffers made once
# per call (32 x 262,144 x 4 bytes = 32 MB each) and changed in place. Buffers of 32 MB or more get
# their own memory map from glibc, returned when freed; many smaller short-lived tensors (a float64
# softmax per position) came from the heap instead and let a mini-preset kernel grow past 2.2 GB.
CHUNK = 32


def final_hidden(model, input_ids, attention_mask=None) -> torch.Tensor:
    """Final normed hidden states [batch, seq, d_model] (what the unembedding reads), under any active hooks."""
    out = model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def unembed(model, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from final hidden states [..., d_model], with the final soft-cap where the model has one."""
    logits = model.lm_head(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap  # as the model's own forward does


def _log_softmax_(logits: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """log softmax of `logits` [n, vocab] written into `out` (float32), with `scratch` as work space."""
    out.copy_(logits)
    out.sub_(out.amax(-1, keepdim=True))
    torch.exp(out, out=scratch)
    return out.sub_(scratch.sum(-1, keepdim=True).log_())


@torch.no_grad()
def next_token_losses(model, input_ids, mask, clean: torch.Tensor, others: dict | None = None):
    """Losses of the clean run and of each other run, and each other run's KL from the clean one.

    clean and others[name]: final hidden states [batch, seq, d_model] from `final_hidden`.
    Returns (ce_clean, ce, kl): ce_clean [n_pred] and ce[name] [n_pred] are next-token losses,
    scored where `mask` is 1 at t and t + 1 (as `metrics.ce_loss`); kl[name] [n_pos] is
    KL(p_clean || p_other) at every position where `mask` is 1 (as `metrics.kl_div`). Nats. The
    softmax runs in float32 after subtracting each row's maximum; sums are returned as float64.
    """
    others = others or {}
    mask = metrics.token_mask(input_ids, mask)
    scored = torch.zeros_like(mask)
    scored[:, :-1] = mask[:, :-1] & mask[:, 1:]
    targets = input_ids.roll(-1, dims=1)  # targets[b, t] = input_ids[b, t + 1] wherever scored
    ce_clean, ce, kl = [], {n: [] for n in others}, {n: [] for n in others}
    where = (mask if others else scored).nonzero(as_tuple=True)
    n = min(CHUNK, len(where[0]))
    logp, logq, scratch = (torch.empty(n, model.config.vocab_size, device=clean.device) for _ in range(3))
    for r, s in zip(where[0].split(CHUNK), where[1].split(CHUNK)):
        sc, tgt, m = scored[r, s], targets[r, s].unsqueeze(-1), len(r)
        p, q, t = logp[:m], logq[:m], scratch[:m]
        _log_softmax_(unembed(model, clean[r, s]), p, t)
        ce_clean.append(-p.gather(-1, tgt).squeeze(-1)[sc])
        for name, hidden in others.items():
            _log_softmax_(unembed(model, hidden[r, s]), q, t)
            ce[name].append(-q.gather(-1, tgt).squeeze(-1)[sc])
            torch.exp(p, out=t)
            kl[name].append(q.sub_(p).mul_(t).sum(-1).neg_())  # sum_v p (log p - log q)
    empty = torch.zeros(0, dtype=torch.float64, device=clean.device)
    cat = lambda parts: torch.cat([empty, *parts]).double()  # noqa: E731
    return cat(ce_clean), {n: cat(v) for n, v in ce.items()}, {n: cat(v) for n, v in kl.items()}


def next_token_loss(model, input_ids, attention_mask=None, mask=None) -> float:
    """Mean next-token loss (nats) under whatever hooks are active, as `metrics.ce_loss` on the full logits.

    `mask` picks the scored tokens (default: the attention mask); e.g. `metrics.token_mask(ids,
    attention_mask, bos_token_id)` also leaves out the prediction made from BOS.
    """
    hidden = final_hidden(model, input_ids, attention_mask)
    losses = next_token_losses(model, input_ids, attention_mask if mask is None else mask, hidden)[0]
    if len(losses) == 0:
        raise ValueError("No prediction to score: the mask needs two consecutive real tokens in some row.")
    return losses.mean().item()


@torch.no_grad()
def lens_logits(model, vectors: torch.Tensor) -> torch.Tensor:
    """The logit lens's raw scores: unembed(final_norm(v)) for one direction [d_model] or several [n, d_model],
    as float32 logits [vocab] or [n, vocab] (before any final soft-capping)."""
    d = model.config.hidden_size
    shape = (d,) if torch.as_tensor(vectors).dim() == 1 else ("n", d)
    v = check_vector(vectors, "vector", shape, hint="(the model's d_model)").to(model.device, model.dtype)
    return model.get_output_embeddings()(model.get_decoder().norm(v)).float()


@torch.no_grad()
def logit_lens(model, vector, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit lens: the `k` tokens a residual-stream direction promotes most, as `(token_ids, logits)`.

    `vector` is one direction [d_model] or several [n, d_model] (then both results are [n, k]). The
    "direct path" only: it treats the direction as the whole residual stream at the top of the model,
    ignoring every layer after the one it is read or added at (and the final norm's real scale, which
    depends on the rest of the stream). A hint, strongest at late layers. Feature cards show the same
    lens as a table of raised and lowered tokens (`cards.lens_table`).
    """
    k = check_int(k, "k", 1, model.config.vocab_size, hint="k is how many top tokens to return.")
    top = lens_logits(model, vector).topk(k)
    return top.indices, top.values


__all__ = ["final_hidden", "lens_logits", "logit_lens", "next_token_loss", "next_token_losses", "unembed"]

"""Metrics for an SAE's reconstructions: explained variance, L0, dead/dense latents, loss and KL.

Pure functions on tensors (no model, no hooks), so each can be checked by hand. Shapes:
x, x_hat: [n_tokens, d_model]; feature_acts: [..., d_sae]; logits: [batch, seq, vocab];
input_ids / masks: [batch, seq]. Losses and KL are in nats (natural log).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_finite

ABOUT = ("mean", "zero")


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x and x_hat as float64 on the CPU (exact sums; MPS has no float64), after checking shapes."""
    if not isinstance(x, torch.Tensor) or not isinstance(x_hat, torch.Tensor):
        raise ValueError(f"x and x_hat must be tensors, got {type(x).__name__} and {type(x_hat).__name__}.")
    if x.dim() != 2 or x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must both have shape [n_tokens, d_model], got {tuple(x.shape)} and "
            f"{tuple(x_hat.shape)}. Flatten batch and sequence first: x[mask] or x.reshape(-1, d_model)."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); give at least one token.")
    _check_finite(x, "x")
    _check_finite(x_hat, "x_hat")
    return x.detach().to("cpu", torch.float64), x_hat.detach().to("cpu", torch.float64)


def _check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """ValueError when `t` holds NaN or inf: a metric of them would be NaN without a word."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{name} holds {n} NaN or inf value(s); a metric of them is meaningless. Give finite values "
            "(a NaN usually comes from an overflow upstream: try float32 instead of float16)."
        )
    return t


def _check_about(about: str) -> str:
    if about not in ABOUT:
        raise ValueError(f"about must be 'mean' or 'zero', got {about!r}.")
    return about


def _ev(sum_sq_err: float, total: float, about: str) -> float:
    if total <= 0:
        what = "all tokens are identical" if about == "mean" else "x is all zeros"
        raise ValueError(
            f"Explained variance about the {about} is undefined: the denominator is 0 ({what}). "
            "Use more (and different) tokens."
        )
    return 1.0 - sum_sq_err / total


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor, about: str = "mean") -> float:
    """Share of the activations' variance that the reconstruction explains (a fraction, 1 = perfect).

    about="mean" (the textbook R^2; what SAELens reports today as `explained_variance`):
        1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i - mu||^2,   mu = mean of x over tokens
    about="zero" (variance measured from the origin; always >= the "mean" value):
        1 - sum_i ||x_i - x_hat_i||^2 / sum_i ||x_i||^2
    Sums run over all tokens i and all dimensions (pooled: a ratio of sums, not a mean of
    per-token ratios). Computed in float64.

    History in SAELens (checked in 6.54's `evals.py` and `training/sae_trainer.py`): before
    March 2025 it reported the mean over tokens of per-token ratios,
    1 - ||x_i - x_hat_i||^2 / ||x_i - mu_batch||^2 (still logged as `explained_variance_legacy`).
    PR #443 (2025-03) switched to a ratio of sums, but a bug made the evals' denominator the
    variance about zero, which inflates it (SAELens issue #659: ~0.98 against ~0.78 with the legacy
    formula); PR #665 (2026) fixed that, and the installed 6.54's `ExplainedVarianceCalculator`
    (evals) and trainer log (per training batch) both use about="mean" as defined here.
    So an SAE's published number depends on when it was measured: compare like with like.
    """
    x, x_hat = _check_pair(x, x_hat)
    about = _check_about(about)
    err = (x - x_hat).pow(2).sum().item()
    total = (x - x.mean(0)).pow(2).sum() if about == "mean" else x.pow(2).sum()
    return _ev(err, total.item(), about)


class EVAccumulator:
    """Explained variance over many batches, equal to `explained_variance` on all of them concatenated.

    Keeps float64 running sums: token count, per-dimension mean and sum of squared deviations
    (merged batch by batch with Chan et al.'s formula, which avoids the cancellation of
    sum(x^2) - n * mean^2), sum ||x||^2 and sum ||x - x_hat||^2.

        acc = EVAccumulator()
        for x, x_hat in batches: acc.add(x, x_hat)
        acc.value("mean"), acc.value("zero")
    """

    def __init__(self):
        self.n = 0
        self.mean: torch.Tensor | None = None  # [d_model]
        self.m2: torch.Tensor | None = None  # [d_model], sum of squared deviations from the mean
        self.sum_sq = 0.0  # sum ||x||^2
        self.sum_sq_err = 0.0  # sum ||x - x_hat||^2

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x, x_hat = _check_pair(x, x_hat)
        n_b, mean_b = x.shape[0], x.mean(0)
        m2_b = (x - mean_b).pow(2).sum(0)
        if self.n == 0:
            self.mean, self.m2 = mean_b, m2_b
        else:
            if x.shape[1] != self.mean.shape[0]:
                raise ValueError(f"Batches must share d_model: got {x.shape[1]} after {self.mean.shape[0]}.")
            n = self.n + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * n_b / n)
        self.n += n_b
        self.sum_sq += x.pow(2).sum().item()
        self.sum_sq_err += (x - x_hat).pow(2).sum().item()

    def value(self, about: str = "mean") -> float:
        """Explained variance of everything added so far (see `explained_variance`)."""
        about = _check_about(about)
        if self.n == 0:
            raise ValueError("No tokens added yet: call add(x, x_hat) first.")
        total = self.m2.sum().item() if about == "mean" else self.sum_sq
        return _ev(self.sum_sq_err, total, about)


def l0(feature_acts: torch.Tensor) -> tuple[float, torch.Tensor]:
    """L0 = number of nonzero latents per token. Returns (mean over tokens, per-token LongTensor).

    feature_acts: [..., d_sae]; the per-token tensor has the leading shape. Counts `!= 0` (as SAELens).
    """
    if not isinstance(feature_acts, torch.Tensor) or feature_acts.dim() < 1 or feature_acts.numel() == 0:
        raise ValueError("feature_acts must be a non-empty tensor of shape [..., d_sae].")
    _check_finite(feature_acts, "feature_acts")  # NaN != 0 would count as firing
    per_token = (feature_acts != 0).sum(-1)
    return per_token.double().mean().item(), per_token


def firing_counts(feature_acts: torch.Tensor) -> torch.Tensor:
    """For each latent, the number of tokens on which it is nonzero: LongTensor [d_sae]."""
    if not isinstance(feature_acts, torch.Tensor) or feature_acts.dim() < 1 or feature_acts.numel() == 0:
        raise ValueError("feature_acts must be a non-empty tensor of shape [..., d_sae].")
    _check_finite(feature_acts, "feature_acts")  # NaN != 0 would count as firing
    return (feature_acts != 0).reshape(-1, feature_acts.shape[-1]).sum(0)


def _check_counts(counts: torch.Tensor) -> torch.Tensor:
    if not isinstance(counts, torch.Tensor) or counts.dim() != 1 or counts.numel() == 0:
        raise ValueError("counts must be a non-empty 1-D tensor [d_sae] (from firing_counts).")
    return counts


def dead_fraction(counts: torch.Tensor) -> float:
    """Fraction of latents that never fired on the sample (counts == 0). More tokens -> fewer 'dead'."""
    return (_check_counts(counts) == 0).double().mean().item()


def dense_fraction(counts: torch.Tensor, n_tokens: int, threshold: float = 0.1) -> float:
    """Fraction of latents firing on MORE than `threshold` of the tokens (counts / n_tokens > threshold).

    The default 0.1 (fires on > 10% of tokens) is a common cut for "dense" latents; with ~40 of
    32768 latents active per token, an average latent fires on ~0.1% of tokens.
    """
    counts, threshold = _check_counts(counts), check_finite(threshold, "threshold")
    if n_tokens <= 0 or not 0 <= threshold < 1:
        raise ValueError(f"Need n_tokens > 0 and 0 <= threshold < 1, got {n_tokens} and {threshold}.")
    if counts.max().item() > n_tokens:
        raise ValueError(
            f"counts go up to {counts.max().item()} but n_tokens is {n_tokens}: use the same tokens."
        )
    return (counts.double() / n_tokens > threshold).double().mean().item()


def token_mask(input_ids: torch.Tensor, attention_mask=None, bos_token_id: int | None = None) -> torch.Tensor:
    """Bool [batch, seq]: True at real tokens (attention_mask 1) that are not BOS. Works for left or right padding."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(mask.shape)} must match input_ids {tuple(input_ids.shape)}.")
    if bos_token_id is not None:
        mask = mask & (input_ids != bos_token_id)
    return mask


def _check_logits(logits, input_ids, mask):
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [batch, seq, vocab] and input_ids [batch, seq]; got {tuple(logits.shape)} "
            f"and {tuple(input_ids.shape)}."
        )
    _check_finite(logits, "logits")
    mask = token_mask(input_ids, mask)
    vocab = logits.shape[-1]
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(
            f"input_ids must be integer token ids in 0..{vocab - 1}, got dtype {input_ids.dtype}."
        )
    bad = input_ids[mask & ((input_ids < 0) | (input_ids >= vocab))]
    if len(bad):
        raise ValueError(
            f"input_ids holds {int(bad[0])}, which is no token of these logits: token ids are ints in "
            f"0..{vocab - 1} (padding may hold anything where the attention mask is 0)."
        )
    return mask


# Positions per chunk for the float64 softmax: 64 x 262,144 x 8 bytes = 128 MB at a time.
CHUNK = 64


def _chunks(where: torch.Tensor):
    """(rows, cols) index tensors of the True entries of `where`, CHUNK at a time.

    The softmax runs in float64 because in float32 over Gemma's 262,144-token vocabulary it is off
    by ~1e-4 nats; in chunks because [n_tokens, vocab] in float64 would not fit in memory.
    """
    r, s = where.nonzero(as_tuple=True)
    return zip(r.split(CHUNK), s.split(CHUNK))


def ce_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask=None, per_token: bool = False):
    """Next-token cross-entropy in nats: mean over scored t of -log softmax(logits[b, t])[input_ids[b, t+1]].

    Position t's logits predict token t+1. A prediction is scored when the mask is 1 at both t
    and t+1 (so padding is never a target nor a source). Pass the attention mask for the usual
    loss; pass `token_mask(..., bos_token_id)` to also leave out the prediction made FROM BOS
    (it does not depend on any later token, so it is the same with or without an SAE spliced in).
    Computed in float64. per_token=True returns the tensor of scored losses (maybe empty) instead.
    """
    mask = _check_logits(logits, input_ids, attention_mask)
    losses = [torch.zeros(0, dtype=torch.float64, device=logits.device)]
    for r, s in _chunks(mask[:, :-1] & mask[:, 1:]):
        losses.append(F.cross_entropy(logits[r, s].double(), input_ids[r, s + 1], reduction="none"))
    losses = torch.cat(losses)
    if per_token:
        return losses
    if len(losses) == 0:
        raise ValueError("No prediction to score: the mask needs two consecutive real tokens in some row.")
    return losses.mean().item()


def delta_loss(clean: float, spliced: float) -> float:
    """Increase in next-token loss when the SAE reconstruction replaces the activations (nats): spliced - clean."""
    return check_finite(spliced, "spliced") - check_finite(clean, "clean")


def ce_loss_recovered(clean: float, spliced: float, zero_ablated: float) -> float:
    """Share of the loss gap to zero-ablation that the SAE recovers: (zero - spliced) / (zero - clean).

    1 = as good as the clean model, 0 = no better than zeroing the activations (unitless).
    """
    clean, spliced = check_finite(clean, "clean"), check_finite(spliced, "spliced")
    zero_ablated = check_finite(zero_ablated, "zero_ablated")
    if zero_ablated == clean:
        raise ValueError("ce_loss_recovered is undefined when zero-ablation does not change the loss.")
    return (zero_ablated - spliced) / (zero_ablated - clean)


def kl_div(clean_logits: torch.Tensor, other_logits: torch.Tensor, mask=None, per_token: bool = False):
    """KL(p_clean || p_other) of the next-token distributions in nats, averaged over positions where mask is 1.

    Per position: sum_v p_clean(v) * (log p_clean(v) - log p_other(v)), with p = softmax(logits)
    in float64. per_token=True returns the per-position tensor (maybe empty) instead of the mean.
    """
    if clean_logits.shape != other_logits.shape or clean_logits.dim() != 3:
        raise ValueError(
            f"clean_logits and other_logits must both be [batch, seq, vocab]; got "
            f"{tuple(clean_logits.shape)} and {tuple(other_logits.shape)}."
        )
    _check_finite(clean_logits, "clean_logits")
    _check_finite(other_logits, "other_logits")
    kl = [torch.zeros(0, dtype=torch.float64, device=clean_logits.device)]
    for r, s in _chunks(token_mask(clean_logits[..., 0], mask)):
        logp, logq = clean_logits[r, s].double().log_softmax(-1), other_logits[r, s].double().log_softmax(-1)
        kl.append(F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1))
    kl = torch.cat(kl)
    if per_token:
        return kl
    if len(kl) == 0:
        raise ValueError("The mask selects no position.")
    return kl.mean().item()


__all__ = [
    "EVAccumulator",
    "ce_loss",
    "ce_loss_recovered",
    "dead_fraction",
    "delta_loss",
    "dense_fraction",
    "explained_variance",
    "firing_counts",
    "kl_div",
    "l0",
    "token_mask",
]

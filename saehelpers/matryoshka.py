"""Matryoshka prefixes, groups and the parent/child hierarchy.

A Matryoshka SAE is trained so that each prefix of its dictionary, latents `0:w` for each `w` in
`release.matryoshka_widths`, works as an SAE on its own. The widths are not in the SAE's config:
every function here takes the release object (`saehelpers.get_release(...)`) for the layout.
For an SAE you trained yourself (the toy model), make a layout with
`dataclasses.replace(get_release("mini"), d_sae=64, matryoshka_widths=(4, 16, 64))`.

Explained variance (from `saehelpers.metrics`): `ev_mean` is 1 - SSE / sum ||x - mean(x)||^2, about the
mean (SAELens's current formula); `ev_zero` is 1 - SSE / sum ||x||^2, about zero.
"""

from __future__ import annotations

import pandas as pd
import torch

from .activations import bos_id, splice_losses
from .checks import as_int, check_feature, check_finite, check_int, check_sae
from .metrics import EVAccumulator
from .release import as_release, layer_of

HIERARCHY_COLUMNS = [
    "parent",
    "parent_group",
    "child",
    "child_group",
    "cosine",
    "p_parent_given_child",
    "p_child_given_parent",
    "child_freq",
    "score",
]


# ---------------------------------------------------------------- layout


def groups(release) -> list[tuple[int, int]]:
    """Matryoshka groups as half-open latent ranges [start, end), in order."""
    return as_release(release).groups


def group_of(release, latent) -> int:
    """Index of the Matryoshka group that holds `latent`."""
    release = as_release(release)
    return release.group_of(check_feature(latent, release.d_sae))


def latent_groups(release) -> torch.Tensor:
    """Group index of every latent, shape (d_sae,): handy for grouping per-latent statistics."""
    sizes = torch.tensor([end - start for start, end in as_release(release).groups])
    return torch.repeat_interleave(torch.arange(len(sizes)), sizes)


def check_width(release, width, strict: bool = True) -> int:
    """`width` as an int if it is a valid prefix width, else ValueError listing the valid widths.

    strict=True (the default) accepts only group boundaries, the prefixes that were trained to
    work on their own; strict=False accepts any width 1..d_sae (for comparisons).
    """
    release = as_release(release)
    valid = list(release.matryoshka_widths)
    if as_int(width) is None:
        raise ValueError(f"A prefix width must be an int, got {width!r}. Valid widths: {valid}.")
    width = as_int(width)
    if width <= 0 or width > release.d_sae:
        raise ValueError(
            f"Prefix width {width} is out of range: a prefix holds 1..{release.d_sae} latents. "
            f"Valid widths: {valid}."
        )
    if strict and width not in valid:
        raise ValueError(
            f"Prefix width {width} is not a Matryoshka group boundary of the {release.name!r} release. "
            f"Valid widths: {valid} (only these prefixes were trained as SAEs; pass strict=False to "
            "use another width anyway)."
        )
    return width


def check_widths(release, widths=None, strict: bool = True) -> tuple[int, ...]:
    """`widths` checked and sorted (an int or a list); None means all of the release's widths."""
    release = as_release(release)
    if widths is None:
        return tuple(release.matryoshka_widths)
    if as_int(widths) is not None:
        widths = [widths]
    widths = list(widths)
    if not widths:
        raise ValueError(
            f"No prefix widths given. Valid widths: {list(release.matryoshka_widths)} "
            "(or widths=None for all of them)."
        )
    return tuple(sorted({check_width(release, w, strict) for w in widths}))


def _layout(sae, release, d_last=None):
    """`release` as a Release (a preset name is looked up), after checking that its layout fits the SAE."""
    check_sae(sae, release, layers=False)
    if d_last is not None and d_last != sae.cfg.d_sae:
        raise ValueError(
            f"feature_acts must end in the SAE's {sae.cfg.d_sae} latents, got last dimension {d_last} "
            "(pass the output of sae.encode)."
        )
    return as_release(release)


def _batches(data, d: int, batch_size: int):
    """Flat (tokens, d) chunks of a tensor or of an iterable of tensors (for streaming)."""
    for batch in [data] if torch.is_tensor(data) else data:
        if batch.shape[-1] != d:
            raise ValueError(f"Expected tensors of shape (..., {d}), got {tuple(batch.shape)}.")
        if batch.numel():
            yield from batch.reshape(-1, d).split(batch_size)


def encode_batches(sae, x, batch_size: int = 1024):
    """`sae.encode` of `x` (..., d_in), `batch_size` tokens at a time: an iterator for `hierarchy`.

    At width 32,768 in float32, `sae.encode` of 32,768 tokens at once returns 4.3 GB and its working tensors
    take about as much again each (benchmarks/bench_hierarchy_memory.py); a batch of 1,024 tokens returns
    134 MB. `x` is checked now; each batch is encoded when the loop asks for it.
    """
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    batch_size = check_int(batch_size, "batch_size", low=1)
    d = sae.cfg.d_in
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[-1] != d:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be SAE inputs of shape (..., {d}) (e.g. acts.acts[layer]), got {shape}.")

    def batches():
        for chunk in _batches(x, d, batch_size):
            with torch.no_grad():  # per batch: grad mode must not stay off between yields
                f = sae.encode(chunk.to(sae.device, sae.dtype))
            yield f

    return batches()


# ---------------------------------------------------------------- prefix reconstructions


def prefix_decode(sae, release, feature_acts, widths=None, strict: bool = True) -> dict[int, torch.Tensor]:
    """Reconstruction of every prefix from one encode: {width: decode of latents 0:width}.

    Each value equals `sae.decode(feature_acts with every latent >= width set to 0)` up to float
    rounding, but they are built incrementally, recon(w2) = recon(w1) + acts[..., w1:w2] @ W_dec[w1:w2],
    so all prefixes together cost about one full decode. SAELens's decode steps are kept: b_dec,
    `hook_sae_recons` (called once per width), the output normalisation and reshape. Like `sae.decode`, call it once per
    `sae.encode` when the SAE normalises its input (layer_norm): the norm state is used up.
    """
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    release = _layout(sae, release, feature_acts.shape[-1])
    widths = check_widths(release, widths, strict)
    acts = feature_acts.to(sae.W_dec.dtype)
    recons, start, total = [], 0, sae.b_dec
    for w in widths:
        total = total + acts[..., start:w] @ sae.W_dec[start:w]
        recons.append(sae.hook_sae_recons(total))
        start = w
    # One call for all widths: the norm-out state (per token) broadcasts over the leading width axis.
    out = sae.reshape_fn_out(sae.run_time_activation_norm_fn_out(torch.stack(recons)), sae.d_head)
    return dict(zip(widths, out.unbind(0)))


@torch.no_grad()
def prefix_metrics(sae, release, x, widths=None, strict: bool = True, batch_size: int = 1024) -> pd.DataFrame:
    """Explained variance, L0 and MSE of each prefix, one row per width.

    `x`: SAE-input activations (..., d_in), or an iterable of such batches (accumulated, so any
    number of tokens fits in memory). Leave out the BOS position. Columns: width, group (index of
    the last group in the prefix), ev_mean and ev_zero (`metrics.explained_variance` about the mean
    and about zero, pooled over all tokens given), mse (mean over tokens of ||x - x_hat||^2,
    SAELens's convention) and l0 (mean number of active latents among 0:width).
    """
    release = _layout(sae, release)
    widths = check_widths(release, widths, strict)
    evs = [EVAccumulator() for _ in widths]
    l0 = [0] * len(widths)
    for chunk in _batches(x, sae.cfg.d_in, batch_size):
        acts = sae.encode(chunk.to(sae.device))
        recons = prefix_decode(sae, release, acts, widths, strict)
        for i, w in enumerate(widths):
            evs[i].add(chunk, recons[w])
            l0[i] += (acts[:, :w] != 0).sum().item()
    if not evs[0].n:
        raise ValueError("No activations given: x is empty.")
    rows = [
        {
            "width": w,
            "group": release.group_of(w - 1),
            "ev_mean": ev.value("mean"),
            "ev_zero": ev.value("zero"),
            "mse": ev.sum_sq_err / ev.n,
            "l0": k / ev.n,
        }
        for w, ev, k in zip(widths, evs, l0)
    ]
    return pd.DataFrame(rows)


@torch.no_grad()
def prefix_loss(model, sae, release, batches, widths=None, strict: bool = True, progress: bool = True):
    """Next-token loss with each prefix's reconstruction spliced into the model at the SAE's layer, one row per width.

    Per batch: one clean forward pass (capturing resid_post), ONE `sae.encode`, all prefix
    reconstructions from it (`prefix_decode`), then one forward pass per width with resid_post
    replaced by that reconstruction. As in `activations.sae_stats`, BOS and padding keep their
    clean value (the SAE is not meant to reconstruct BOS's huge activation). Columns: width, ce
    (nats/token), delta_loss = ce - ce_clean, kl = KL(clean || spliced) per token (nats), and ce_clean.
    Loss counts predictions from a kept token to a kept token (`metrics.ce_loss` with `token_mask`).
    """
    release = _layout(sae, release)
    widths = check_widths(release, widths, strict)
    layer = layer_of(sae, model)

    def edits(x, keep):
        recons = prefix_decode(sae, release, sae.encode(x.to(sae.device, sae.dtype)), widths, strict)

        def splice(h, r):
            h = h.clone()
            h[keep] = r.to(h.device, h.dtype)
            return h

        return {w: (lambda h, r=r: splice(h, r)) for w, r in recons.items()}

    sums = splice_losses(
        model, layer, batches, edits, bos_id(model, None), f"layer {layer} prefix losses", progress
    )
    ce_clean = sums.ce_clean / sums.n_predictions
    rows = [
        {
            "width": w,
            "ce": sums.mean_ce(w),
            "delta_loss": sums.mean_ce(w) - ce_clean,
            "kl": sums.mean_kl(w),
            "ce_clean": ce_clean,
        }  # fmt: skip
        for w in widths
    ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- hierarchy


@torch.no_grad()
def hierarchy(
    sae,
    release,
    feature_acts,
    parents=None,
    top_k: int = 5,
    min_cosine: float = 0.1,
    min_p_parent: float = 0.5,
    min_child_fires: int = 5,
    sort_by: str = "score",
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Children of each parent latent: later-group latents that point the same way and fire inside it.

    Method. For a parent p and each latent c in a group after p's group:
    - cosine: cosine similarity of their decoder rows (W_dec[p], W_dec[c]);
    - p_parent_given_child = P(p fires | c fires), counted over the tokens of `feature_acts`
      ("fires" = activation != 0). A child of p fires mostly where p fires, so this is near 1;
    - p_child_given_parent = P(c fires | p fires): how much of the parent the child covers;
    - score = cosine * p_parent_given_child.
    A candidate is kept when cosine >= min_cosine, p_parent_given_child >= min_p_parent and c fired
    at least min_child_fires times (fewer makes the probability noise); the top_k by `sort_by`
    ("score", "cosine" or "p_parent_given_child") are returned. Lower min_cosine (e.g. to -1) and
    sort by p_parent_given_child to also see children whose decoder row carries only the part that
    differs from the parent, which the nesting can encourage.

    `feature_acts`: `sae.encode` output (..., d_sae) or an iterable of such batches (BOS left out).
    `parents`: latent ids in any group but the last; None means every latent of the first group.
    Returns one row per (parent, child); columns are HIERARCHY_COLUMNS. Tokens are counted
    `batch_size` at a time (1024 x 32768 float32 = 134 MB).
    """
    release = _layout(sae, release)
    top_k = check_int(top_k, "top_k", low=1, hint="top_k is how many children to keep per parent.")
    min_cosine = check_finite(min_cosine, "min_cosine", -1, 1)
    min_p_parent = check_finite(min_p_parent, "min_p_parent", 0, 1)
    min_child_fires = check_int(min_child_fires, "min_child_fires", low=0)
    batch_size = check_int(batch_size, "batch_size", low=1)
    if sort_by not in ("score", "cosine", "p_parent_given_child"):
        raise ValueError(f"sort_by must be 'score', 'cosine' or 'p_parent_given_child', got {sort_by!r}.")
    parents = _check_parents(release, parents)

    # Firing counts: fires[c] = #tokens where c fires, joint[i, c] = #tokens where parents[i] and c fire.
    # Counted where the activations are (a chunk's float32 counts are exact), summed in float64 there, and
    # copied to the CPU once: no [parents, d_sae] copy per chunk on the GPU path.
    n, fires, joint = 0, 0, 0
    for chunk in _batches(feature_acts, release.d_sae, batch_size):
        on = (chunk != 0).float()
        n += len(on)
        fires = fires + on.sum(0).double()
        joint = joint + (on[:, parents].T @ on).double()
    if n == 0:
        raise ValueError("No activations given: feature_acts is empty.")
    fires, joint = fires.cpu(), joint.cpu()

    W = sae.W_dec.detach().float()
    norms = W.norm(dim=1).clamp_min(1e-8)
    cos = ((W[parents] @ W.T) / (norms[parents, None] * norms)).cpu().double()
    p_parent = joint / fires.clamp(min=1)
    p_child = joint / fires[parents].clamp(min=1)[:, None]
    score = cos * p_parent
    key = {"score": score, "cosine": cos, "p_parent_given_child": p_parent}[sort_by]
    gid = latent_groups(release)

    rows = []
    for i, p in enumerate(parents):
        ok = (fires >= min_child_fires) & (cos[i] >= min_cosine) & (p_parent[i] >= min_p_parent)
        ok[: release.groups[int(gid[p])][1]] = False  # children live in later groups only
        cand = ok.nonzero().flatten()
        for c in cand[key[i, cand].argsort(descending=True)][:top_k].tolist():
            rows.append(
                {
                    "parent": p,
                    "parent_group": int(gid[p]),
                    "child": c,
                    "child_group": int(gid[c]),
                    "cosine": cos[i, c].item(),
                    "p_parent_given_child": p_parent[i, c].item(),
                    "p_child_given_parent": p_child[i, c].item(),
                    "child_freq": fires[c].item() / n,
                    "score": score[i, c].item(),
                }
            )
    return pd.DataFrame(rows, columns=HIERARCHY_COLUMNS)


def parent_children(sae, release, feature_acts, parent: int, **kwargs) -> pd.DataFrame:
    """The children of one parent latent, best first (see `hierarchy` for the method and options)."""
    table = hierarchy(sae, release, feature_acts, [parent], **kwargs)
    return table.drop(columns=["parent", "parent_group"]).reset_index(drop=True)


def _check_parents(release, parents) -> list[int]:
    first, last = release.groups[0], release.groups[-1]
    if parents is None:
        return list(range(*first))
    if as_int(parents) is not None:
        parents = [parents]
    parents = list(dict.fromkeys(check_feature(p, release.d_sae) for p in parents))
    if not parents:
        raise ValueError(
            f"No parents given: pass latent ids in 0..{last[0] - 1}, or None for the first group."
        )
    for p in parents:
        if p >= last[0]:
            raise ValueError(
                f"Latent {p} is in the last group (latents {last[0]}..{last[1] - 1}), which has no later "
                f"group to hold children. Parents must be in 0..{last[0] - 1}."
            )
    return parents

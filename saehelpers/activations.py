"""Collect resid_post activations in batches, measure one SAE on held-out tokens, report memory.

BOS and padding are left out everywhere: BOS's resid_post has a norm far larger than any other
token's (it would dominate every sum) and padding is not text. The BOS id comes from the
model's config, the padding from each batch's attention mask, so left and right padding both work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import hooks, lm, metrics
from .checks import check_int, check_sae
from .progress import progress_bar
from .release import layer_of


def unpack_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) from a dict-like batch (token_batches, a tokenizer) or a tensor of ids."""
    if isinstance(batch, torch.Tensor):
        return batch, torch.ones_like(batch)
    try:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
    except (TypeError, KeyError, AttributeError):
        raise ValueError(
            "Each batch must be a dict with 'input_ids' (and 'attention_mask'), e.g. from "
            f"saehelpers.text.token_batches or tokenizer(..., return_tensors='pt'); got {type(batch).__name__}."
        ) from None
    return ids, torch.ones_like(ids) if mask is None else mask


def bos_id(model, bos_token_id: int | None = None) -> int:
    """The BOS token id: `bos_token_id` if given, else the model's config's; ValueError when neither has one.

    BOS is found by this id everywhere statistics leave it out (`metrics.token_mask`), which also holds for
    rows cut from the middle of a text and for left padding."""
    bos = model.config.bos_token_id if bos_token_id is None else bos_token_id
    if bos is None:
        raise ValueError("The model's config has no bos_token_id; pass bos_token_id=... explicitly.")
    return bos


@dataclass
class Activations:
    """resid_post of the kept tokens (not BOS, not padding), one row per token, in batch order.

    acts[layer]: [n_tokens, d_model]. Token i is token_ids[i], at `position[i]` of text row `row[i]`
    (position 0 = BOS, counted without padding); rows[r] holds that row's tokens, so
    `context(i)` gives the text up to token i.
    """

    acts: dict[int, torch.Tensor]
    token_ids: torch.Tensor
    row: torch.Tensor
    position: torch.Tensor
    rows: list[torch.Tensor]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def nbytes(self) -> int:
        tensors = [*self.acts.values(), self.token_ids, self.row, self.position, *self.rows]
        return sum(t.numel() * t.element_size() for t in tensors)

    def context(self, i: int, before: int | None = None) -> torch.Tensor:
        """Token ids of token i's row up to and including token i (the last `before` + 1 of them if given)."""
        p = int(self.position[i])
        start = 0 if before is None else max(0, p - before)
        return self.rows[int(self.row[i])][start : p + 1]

    def __repr__(self) -> str:
        d = next(iter(self.acts.values())).shape[1]
        return (
            f"Activations(layers {list(self.acts)}, {self.n_tokens} tokens x d_model {d}, "
            f"{self.nbytes / 2**20:.1f} MB)"
        )


# Above this many tokens (a "collect everything" max_tokens) batches are joined at the end instead of
# copied into a preallocated tensor, which would reserve max_tokens rows up front.
PREALLOCATE_MAX = 1 << 22


@torch.no_grad()
def collect_resid(
    model,
    batches,
    layers,
    max_tokens: int | None = None,
    bos_token_id: int | None = None,
    device="cpu",
    dtype=torch.float32,
    progress: bool = True,
) -> Activations:
    """resid_post at `layers` for every kept token of `batches` (BOS and padding dropped).

    ONE forward pass per batch for all layers, stopped after the deepest one (`hooks.resid_post`):
    no logits, no later layers. Results go to `device` as `dtype` (CPU float32 by default, so
    GPU memory stays free). Stops once `max_tokens` tokens are collected.
    """
    layers = hooks.check_layers(model, layers)
    bos = bos_id(model, bos_token_id)
    max_tokens = None if max_tokens is None else check_int(max_tokens, "max_tokens", low=1, hint="None: all.")
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    # With max_tokens known, each batch is copied straight into one tensor per layer: joining a list of
    # batches at the end peaks at twice the activations (the freed batches stay in the allocator's heap),
    # 3.8 GB more in notebook 05 on the real release. Rows never written are never touched (not resident).
    out: dict[int, torch.Tensor] = {}
    ids_parts, row_parts, pos_parts, rows = [], [], [], []
    n = 0
    bar = progress_bar(batches, desc=f"resid_post {layers}", unit="batch", disable=not progress)
    for batch in bar:
        ids, mask = unpack_batch(batch)
        ids, mask = ids.to(model.device), mask.to(model.device)
        resid = hooks.resid_post(model, ids, layers, mask)
        keep = metrics.token_mask(ids, mask, bos)
        take = int(keep.sum()) if max_tokens is None else min(int(keep.sum()), max_tokens - n)
        r, s = keep.nonzero(as_tuple=True)  # row-major, the same order as resid[layer][keep]
        r, s = r[:take], s[:take]
        for layer in layers:
            rows_here = resid[layer][r, s]
            if max_tokens is None or max_tokens > PREALLOCATE_MAX:
                parts[layer].append(rows_here.to(device=device, dtype=dtype))
                continue
            if layer not in out:
                out[layer] = torch.empty(max_tokens, rows_here.shape[-1], device=device, dtype=dtype)
            out[layer][n : n + take] = rows_here
        position = mask.cumsum(1) - 1  # index in the row without its padding: BOS is 0
        ids_parts.append(ids[r, s].cpu())
        row_parts.append((r + len(rows)).cpu())
        pos_parts.append(position[r, s].cpu())
        rows.extend(ids[i][mask[i].bool()].cpu() for i in range(len(ids)))
        n += take
        bar.set_postfix(tokens=n)
        if max_tokens is not None and n >= max_tokens:
            break
    bar.close()
    if n == 0:
        raise ValueError("No tokens collected: the batches were empty or held only BOS and padding.")
    acts = (
        {layer: out[layer][:n] for layer in layers}
        if out
        else {layer: torch.cat(parts[layer]) for layer in layers}
    )
    return Activations(acts, torch.cat(ids_parts), torch.cat(row_parts), torch.cat(pos_parts), rows)


@dataclass
class SAEStats:
    """One SAE's numbers on held-out tokens (see `sae_stats`). Losses and KL in nats."""

    layer: int
    n_tokens: int  # SAE inputs: tokens that are not BOS or padding
    n_predictions: int  # next-token predictions scored (both ends such tokens)
    explained_variance: float  # about the mean (SAELens 6.54's `explained_variance`)
    explained_variance_zero: float  # about zero
    l0: float  # mean number of active latents per token
    l0_hist: torch.Tensor  # l0_hist[k] = number of tokens with exactly k active latents
    firing_counts: torch.Tensor  # [d_sae]: tokens on which each latent fired
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    ce_clean: float
    ce_spliced: float
    ce_zero_ablated: float
    delta_loss: float
    ce_recovered: float
    kl_spliced: float  # KL(clean || spliced) per token
    kl_zero_ablated: float

    def row(self) -> dict:
        """The scalar fields, for one row of a pandas table."""
        return {k: v for k, v in vars(self).items() if not isinstance(v, torch.Tensor)}


@dataclass
class LossSums:
    """Next-token loss sums from `splice_losses`: the clean run's and each edited run's, in nats."""

    ce_clean: float
    ce: dict[str, float]
    kl: dict[str, float]
    n_predictions: int  # predictions from a kept token to a kept token (the CE denominator)
    n_positions: int  # kept positions (the KL denominator)

    def mean_ce(self, name: str) -> float:
        return self.ce[name] / self.n_predictions

    def mean_kl(self, name: str) -> float:
        return self.kl[name] / self.n_positions


@torch.no_grad()
def splice_losses(
    model, layer: int, batches, edits, bos: int, desc: str = "", progress: bool = True
) -> LossSums:
    """The loop behind `sae_stats` and `matryoshka.prefix_loss`: per batch, one clean pass capturing
    resid_post at `layer`, then one pass per edit with resid_post replaced, and their losses.

    edits(x, keep) -> {name: fn}: called once per batch with the kept tokens' activations x [n, d_model]
    and the keep mask [batch, seq]; each fn maps resid_post [batch, seq, d_model] to its replacement.
    Losses count predictions from a kept token to a kept token (`lm.next_token_losses`); KL every kept
    position. Batches without a kept token are skipped.
    """
    sums = LossSums(0.0, {}, {}, 0, 0)
    for batch in progress_bar(batches, desc=desc, unit="batch", disable=not progress):
        ids, mask = (t.to(model.device) for t in unpack_batch(batch))
        keep = metrics.token_mask(ids, mask, bos)
        if not keep.any():
            continue
        with hooks.capture(model, [layer]) as cap:
            clean = lm.final_hidden(model, ids, mask)
        others = {}
        for name, fn in edits(cap[layer][keep], keep).items():
            with hooks.replace(model, layer, fn):
                others[name] = lm.final_hidden(model, ids, mask)
        ce_clean, ce, kl = lm.next_token_losses(model, ids, keep, clean, others)
        sums.ce_clean += ce_clean.sum().item()
        for name in others:
            sums.ce[name] = sums.ce.get(name, 0.0) + ce[name].sum().item()
            sums.kl[name] = sums.kl.get(name, 0.0) + kl[name].sum().item()
        sums.n_predictions += len(ce_clean)
        sums.n_positions += int(keep.sum())
    if sums.n_predictions == 0:
        raise ValueError("No tokens to measure: the batches need rows with two or more tokens after BOS.")
    return sums


@torch.no_grad()
def sae_stats(
    model,
    sae,
    batches,
    dense_threshold: float = 0.1,
    bos_token_id: int | None = None,
    progress: bool = True,
) -> SAEStats:
    """Measure `sae` at resid_post of its layer on `batches`, streaming: nothing grows with the token count.

    Per batch, three full forward passes: clean (capturing resid_post), spliced (resid_post
    replaced by the SAE's reconstruction) and zero-ablated (replaced by zeros). Replacement
    happens only at kept tokens; BOS stays clean in all three runs, because the SAE is not meant
    to reconstruct its huge activation and every later token attends to it (breaking it would
    measure the BOS, not the SAE). The same kept tokens feed EV, L0 and firing counts; loss counts
    predictions from a kept token to a kept token (`metrics.ce_loss` with `token_mask`); KL counts
    every kept position. All sums are float64, so the result equals the same metrics on the
    concatenated tokens. (SAELens's evals also keep BOS out of the splice, but zero-ablate it.)
    No [batch x seq x vocab] logits tensor is made: the unembedding runs a chunk of positions at a
    time (`lm.next_token_losses`), so memory beyond the model is about 3 x 128 MB.
    """
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    bos = bos_id(model, bos_token_id)
    layer = layer_of(sae, model)
    ev = metrics.EVAccumulator()
    d_sae = sae.cfg.d_sae
    l0_hist = torch.zeros(d_sae + 1, dtype=torch.long)
    counts = torch.zeros(d_sae, dtype=torch.long)

    def recon(h):
        # encode/decode rather than sae(h): sae(h) returns h itself when use_error_term is on.
        return sae.decode(sae.encode(h.to(sae.device, sae.dtype))).to(h.device, h.dtype)

    def edits(x, keep):
        nonlocal l0_hist, counts
        feats = sae.encode(x.to(sae.device, sae.dtype))
        ev.add(x, sae.decode(feats))
        l0_hist += torch.bincount((feats != 0).sum(-1).cpu(), minlength=d_sae + 1)
        counts += metrics.firing_counts(feats).cpu()
        k3 = keep.unsqueeze(-1)
        return {
            "spliced": lambda h: torch.where(k3, recon(h), h),
            "zero_ablated": lambda h: h.masked_fill(k3, 0.0),
        }

    sums = splice_losses(model, layer, batches, edits, bos, f"layer {layer} SAE", progress)
    n_pos = sums.n_positions
    ce = {"ce_clean": sums.ce_clean / sums.n_predictions}
    ce |= {f"ce_{name}": sums.mean_ce(name) for name in ("spliced", "zero_ablated")}
    kl = {f"kl_{name}": sums.mean_kl(name) for name in ("spliced", "zero_ablated")}
    return SAEStats(
        layer=layer,
        n_tokens=n_pos,
        n_predictions=sums.n_predictions,
        explained_variance=ev.value("mean"),
        explained_variance_zero=ev.value("zero"),
        l0=(l0_hist * torch.arange(d_sae + 1)).sum().item() / n_pos,
        l0_hist=l0_hist,
        firing_counts=counts,
        dead_fraction=metrics.dead_fraction(counts),
        dense_fraction=metrics.dense_fraction(counts, n_pos, dense_threshold),
        dense_threshold=dense_threshold,
        **ce,
        delta_loss=metrics.delta_loss(ce["ce_clean"], ce["ce_spliced"]),
        ce_recovered=metrics.ce_loss_recovered(ce["ce_clean"], ce["ce_spliced"], ce["ce_zero_ablated"]),
        **kl,
    )


def _nbytes(obj) -> int:
    """Bytes held by tensors in obj (a tensor, module, Activations, or a dict / list of them)."""
    if isinstance(obj, torch.Tensor):
        return 0 if obj.is_meta else obj.numel() * obj.element_size()
    if isinstance(obj, torch.nn.Module):  # parameters() and buffers() skip tied duplicates
        return sum(_nbytes(t) for t in (*obj.parameters(), *obj.buffers()))
    if isinstance(obj, Activations):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


class MemoryReport(dict):
    """name -> MB; prints as a small table."""

    def __str__(self) -> str:
        return "\n".join(f"{name:<28} {mb:>10,.1f} MB" for name, mb in self.items())


def memory_report(model=None, sae=None, tensors: dict | None = None) -> MemoryReport:
    """MB held by the model's weights, the SAE's weights, the named tensors, and the whole process.

    Weights and tensors: numel x bytes per element (an SAE moved to "meta" counts 0). "process
    RSS" is the resident memory of this Python process (psutil): weights, activations, caches
    and everything else. On a GPU, the CUDA memory allocated by PyTorch is added.
    """
    import psutil

    mb = 2**20
    report = MemoryReport()
    if model is not None:
        report["model weights"] = _nbytes(model) / mb
    if sae is not None:
        report["SAE weights"] = _nbytes(sae) / mb
    for name, obj in (tensors or {}).items():
        report[name] = _nbytes(obj) / mb
    report["process RSS"] = psutil.Process().memory_info().rss / mb
    if torch.cuda.is_available():
        report["CUDA allocated"] = torch.cuda.memory_allocated() / mb
    return report


__all__ = [
    "Activations",
    "MemoryReport",
    "SAEStats",
    "bos_id",
    "collect_resid",
    "memory_report",
    "sae_stats",
    "splice_losses",
    "unpack_batch",
]

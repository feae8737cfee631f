"""Compute an atlas: every latent of the chosen layers, on one process or on K under torchrun.

Every process reads every token batch (cheap: tokenizing) so all know each token's place in the
stream; process r encodes batches r, r + K, r + 2K, ... only. After each round of K batches, rank 0
gathers the round's moments and folds them in batch order; at the end of a layer it gathers the
histograms and example tables and keeps the k largest keys (`stats`). Only rank 0 writes, so the
files are the same for any K. torch.distributed is the engine: gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .. import hooks, metrics
from ..activations import unpack_batch
from ..checks import check_int
from ..features import dense_on_cpu, first_n
from ..loading import available_memory, load_model, load_sae, pick_device
from ..progress import progress_bar
from ..release import get_release
from ..text import token_batches
from .site import check_out, describe_layer, lens_tables, write_site
from .stats import AtlasStats, Moments


class Group:
    """The processes of this run (one, or those torchrun started) and how they gather to rank 0."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = None
        if self.world > 1:
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
            self.device = f"cuda:{self.local}" if backend == "nccl" else "cpu"

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `t` (same shape everywhere), in rank order, on rank 0; [] elsewhere."""
        if self.world == 1:
            return [t]
        import torch.distributed as dist

        t = t.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)] if self.rank == 0 else None
        dist.gather(t, out, dst=0)
        return [x.cpu() for x in out] if self.rank == 0 else []

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def table_bytes(d_sae: int, k: int, before: int, after: int) -> int:
    """RAM of one layer's statistics (examples, histogram, moments)."""
    w = before + 1 + after
    return 2 * d_sae * k * (8 + 4 + 8 + w * 8) + d_sae * (80 * 8 + 3 * 8)


def check_fits(d_sae: int, k: int, before: int, after: int, batch_tokens: int, world: int, free: int) -> int:
    """The bytes one process needs; raises a clear error when that exceeds `free`."""
    tables = table_bytes(d_sae, k, before, after)
    need = (
        tables * (2 + (world if world > 1 else 0)) + 3 * batch_tokens * d_sae * 4
    )  # + rank 0's gathered copies
    if need > free:
        raise MemoryError(
            f"An atlas of {d_sae} latents with {k} examples each and {before}+1+{after} context tokens needs "
            f"about {need / 2**30:.1f} GiB of RAM in this process ({tables / 2**30:.2f} GiB per table copy, "
            f"{world} process(es)), but {free / 2**30:.1f} GiB is free. Fix: lower --examples or --context, or "
            "--batch-size, or run on a machine with more memory."
        )
    return need


@contextmanager
def _closing(group: Group):
    try:
        yield group
    finally:
        group.close()


@torch.no_grad()
def collect(
    model, sae, layer, batches, tokens, group, k, before, after, progress=True, clock=None
) -> AtlasStats:
    """One layer's statistics over the first `tokens` kept tokens of `batches`, merged on rank 0.

    clock: a dict that gets the seconds spent encoding ("encode_s"), in the statistics ("merge_s") and
    waiting for or gathering from the other processes ("gather_s")."""
    clock = {} if clock is None else clock
    for name in ("encode_s", "merge_s", "gather_s"):
        clock.setdefault(name, 0.0)
    stats = AtlasStats(sae.cfg.d_sae, k, before, after)
    bos = model.config.bos_token_id
    seen, i, pending = 0, 0, None
    bar = progress_bar(
        total=tokens, desc=f"layer {layer} atlas", unit="tok", disable=not progress or group.rank
    )
    for batch in batches:
        ids, mask = unpack_batch(batch)
        keep = first_n(metrics.token_mask(ids, mask, bos), tokens - seen)
        n = int(keep.sum())
        if n == 0:
            break
        if i % group.world == 0:
            pending = Moments(stats.d_sae)  # this rank's batch of the round (none: zeros, a no-op merge)
        if i % group.world == group.rank:
            t = time.perf_counter()
            x = hooks.resid_post(model, ids.to(model.device), [layer], mask.to(model.device))[layer]
            feats = dense_on_cpu(sae.encode(x.to(sae.device, sae.dtype)).reshape(-1, stats.d_sae))
            t2 = time.perf_counter()
            pending = stats.add(feats, ids, keep, seen)
            clock["encode_s"] += t2 - t
            clock["merge_s"] += time.perf_counter() - t2
        seen += n
        i += 1
        bar.update(n)
        if i % group.world == 0:
            t = time.perf_counter()
            stats.merge_moments([Moments.unstack(m) for m in group.gather(pending.stack())])
            clock["gather_s"] += time.perf_counter() - t
            pending = None
        if seen >= tokens:
            break
    if pending is not None:  # a last, partial round
        stats.merge_moments([Moments.unstack(t) for t in group.gather(pending.stack())])
    bar.close()
    if seen == 0:
        raise ValueError("No tokens to read: the text was empty or held only BOS and padding.")
    stats.n_tokens = seen
    t = time.perf_counter()
    gathered = {name: group.gather(x) for name, x in stats.tables().items()}
    if group.rank == 0:
        stats.merge_tables([{n: g[r] for n, g in gathered.items()} for r in range(1, group.world)])
    clock["gather_s"] += time.perf_counter() - t
    return stats


def build_atlas(
    preset: str, layers, tokens: int, out, *, examples: int = 10, before: int = 8, after: int = 4,
    batch_size: int = 8, seq_len: int = 128, texts=None, overwrite: bool = False, progress: bool = True,
    device=None, dtype=None, threads: int | None = None, timings=None, model=None, tokenizer=None,
    saes: dict | None = None,
) -> Path | None:  # fmt: skip
    """Compute and write the atlas of `layers` over `tokens` held-out tokens into folder `out`.

    Returns the path of index.html on rank 0 (None on the other ranks). See `python -m saehelpers atlas -h`.
    threads: CPU threads per process (torch.set_num_threads). On a CPU the activations' last bits depend on
    the thread count, so K processes give the same files as one when each uses as many threads
    (torchrun gives each process one thread unless OMP_NUM_THREADS says otherwise).
    timings: a JSON file (outside `out`) where rank 0 writes the seconds each phase took, per layer.
    model, tokenizer, saes ({layer: sae}): already loaded ones to use (a notebook's), instead of loading them.
    """
    rel = get_release(preset)
    if isinstance(layers, int):
        layers = [layers]
    layers = sorted(dict.fromkeys(rel.check_layer(layer) for layer in layers))
    if not layers:
        raise ValueError(
            f"Give at least one layer; the {rel.name!r} release has SAEs for layers {list(rel.layers)}."
        )
    tokens = check_int(tokens, "tokens", low=1)
    examples = check_int(examples, "examples", low=1)
    before, after = check_int(before, "before", low=0), check_int(after, "after", low=0)
    batch_size, seq_len = check_int(batch_size, "batch_size", low=1), check_int(seq_len, "seq_len", low=2)
    out = check_out(out, overwrite)
    texts = None if texts is None else list(texts)
    if threads is not None:
        torch.set_num_threads(check_int(threads, "threads", low=1))
    with _closing(Group()) as group:
        check_fits(
            rel.d_sae, examples, before, after, batch_size * seq_len, group.world, available_memory("cpu")
        )
        device = group.device if group.device not in (None, "cpu") else device
        if group.world > 1 and device is None:
            device = pick_device(None)
        if model is None or tokenizer is None:
            model, tokenizer = load_model(rel.name, device=device, dtype=dtype)
        saes = saes or {}
        described, clocks = [], []
        for layer in layers:
            start = time.perf_counter()
            sae = saes.get(layer) or load_sae(layer, rel.name, device=device, dtype=dtype)
            clock = {"layer": layer, "load_s": time.perf_counter() - start}
            batches = token_batches(tokenizer, rel.name, batch_size, seq_len, split="heldout", texts=texts)
            t = time.perf_counter()
            stats = collect(
                model, sae, layer, batches, tokens, group, examples, before, after, progress, clock
            )
            clock |= {"stream_s": time.perf_counter() - t, "tokens": stats.n_tokens}
            t = time.perf_counter()
            ids, vals = lens_tables(model, sae.W_dec.detach(), group.rank, group.world, progress)
            lens = (sum(group.gather(ids)), sum(group.gather(vals)))  # a chunk is one rank's, zeros elsewhere
            clock["lens_s"], t = time.perf_counter() - t, time.perf_counter()
            if group.rank == 0:
                described.append(describe_layer(tokenizer, sae, rel, layer, stats, lens, progress))
            clock["describe_s"] = time.perf_counter() - t
            clocks.append(clock)
            del sae, stats
        group.barrier()
        if group.rank != 0:
            return None
        settings = {"tokens": tokens, "examples": examples, "before": before, "after": after,
                    "batch_size": batch_size, "seq_len": seq_len,
                    "text": "heldout" if texts is None else "given texts"}  # fmt: skip
        t = time.perf_counter()
        index = write_site(out, rel, described, settings)
        if timings is not None:
            done = {
                "write_s": time.perf_counter() - t,
                "world": group.world,
                "threads": torch.get_num_threads(),
            }
            Path(timings).write_text(json.dumps({**done, "layers": clocks}, indent=1) + "\n")
        return index


__all__ = ["build_atlas", "check_fits", "collect", "table_bytes"]

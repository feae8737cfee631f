"""Statistics of every latent that merge exactly: any split of the token batches gives the same bits.

The feature-card statistics (`features.FeatureStats`) keep a latent's top and random examples in a
bounded table; here the same tables get keys that are unique per firing, so the k kept are the k
largest keys of all firings, whatever order or process saw them:
- top examples: key = (activation's float bits << 32) | (2**32 - 1 - token index): equal activations
  go to the earlier token;
- random sample: key = (uniform_key(index, latent) << 31) | index: a hash of the token's place in the
  stream, so K processes draw the same sample as one;
- histogram: fixed bins (`features.HIST_EDGES`, fixed before the run), integer counts that add up;
- moments: count, mean and M2 of the nonzero activations, per batch (Welford, in token order), merged
  with Chan's formula in float64 in batch order, never in the order processes finish.
The token index is the token's place among the kept tokens of the whole stream (BOS and padding
left out), which every process knows because every process reads (but does not encode) every batch.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from ..features import (
    BLOCK,
    HIST_EDGES,
    INNER_EDGES,
    Examples,
    enter_example,
    fill_examples,
    uniform_key_one,
    weakest_slot,
)

_LOW32 = 0xFFFFFFFF
_LOW31 = 0x7FFFFFFF
MAX_INDEX = 2**31  # token indices must fit the keys' low bits


@njit(cache=True)
def _add_batch_exact(feats, ids, keep, seq, n0, edges, hist, mcount, mmean, mm2,
                     key, value, index, tokens, acts, before, after):  # fmt: skip
    """As features._add_batch, with unique keys and per-batch Welford moments (mcount/mmean/mm2 start at 0)."""
    d = feats.shape[1]
    bits = feats.view(np.int32)
    weak = np.empty(2 * d, np.int64)
    floor = np.empty(2 * d, np.int64)
    for r in range(2 * d):
        weak[r] = weakest_slot(key[r])
        floor[r] = key[r, weak[r]]
    ent = np.empty((4 * d, 7), np.int64)
    m, n = 0, n0
    for t in range(len(keep)):
        if not keep[t]:
            continue
        row = bits[t]
        for b in range(0, d, BLOCK):
            end = min(b + BLOCK, d)
            any_bit = 0  # one vectorised test per block: most blocks have no firing at all
            for f in range(b, end):
                any_bit |= row[f]
            if any_bit == 0:
                continue
            for f in range(b, end):
                v = feats[t, f]
                if v <= 0:  # JumpReLU / TopK activations are >= 0; 0 is "not firing"
                    continue
                hist[f, np.searchsorted(edges, v)] += 1
                mcount[f] += 1
                delta = np.float64(v) - mmean[f]
                mmean[f] += delta / mcount[f]
                mm2[f] += delta * (np.float64(v) - mmean[f])
                top_key = (np.int64(row[f]) << 32) | (_LOW32 - n)
                sample_key = (uniform_key_one(n, f, d) << 31) | n
                to_top, to_sample = top_key > floor[f], sample_key > floor[d + f]
                if not (to_top or to_sample):
                    continue
                if m == len(ent):
                    ent = np.concatenate((ent, np.empty_like(ent)))
                ent[m, 0], ent[m, 1], ent[m, 2], ent[m, 3], ent[m, 5] = t, f, n, -1, -1
                if to_top:
                    ent[m, 3], ent[m, 4] = enter_example(f, top_key, weak, floor, key), top_key
                if to_sample:
                    ent[m, 5], ent[m, 6] = enter_example(d + f, sample_key, weak, floor, key), sample_key
                m += 1
        n += 1
    fill_examples(ent, m, feats, ids, keep, seq, key, value, index, tokens, acts, before, after)
    return n - n0


class Moments:
    """count, mean and M2 (sum of squared deviations) per latent, over its nonzero activations, float64."""

    def __init__(self, d: int):
        self.count = torch.zeros(d, dtype=torch.float64)
        self.mean = torch.zeros(d, dtype=torch.float64)
        self.m2 = torch.zeros(d, dtype=torch.float64)

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s pairwise update, in place: self then other (the order is part of the result)."""
        n = self.count + other.count
        delta = other.mean - self.mean
        share = torch.where(n > 0, other.count / n.clamp_min(1), 0.0)
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + other.m2 + delta * delta * self.count * share
        self.count = n
        return self

    def stack(self) -> torch.Tensor:
        return torch.stack([self.count, self.mean, self.m2])

    @classmethod
    def unstack(cls, t: torch.Tensor) -> Moments:
        m = cls.__new__(cls)
        m.count, m.mean, m.m2 = (x.clone() for x in t)
        return m

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / self.count.clamp_min(1)).sqrt()


class AtlasStats:
    """One layer's mergeable statistics: histogram, moments, top and random examples (k each) per latent."""

    def __init__(self, d_sae: int, k: int = 10, before: int = 8, after: int = 4):
        self.d_sae, self.n_tokens = d_sae, 0
        self.hist = torch.zeros(d_sae, len(HIST_EDGES) - 1, dtype=torch.long)
        self.moments = Moments(d_sae)
        self.examples = Examples(2 * d_sae, k, before, after)

    @torch.no_grad()
    def add(self, feats: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor, n0: int) -> Moments:
        """Add one batch whose first kept token has stream index n0; returns the batch's own moments.

        feats [tokens, d_sae] float32 on the CPU (rows of input_ids.shape[1] tokens end to end). The
        caller merges the returned moments in batch order (`merge_moments`): they are not added here.
        """
        d, ex = self.d_sae, self.examples
        feats = feats.to("cpu", torch.float32).reshape(-1, d).contiguous()
        ids = input_ids.to("cpu", torch.long).reshape(-1).contiguous()
        keep = keep.to("cpu", torch.bool).reshape(-1).contiguous()
        if n0 + int(keep.sum()) >= MAX_INDEX:
            raise ValueError(f"At most {MAX_INDEX - 1} tokens per layer: ask for fewer --tokens.")
        mom = Moments(d)
        self.n_tokens += _add_batch_exact(
            feats.numpy(), ids.numpy(), keep.numpy(), input_ids.shape[-1], n0, INNER_EDGES,
            self.hist.numpy(), mom.count.numpy(), mom.mean.numpy(), mom.m2.numpy(),
            *(getattr(ex, name).numpy() for name in Examples.FIELDS), ex.before, ex.after,
        )  # fmt: skip
        return mom

    def merge_moments(self, batch_moments: list[Moments]) -> None:
        """Fold batches' moments in, in the order given (the batches' order in the stream)."""
        for m in batch_moments:
            self.moments.merge(m)

    # ---- the exact merge of several processes' tables

    def tables(self) -> dict[str, torch.Tensor]:
        ex = self.examples
        return {"hist": self.hist, **{name: getattr(ex, name) for name in Examples.FIELDS}}

    def merge_tables(self, others: list[dict[str, torch.Tensor]]) -> None:
        """Add other processes' histograms and keep the k largest keys of all their examples (in place)."""
        for o in others:
            self.hist += o["hist"]
        self.examples = merge_examples([self.examples, *(Examples.from_state(
            {**{n: o[n] for n in Examples.FIELDS}, "window": (self.examples.k, self.examples.before, self.examples.after)}
        ) for o in others)])  # fmt: skip


def merge_examples(tables: list[Examples]) -> Examples:
    """The k largest keys per row over several `Examples` tables, best first (keys are unique per row)."""
    first = tables[0]
    cat = {name: torch.cat([getattr(t, name) for t in tables], dim=1) for name in Examples.FIELDS}
    order = cat["key"].argsort(dim=1, descending=True, stable=True)[:, : first.k]
    out = Examples.__new__(Examples)
    out.k, out.before, out.after = first.k, first.before, first.after
    for name, t in cat.items():
        idx = order if t.dim() == 2 else order[..., None].expand(-1, -1, t.shape[2])
        setattr(out, name, t.gather(1, idx).contiguous())
    return out


def sorted_examples(ex: Examples) -> Examples:
    """The same table with each row best first (so two tables with the same content compare equal)."""
    return merge_examples([ex])


__all__ = ["AtlasStats", "Moments", "merge_examples", "sorted_examples"]

"""What a feature does: streaming statistics over many tokens, concept contrast, one text's activations.

The release has no Neuronpedia pages, so we compute what a dashboard shows in ONE pass over N
tokens, for all latents at once (`stream_stats`):
- per latent: firing count, sum and max of its activations, and a histogram of them;
- per latent: the k top-activating tokens, and a uniform random sample of k tokens where it fires
  (typical, weaker activations), each with a few tokens of context around it.
Each batch is encoded, its firing events are merged into fixed-size tables (by a loop compiled
with numba) and the batch is dropped, so memory is O(d_sae x k x window) whatever N: a dense
[tokens, d_sae] matrix exists only for one batch at a time. BOS and padding are left out everywhere
(BOS's huge norm makes it fire latents that say nothing about the text).

`cards.feature_card` turns these statistics into one feature's card. `contrast` finds features
for a concept; `encode_text` shows every feature on one text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numba import njit

from . import hooks, metrics
from .activations import bos_id, unpack_batch
from .checks import check_feature, check_int, check_sae
from .loading import cache_dir, weights_dtype, write_atomic
from .matryoshka import latent_groups
from .progress import progress_bar
from .release import as_release, layer_of
from .text import heldout_id, token_batches
from .tokens import check_texts, context_strings, text_batches, tokenize

# Activation histogram bins, shared by all latents: 10 per decade from 1e-3 to 1e5, log-spaced because
# activations span orders of magnitude. Values outside are counted in the first or last bin.
HIST_EDGES = torch.logspace(-3, 5, 8 * 10 + 1)
INNER_EDGES = HIST_EDGES[1:-1].numpy()  # bin b holds edges[b - 1] < x <= edges[b], as torch.bucketize
# Bump when the statistics change, so old cached files are recomputed.
CACHE_VERSION = 3
_MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------- keys


@njit(cache=True)
def uniform_key_one(index, latent, d_sae):
    # Event number index * d_sae + latent, folded to 32 bits, then a bijection that scrambles the bits
    # (multipliers < 2**27, so int64 never overflows).
    x = index * d_sae + latent
    x = (x ^ (x >> 32)) & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


@njit(cache=True)
def _float_key(bits):
    # The float32's bits as an int32, magnitude bits flipped for negatives: sorts like the floats.
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@njit(cache=True)
def _uniform_keys(index, latent, d_sae, out):
    for i in range(len(out)):
        out[i] = uniform_key_one(index[i], latent[i], d_sae)


@njit(cache=True)
def _float_keys(bits, out):
    for i in range(len(out)):
        out[i] = _float_key(np.int64(bits[i]))


def uniform_key(index: torch.Tensor, latent: torch.Tensor, d_sae: int) -> torch.Tensor:
    """An integer in [0, 2**32) that looks random but depends only on (token index, latent).

    The k firing events with the largest key are a uniform random sample of them, and the same
    sample however the stream is cut into batches.
    """
    index, latent = (t.to("cpu", torch.long).contiguous() for t in torch.broadcast_tensors(index, latent))
    out = torch.empty_like(index)
    _uniform_keys(index.view(-1).numpy(), latent.view(-1).numpy(), d_sae, out.view(-1).numpy())
    return out


def float_key(x: torch.Tensor) -> torch.Tensor:
    """Integers that sort like the float32 values x: the float's bits, magnitude bits flipped for negatives."""
    bits = x.to("cpu", torch.float32).contiguous().view(torch.int32)
    out = torch.empty(bits.shape, dtype=torch.long)
    _float_keys(bits.view(-1).numpy(), out.view(-1).numpy())
    return out


# ---------------------------------------------------------------- bounded tables of examples


class Examples:
    """Per row (a latent), the k firing tokens with the largest `key`, with a few tokens around each.

    key = `float_key(activation)` keeps the top-activating examples; key = `uniform_key` a random sample.
    Tables (empty slots: key EMPTY_KEY, index -1), in no particular order along dim 1 (`of` sorts):
      key, value (the activation): [rows, k]; index: the token's place in the stream (kept tokens
      counted from 0); tokens: [rows, k, before + 1 + after] token ids around it (-1 where there is no
      text: before the row's start, BOS, padding); acts: the latent's activation on those tokens.
    """

    FIELDS = ("key", "value", "index", "tokens", "acts")
    EMPTY_KEY = -(2**62)  # below every real key
    EMPTY = {"key": EMPTY_KEY, "value": 0.0, "index": -1, "tokens": -1, "acts": 0.0}

    def __init__(self, rows: int, k: int, before: int, after: int):
        w = before + 1 + after
        self.k, self.before, self.after = k, before, after
        shapes = {"key": (k,), "value": (k,), "index": (k,), "tokens": (k, w), "acts": (k, w)}
        dtypes = {"key": torch.long, "index": torch.long, "tokens": torch.int32}
        for name in self.FIELDS:
            setattr(self, name, torch.full((rows, *shapes[name]), self.EMPTY[name], dtype=dtypes.get(name)))

    def of(self, row: int) -> list[dict]:
        """The examples of one row, largest key first: {"value", "index", "tokens", "acts", "centre"}."""
        out = []
        for j in self.key[row].argsort(descending=True).tolist():
            if self.index[row, j] < 0:
                break
            toks, acts = self.tokens[row, j], self.acts[row, j]
            shown = (toks >= 0).nonzero().squeeze(1)
            a, b = int(shown[0]), int(shown[-1]) + 1  # drop the empty slots at the ends
            out.append({"value": float(self.value[row, j]), "index": int(self.index[row, j]),
                        "tokens": toks[a:b].tolist(), "acts": acts[a:b].tolist(), "centre": self.before - a})  # fmt: skip
        return out

    def best_first(self) -> dict[str, torch.Tensor]:
        """The tables with each latent's examples best first (for comparisons)."""
        order = self.key.argsort(dim=1, descending=True, stable=True)
        out = {}
        for name in self.FIELDS:
            t = getattr(self, name)
            out[name] = t.gather(1, order if t.dim() == 2 else order[..., None].expand_as(t))
        return out

    def state(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS} | {
            "window": (self.k, self.before, self.after)
        }

    @classmethod
    def from_state(cls, state: dict) -> Examples:
        ex = cls.__new__(cls)
        ex.k, ex.before, ex.after = state["window"]
        for name in cls.FIELDS:
            setattr(ex, name, state[name])
        return ex


# ---------------------------------------------------------------- the merge: one compiled pass per batch
# A plain loop over the batch, compiled by numba: each firing is counted, and offered to its latent's
# two rows of examples, where one comparison with the row's weakest key turns most away; the context
# is read only for firings still in a row at the end of the batch. Written with torch operations the
# same merge took many passes over all firings (sort, rank, top-k, gathers) and added about 50% to the
# mini SAE's encoding on a fresh stream; this loop adds about 30%, and 10-15% once the tables are
# full (benchmarks/bench_features.py, benchmarks/results.md).


BLOCK = 16  # latents per 64-byte cache line of float32 activations


@njit(cache=True)
def weakest_slot(row):
    w = 0
    for j in range(1, len(row)):
        if row[j] < row[w]:
            w = j
    return w


@njit(cache=True)
def enter_example(r, new_key, weak, floor, key):
    # A firing takes the place of row r's weakest example (its key only, for now); returns the slot.
    s = weak[r]
    key[r, s] = new_key
    weak[r] = w = weakest_slot(key[r])
    floor[r] = key[r, w]
    return s


@njit(cache=True)
def fill_examples(ent, m, feats, ids, keep, seq, key, value, index, tokens, acts, before, after):
    # The rest of the m entered firings' examples (see _add_batch), for those still in their row: a
    # slot's key only ever rises, so it still holds firing e exactly when it still has e's key. In
    # token order, so the reads of nearby tokens stay in the cache.
    d = feats.shape[1]
    for e in range(m):
        t, f, i, s0, k0, s1, k1 = ent[e]
        in_top = s0 >= 0 and key[f, s0] == k0
        in_sample = s1 >= 0 and key[d + f, s1] == k1
        if not (in_top or in_sample):
            continue
        if in_top:
            value[f, s0], index[f, s0] = feats[t, f], i
        if in_sample:
            value[d + f, s1], index[d + f, s1] = feats[t, f], i
        pos = t % seq
        for j in range(before + 1 + after):
            q, tok, a = t + j - before, -1, np.float32(0.0)
            if 0 <= pos + j - before < seq and keep[q]:  # in the same row, and not BOS or padding
                tok, a = ids[q], feats[q, f]
            if in_top:
                tokens[f, s0, j], acts[f, s0, j] = tok, a
            if in_sample:
                tokens[d + f, s1, j], acts[d + f, s1, j] = tok, a


@njit(cache=True)
def _add_batch(feats, ids, keep, seq, n0, edges, sums, hist, key, value, index, tokens, acts, before, after):
    """Merge one batch into the tables (in place); returns how many tokens it kept.

    feats [tokens, d_sae] float32 (rows of `seq` tokens laid end to end); ids, keep [tokens];
    n0: tokens kept before this batch; edges: the inner histogram edges; the tables as in FeatureStats.
    """
    d = feats.shape[1]
    bits = feats.view(np.int32)
    weak = np.empty(2 * d, np.int64)  # each row's weakest slot, and its key
    floor = np.empty(2 * d, np.int64)
    for r in range(2 * d):
        weak[r] = weakest_slot(key[r])
        floor[r] = key[r, weak[r]]
    # The firings that entered a row: token, latent, stream index, then slot and key in the top row
    # and in the sample row (slot -1: not there); the rest of their examples is filled in at the end,
    # as many are pushed out again by stronger firings later in the batch. Grown by doubling.
    ent = np.empty((4 * d, 7), np.int64)
    m, n = 0, n0
    for t in range(len(keep)):
        if not keep[t]:  # BOS and padding
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
                if v == 0:
                    continue
                sums[f] += v
                hist[f, np.searchsorted(edges, v)] += 1
                top_key, sample_key = _float_key(np.int64(row[f])), uniform_key_one(n, f, d)
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


# ---------------------------------------------------------------- streaming statistics


def dense_on_cpu(feats: torch.Tensor, sparse: bool | None = None) -> torch.Tensor:
    """feats [tokens, d_sae] as a contiguous float32 CPU tensor. From a GPU (sparse, the default there)
    only the nonzero entries, about k per token, cross over: not the dense block (2048 tokens x 32768
    latents = 268 MB a batch)."""
    if not (feats.device.type != "cpu" if sparse is None else sparse):
        return feats.to(torch.float32).contiguous()
    rows, cols = feats.nonzero(as_tuple=True)
    out = torch.zeros(feats.shape, dtype=torch.float32)
    out[rows.cpu(), cols.cpu()] = feats[rows, cols].to(torch.float32).cpu()
    return out


class FeatureStats:
    """Statistics of every latent of one SAE over a stream of tokens, in memory O(d_sae x k).

    n_tokens: tokens seen (BOS and padding left out). Per latent: hist [d_sae, bins], how many of its
    activations fell in each bin of HIST_EDGES (so `counts`, the tokens where it fires, i.e. is
    nonzero, is hist.sum(1)); sums [d_sae], of its activations (float64). examples: one `Examples`
    table of 2 x d_sae rows: row f holds latent f's top-activating tokens (key
    `float_key(activation)`, so `max` is the best of them), row d_sae + f a uniform random sample of
    the tokens where it fires (key `uniform_key`); see `top` and `sample`. The tables live on the CPU.
    """

    TABLES = ("sums", "hist")

    def __init__(self, d_sae: int, k: int = 16, before: int = 8, after: int = 4, layer=None):
        d_sae, k = check_int(d_sae, "d_sae", low=1), check_int(k, "k", low=1)
        before, after = check_int(before, "before", low=0), check_int(after, "after", low=0)
        self.layer, self.d_sae, self.n_tokens = layer, d_sae, 0
        self.sums = torch.zeros(d_sae, dtype=torch.float64)
        self.hist = torch.zeros(d_sae, len(HIST_EDGES) - 1, dtype=torch.long)
        self.examples = Examples(2 * d_sae, k, before, after)
        self.info: dict = {}  # where the tokens came from (filled by feature_stats)

    @torch.no_grad()
    def add(self, feats: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor) -> None:
        """Add one batch: feats = sae.encode(resid) [batch, seq, d_sae]; input_ids, keep (bool) [batch, seq].

        The merge runs on the CPU: a batch on a GPU is copied over first.
        """
        d = self.d_sae
        if feats.dim() != 3 or feats.shape[:2] != input_ids.shape or feats.shape[2] != d:
            raise ValueError(
                f"feats must be [batch, seq, {d}] and match input_ids {tuple(input_ids.shape)}; "
                f"got {tuple(feats.shape)}."
            )
        if keep.shape != input_ids.shape:
            raise ValueError(
                f"keep must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(keep.shape)}."
            )
        feats = dense_on_cpu(feats.detach().reshape(-1, d))
        ids = input_ids.to("cpu", torch.long).reshape(-1).contiguous()
        keep = keep.to("cpu", torch.bool).reshape(-1).contiguous()
        ex = self.examples
        self.n_tokens += _add_batch(
            feats.numpy(), ids.numpy(), keep.numpy(), input_ids.shape[1], self.n_tokens, INNER_EDGES,
            self.sums.numpy(), self.hist.numpy(), *(getattr(ex, name).numpy() for name in Examples.FIELDS),
            ex.before, ex.after,
        )  # fmt: skip

    def top(self, feature: int) -> list[dict]:
        """The feature's top-activating examples, strongest first (see `Examples.of`)."""
        return self.examples.of(check_feature(feature, self.d_sae))

    def sample(self, feature: int, n: int | None = None) -> list[dict]:
        """n (default k) tokens drawn uniformly from those where the feature fires, shown strongest first."""
        feature = check_feature(feature, self.d_sae)
        n = None if n is None else check_int(n, "n", low=1)
        drawn = self.examples.of(self.d_sae + feature)[:n]  # in key order, i.e. random: any n are a sample
        return sorted(drawn, key=lambda e: -e["value"])

    @property
    def counts(self) -> torch.Tensor:
        """Number of tokens on which each latent fires."""
        return self.hist.sum(1)

    @property
    def max(self) -> torch.Tensor:
        """Each latent's largest activation (0 if it never fired)."""
        top = self.examples.value[: self.d_sae]
        best = torch.where(self.examples.index[: self.d_sae] >= 0, top, -torch.inf).max(1).values
        return best.nan_to_num(neginf=0.0)

    @property
    def frequency(self) -> torch.Tensor:
        """Share of tokens on which each latent fires."""
        return self.counts / max(self.n_tokens, 1)

    @property
    def mean(self) -> torch.Tensor:
        """Mean activation per token (zeros included)."""
        return self.sums / max(self.n_tokens, 1)

    def frequency_rank(self, feature: int) -> int:
        """1 for the most frequent latent; ties share the best rank."""
        counts = self.counts
        return int((counts > counts[check_feature(feature, self.d_sae)]).sum()) + 1

    def save(self, path) -> None:
        state = {k: getattr(self, k) for k in ("layer", "d_sae", "n_tokens", "info")}
        state |= {k: getattr(self, k) for k in self.TABLES}
        torch.save(state | {"examples": self.examples.state()}, path)

    @classmethod
    def load(cls, path) -> FeatureStats:
        state = torch.load(path, weights_only=True)
        stats = cls.__new__(cls)
        for k, v in state.items():
            setattr(stats, k, Examples.from_state(v) if k == "examples" else v)
        return stats

    @property
    def nbytes(self) -> int:
        tensors = [getattr(self, k) for k in self.TABLES] + [
            getattr(self.examples, f) for f in Examples.FIELDS
        ]
        return sum(t.numel() * t.element_size() for t in tensors)

    def __repr__(self) -> str:
        return (
            f"FeatureStats(layer {self.layer}, {self.d_sae} latents over {self.n_tokens} tokens, "
            f"{self.examples.k} examples each, {self.nbytes / 2**20:.1f} MB)"
        )


def first_n(keep: torch.Tensor, n: int) -> torch.Tensor:
    """keep with only its first n True entries (row-major) left True."""
    return keep & (keep.flatten().cumsum(0) <= n).view_as(keep)


@torch.no_grad()
def stream_stats(
    model, sae, batches, max_tokens: int | None = None, k: int = 16, before: int = 8,
    after: int = 4, progress: bool = True,
) -> FeatureStats:  # fmt: skip
    """`FeatureStats` of `sae` over the tokens of `batches` (BOS and padding left out), in one pass.

    Per batch: resid_post at the SAE's layer (the forward pass stops there), `sae.encode`, `FeatureStats.add`.
    Stops after `max_tokens` tokens. k: examples kept per latent; before / after: context tokens.
    """
    layer = layer_of(sae, model)
    if max_tokens is not None:
        max_tokens = check_int(max_tokens, "max_tokens", low=1, hint="(or None for all tokens)")
    bos = bos_id(model)  # ValueError, not a silent keep-everything, when the config has none
    stats = FeatureStats(sae.cfg.d_sae, k, before, after, layer=layer)
    bar = progress_bar(
        total=max_tokens, desc=f"layer {layer} feature stats", unit="tok", disable=not progress
    )
    for batch in batches:
        ids, mask = (t.to(model.device) for t in unpack_batch(batch))
        keep = metrics.token_mask(ids, mask, bos)
        if max_tokens is not None:
            keep = first_n(keep, max_tokens - stats.n_tokens)
        x = hooks.resid_post(model, ids, [layer], mask)[layer]
        before_n = stats.n_tokens
        stats.add(sae.encode(x.to(sae.device, sae.dtype)), ids, keep)
        bar.update(stats.n_tokens - before_n)
        if max_tokens is not None and stats.n_tokens >= max_tokens:
            break
    bar.close()
    if stats.n_tokens == 0:
        raise ValueError("No tokens to measure: the batches were empty or held only BOS and padding.")
    return stats


def _fingerprint(sae) -> str:
    # A few weights and the config: a retrained SAE at the same path gets a new cache file.
    h = hashlib.sha256(json.dumps(sae.cfg.to_dict(), sort_keys=True, default=str).encode())
    for t in (sae.W_enc[:, :8], sae.threshold[:64] if hasattr(sae, "threshold") else sae.b_enc[:64]):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_cached(path: Path, key: dict) -> FeatureStats | None:
    """The statistics cached at `path`, or None (after one line saying so) when the file cannot be read or
    was written for other settings: the caller recomputes and replaces it."""
    try:
        stats = FeatureStats.load(path)
        if stats.info != key:
            raise ValueError("written for other settings")
        return stats
    except Exception as e:  # a truncated, corrupt or foreign file: any failure means "recompute"
        print(f"saehelpers: the cached feature statistics {path.name} could not be used ({type(e).__name__}: "
              f"{str(e)[:80]}); recomputing and replacing them.")  # fmt: skip
        return None


def feature_stats(
    model, tokenizer, sae, release=None, n_tokens: int = 4096, texts=None,
    k: int = 16, before: int = 8, after: int = 4, batch_size: int = 8, seq_len: int = 128,
    cache: bool = True, progress: bool = True,
) -> FeatureStats:  # fmt: skip
    """`stream_stats` over the first `n_tokens` held-out tokens of the release's text (or of `texts`).

    Cached on disk (under `saehelpers.cache_dir()`) per preset, layer, text, n_tokens, settings and
    SAE weights, so a rerun loads in a moment. Fewer tokens come back if the text runs out.
    """
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    rel = as_release(release)
    layer = check_sae(sae, rel, model)
    n_tokens = check_int(n_tokens, "n_tokens", low=1)
    batch_size, seq_len = check_int(batch_size, "batch_size", low=1), check_int(seq_len, "seq_len", low=2)
    texts = None if texts is None else check_texts(texts)  # a list, so hashing it does not use it up
    if texts is None:  # the Pile or the mini corpus: a new corpus, or building it, gets a new cache file
        text_id = heldout_id(rel.name)
    else:
        text_id = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    # Everything that changes the numbers: the model (which, its dtype, the device kind), the text, the
    # settings and the SAE's weights and dtype.
    key = dict(v=CACHE_VERSION, preset=rel.name, model=model.config.name_or_path, model_dtype=str(model.dtype),
               device=model.device.type, layer=layer, text=text_id, n=n_tokens, k=k, before=before,
               after=after, batch=batch_size, seq=seq_len, sae=_fingerprint(sae))  # fmt: skip
    if weights_dtype(model) != key["model_dtype"].removeprefix("torch."):
        key["weights"] = weights_dtype(model)  # float32_body: not the float32 model's numbers
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "feature_stats" / f"{rel.name}-layer{layer}-{n_tokens}tok-{digest}.pt"
    if cache and path.exists():
        stats = _load_cached(path, key)
        if stats is not None:
            return stats
    batches = token_batches(tokenizer, rel.name, batch_size, seq_len, split="heldout", texts=texts)
    stats = stream_stats(model, sae, batches, n_tokens, k, before, after, progress)
    stats.info = key
    if cache:
        write_atomic(path, stats.save)
    return stats


# ---------------------------------------------------------------- one text, two sets of texts


@torch.no_grad()
def encode_text(model, tokenizer, sae, text: str) -> tuple[list[str], torch.Tensor]:
    """The tokens of `text` (BOS left out) and their feature activations, [n_tokens, d_sae] (CPU float32)."""
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r} ({type(text).__name__}).")
    layer = layer_of(sae, model)
    ids = torch.tensor([tokenize(tokenizer, text)], device=model.device)
    keep = metrics.token_mask(ids, bos_token_id=bos_id(model))[0]  # BOS by its id, as everywhere
    x = hooks.resid_post(model, ids, [layer])[layer][0][keep]
    feats = sae.encode(x.to(sae.device, sae.dtype)).float().cpu()
    return context_strings(tokenizer, ids[0][keep]), feats


def contrast(model, tokenizer, sae, release, texts_a, texts_b) -> pd.DataFrame:
    """Features ranked by how much more they fire on `texts_a` than on `texts_b`.

    Per feature: mean activation per token over each set (BOS left out, zeros included), their
    difference `diff` = mean_a - mean_b, and the share of tokens it fires on in each set (freq_a,
    freq_b). Sorted by diff, largest first: the head is A's features, the tail B's.
    """
    release = as_release(release)
    check_sae(sae, release, model)
    texts_a, texts_b = check_texts(texts_a, "texts_a"), check_texts(texts_b, "texts_b")
    a, b = (
        stream_stats(model, sae, text_batches(tokenizer, t), k=1, progress=False) for t in (texts_a, texts_b)
    )
    table = pd.DataFrame(
        {
            "mean_a": a.mean,
            "mean_b": b.mean,
            "diff": a.mean - b.mean,
            "freq_a": a.frequency,
            "freq_b": b.frequency,
            "group": latent_groups(release),
        }  # fmt: skip
    )
    table.index.name = "feature"
    return table.sort_values("diff", ascending=False)


__all__ = [
    "HIST_EDGES",
    "Examples",
    "FeatureStats",
    "contrast",
    "encode_text",
    "feature_stats",
    "float_key",
    "stream_stats",
    "uniform_key",
]

"""What a feature means: streaming statistics, feature cards and concept contrast (the project's own dashboards).

The release has no Neuronpedia pages, so we compute what a dashboard shows in ONE pass over N
tokens, for all latents at once (`stream_stats`):
- per latent: firing count, sum and max of its activations, and a histogram of them;
- per latent: the k top-activating tokens, and a uniform random sample of k tokens where it fires
  (typical, weaker activations), each with a few tokens of context around it.
Each batch is encoded, its firing events are merged into fixed-size tables and the batch is
dropped, so memory is O(d_sae x k x window) whatever N: a dense [tokens, d_sae] matrix exists only
for one batch at a time. BOS and padding are left out everywhere (BOS's huge norm makes it fire
latents that say nothing about the text).

A feature card (`feature_card`) adds the logit lens of the feature's decoder direction, its
Matryoshka group and its nearest decoder neighbours. `contrast` finds features for a concept.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import hooks, metrics
from .activations import _unpack
from .loading import cache_dir, check_sae_at
from .matryoshka import latent_groups
from .release import get_release
from .text import token_batches

# Activation histogram bins, shared by all latents: 10 per decade from 1e-3 to 1e5, log-spaced because
# activations span orders of magnitude. Values outside are counted in the first or last bin.
HIST_EDGES = torch.logspace(-3, 5, 8 * 10 + 1)
# Bump when the statistics change, so old cached files are recomputed.
CACHE_VERSION = 3
_MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------- checks


def check_feature(feature, d_sae: int) -> int:
    """`feature` as an int if it is a latent index of an SAE with `d_sae` latents, else ValueError."""
    if isinstance(feature, bool) or not isinstance(feature, numbers.Integral):
        raise ValueError(
            f"feature must be an int in 0..{d_sae - 1}, got {feature!r} ({type(feature).__name__})."
        )
    if not 0 <= feature < d_sae:
        raise ValueError(
            f"Feature {feature} does not exist: this SAE has features 0..{d_sae - 1} (d_sae = {d_sae})."
        )
    return int(feature)


def _check_texts(texts, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or not hasattr(texts, "__iter__"):
        raise ValueError(f"{name} must be a non-empty string or a list of them, got {texts!r}.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty: give a list of one or more non-empty strings.")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t:
            raise ValueError(f"{name}[{i}] is {t!r}: every text must be a non-empty string.")
    return texts


# ---------------------------------------------------------------- bounded tables of examples


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A bijection on 32-bit integers that scrambles the bits (multipliers < 2**27, so int64 never overflows).
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def uniform_key(index: torch.Tensor, latent: torch.Tensor, d_sae: int) -> torch.Tensor:
    """An integer in [0, 2**32) that looks random but depends only on (token index, latent).

    The k firing events with the largest key are a uniform random sample of them, and the same
    sample however the stream is cut into batches.
    """
    event = index * d_sae + latent
    return _mix32((event ^ (event >> 32)) & _MASK32)


def float_key(x: torch.Tensor) -> torch.Tensor:
    """Integers that sort like the float32 values x: the float's bits, magnitude bits flipped for negatives."""
    bits = x.float().view(torch.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()


class Examples:
    """Per row (a latent), the k firing tokens with the largest `key`, with a few tokens around each.

    key = `float_key(activation)` keeps the top-activating examples; key = `uniform_key` a random sample.
    Tables (empty slots: key EMPTY_KEY, index -1), in no particular order along dim 1 (`of` sorts):
      key, value (the activation): [rows, k]; index: the token's place in the stream (kept tokens
      counted from 0); tokens: [rows, k, before + 1 + after] token ids around it (-1 where there is no
      text: before the row's start, BOS, padding); acts: the latent's activation on those tokens.
    """

    FIELDS = ("key", "value", "index", "tokens", "acts")
    EMPTY_KEY = -(2**62)  # below every real key; the merge's padding (-2**63) is below this
    EMPTY = {"key": EMPTY_KEY, "value": 0.0, "index": -1, "tokens": -1, "acts": 0.0}

    def __init__(self, rows: int, k: int, before: int, after: int, device="cpu"):
        w = before + 1 + after
        self.k, self.before, self.after = k, before, after
        shapes = {"key": (k,), "value": (k,), "index": (k,), "tokens": (k, w), "acts": (k, w)}
        dtypes = {"key": torch.long, "index": torch.long, "tokens": torch.int32}
        for name in self.FIELDS:
            t = torch.full((rows, *shapes[name]), self.EMPTY[name], dtype=dtypes.get(name), device=device)
            setattr(self, name, t)

    def offer(self, latent, key, value, index, context) -> None:
        """Merge new firing events (1-D tensors); `context(events)` gives (tokens, acts) of those that enter."""
        k = self.k
        # Only an event that beats its latent's weakest example can enter (after a few thousand tokens
        # few do, so a long stream costs little more than counting).
        event = (key > self.key.min(1).values.take(latent)).nonzero().squeeze(1)
        if not len(event):
            return
        # Sort by latent, then by key (largest first), in one integer sort; rank the events within each latent.
        lat = latent.take(event)
        event = event.take(((lat << 33) + (2**32 - 1 - key.take(event))).argsort())
        rows, row, count = torch.unique_consecutive(
            latent.take(event), return_inverse=True, return_counts=True
        )
        rank = torch.arange(len(event), device=event.device) - (count.cumsum(0) - count).take(row)
        best = (rank < k).nonzero().squeeze(1)  # each latent's best k candidates
        event, row, rank = event.take(best), row.take(best), rank.take(best)
        # Per latent, its k old keys and its candidates' keys side by side: the best k of them stay.
        keys = torch.full((len(rows), 2 * k), -(2**63), dtype=torch.long, device=event.device)
        keys[:, :k] = self.key[rows]
        keys.view(-1)[row * 2 * k + k + rank] = key.take(event)
        stay = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, keys.topk(k, dim=1).indices, True)
        # Each latent's entering candidates take the slots of its old examples that did not stay (as many).
        r_out, slot = (~stay[:, :k]).nonzero(as_tuple=True)
        which = torch.empty((len(rows), k), dtype=torch.long, device=event.device)
        which.view(-1)[row * k + rank] = event
        chosen = which[stay[:, k:]]
        tokens, acts = context(chosen)
        new = dict(
            key=key.take(chosen), value=value.take(chosen), index=index.take(chosen), tokens=tokens, acts=acts
        )
        dest = rows[r_out] * k + slot  # flat (latent, slot) positions
        for name in self.FIELDS:
            table = getattr(self, name)
            table.view(-1, *table.shape[2:])[dest] = new[name].to(table.dtype)

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

    def to(self, device) -> Examples:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def state(self) -> dict:
        return {name: getattr(self, name).cpu() for name in self.FIELDS} | {
            "window": (self.k, self.before, self.after)
        }

    @classmethod
    def from_state(cls, state: dict) -> Examples:
        ex = cls.__new__(cls)
        ex.k, ex.before, ex.after = state["window"]
        for name in cls.FIELDS:
            setattr(ex, name, state[name])
        return ex


def _contexts(ids, keep, feats, token, latent, seq: int, before: int, after: int):
    """Token ids and the latent's activations around each event, from flattened batch tensors.

    ids, keep: [batch * seq]; feats: [batch * seq * d_sae]; token: the event's place in ids.
    """
    offset = torch.arange(-before, after + 1, device=token.device)
    pos = (token % seq)[:, None] + offset
    t = (token[:, None] + offset).clamp(0, len(ids) - 1)
    inside = (pos >= 0) & (pos < seq) & keep.take(t)  # in the same row, and not BOS or padding
    tokens = torch.where(inside, ids.take(t), -1)
    acts = torch.where(inside, feats.take(t * (len(feats) // len(ids)) + latent[:, None]).float(), 0.0)
    return tokens, acts


# ---------------------------------------------------------------- streaming statistics


class FeatureStats:
    """Statistics of every latent of one SAE over a stream of tokens, in memory O(d_sae x k).

    n_tokens: tokens seen (BOS and padding left out). Per latent: hist [d_sae, bins], how many of its
    activations fell in each bin of HIST_EDGES (so `counts`, the tokens where it fires, i.e. is
    nonzero, is hist.sum(1)); sums [d_sae], of its activations (float64). examples: one `Examples`
    table of 2 x d_sae rows (one merge per batch serves both): row f holds latent f's top-activating
    tokens (key `float_key(activation)`, so `max` is the best of them), row d_sae + f a uniform random
    sample of the tokens where it fires (key `uniform_key`); see `top` and `sample`.
    The tables live on `device` while streaming (a CUDA GPU keeps the work next to the SAE).
    """

    TABLES = ("sums", "hist")

    def __init__(self, d_sae: int, k: int = 16, before: int = 8, after: int = 4, layer=None, device="cpu"):
        self.layer, self.d_sae, self.n_tokens, self.device = layer, d_sae, 0, torch.device(device)
        self.sums = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.hist = torch.zeros(d_sae, len(HIST_EDGES) - 1, dtype=torch.long, device=device)
        self.examples = Examples(2 * d_sae, k, before, after, device)
        self.info: dict = {}  # where the tokens came from (filled by feature_stats)

    @torch.no_grad()
    def add(self, feats: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor) -> None:
        """Add one batch: feats = sae.encode(resid) [batch, seq, d_sae]; input_ids, keep (bool) [batch, seq]."""
        d = self.d_sae
        if feats.dim() != 3 or feats.shape[:2] != input_ids.shape or feats.shape[2] != d:
            raise ValueError(
                f"feats must be [batch, seq, {d}] and match input_ids {tuple(input_ids.shape)}; "
                f"got {tuple(feats.shape)}."
            )
        seq = feats.shape[1]
        # Flattened views: one index per (token, latent) is much faster than indexing three dimensions.
        feats, ids, keep = (t.to(self.device).reshape(-1) for t in (feats, input_ids, keep))
        # The sparse firing events (token, latent, activation) on text tokens; only these are touched below.
        event = feats.nonzero().squeeze(1)
        token = event // d
        on_text = keep.take(token).nonzero().squeeze(1)
        event, token = event.take(on_text), token.take(on_text)
        lat, val = event - token * d, feats.take(event).float()
        place = keep.cumsum(0)
        index = (place - 1 + self.n_tokens).take(token)  # the token's place among kept tokens

        self.sums += torch.bincount(lat, weights=val, minlength=d)
        bins = torch.bucketize(val, HIST_EDGES[1:-1].to(self.device))
        self.hist.view(-1).index_add_(0, lat * self.hist.shape[1] + bins, torch.ones_like(bins))

        # Each event is offered twice: to its latent's top row (by activation) and sample row (by random key).
        n, ex = len(event), self.examples

        def context(e):
            # An event can enter both of its latent's rows: gather its context once. In event order
            # (sorted, without a sort), the gather also reads feats in memory order: most of its cost.
            e = e % n
            mark = torch.zeros(n, dtype=torch.bool, device=e.device)
            mark[e] = True
            u = mark.nonzero().squeeze(1)
            tokens, acts = _contexts(ids, keep, feats, token.take(u), lat.take(u), seq, ex.before, ex.after)
            at = mark.cumsum(0).take(e) - 1  # each event's row among the unique ones
            return tokens.index_select(0, at), acts.index_select(0, at)

        keys = torch.cat([float_key(val), uniform_key(index, lat, d)])
        ex.offer(torch.cat([lat, lat + d]), keys, val.repeat(2), index.repeat(2), context)
        self.n_tokens += int(place[-1])

    def top(self, feature: int) -> list[dict]:
        """The feature's top-activating examples, strongest first (see `Examples.of`)."""
        return self.examples.of(feature)

    def sample(self, feature: int, n: int | None = None) -> list[dict]:
        """n (default k) tokens drawn uniformly from those where the feature fires, shown strongest first."""
        drawn = self.examples.of(self.d_sae + feature)[:n]  # in key order, i.e. random: any n are a sample
        return sorted(drawn, key=lambda e: -e["value"])

    def to(self, device) -> FeatureStats:
        """Move the tables (e.g. back to the CPU after streaming on a GPU)."""
        self.device = torch.device(device)
        for name in self.TABLES:
            setattr(self, name, getattr(self, name).to(device))
        self.examples.to(device)
        return self

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
        return int((counts > counts[feature]).sum()) + 1

    def save(self, path) -> None:
        state = {k: getattr(self, k) for k in ("layer", "d_sae", "n_tokens", "info")}
        state |= {k: getattr(self, k).cpu() for k in self.TABLES}
        torch.save(state | {"examples": self.examples.state()}, path)

    @classmethod
    def load(cls, path) -> FeatureStats:
        state = torch.load(path, weights_only=True)
        stats = cls.__new__(cls)
        for k, v in state.items():
            setattr(stats, k, Examples.from_state(v) if k == "examples" else v)
        stats.device = torch.device("cpu")
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


def _first(keep: torch.Tensor, n: int) -> torch.Tensor:
    """keep with only its first n True entries (row-major) left True."""
    return keep & (keep.flatten().cumsum(0) <= n).view_as(keep)


@torch.no_grad()
def stream_stats(
    model, sae, layer: int, batches, max_tokens: int | None = None, k: int = 16, before: int = 8,
    after: int = 4, progress: bool = True,
) -> FeatureStats:  # fmt: skip
    """`FeatureStats` of `sae` over the tokens of `batches` (BOS and padding left out), in one pass.

    Per batch: resid_post at `layer` (the forward pass stops there), `sae.encode`, `FeatureStats.add`.
    Stops after `max_tokens` tokens. k: examples kept per latent; before / after: context tokens.
    """
    check_sae_at(sae, layer)
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 (or None for all), got {max_tokens}.")
    bos = model.config.bos_token_id
    # The tables follow the SAE onto a CUDA GPU; elsewhere (CPU, or MPS, which lacks float64) they stay on the CPU.
    device = sae.device if torch.device(sae.device).type == "cuda" else "cpu"
    stats = FeatureStats(sae.cfg.d_sae, k, before, after, layer=layer, device=device)
    bar = tqdm(total=max_tokens, desc=f"layer {layer} feature stats", unit="tok", disable=not progress)
    for batch in batches:
        ids, mask = (t.to(model.device) for t in _unpack(batch))
        keep = metrics.token_mask(ids, mask, bos)
        if max_tokens is not None:
            keep = _first(keep, max_tokens - stats.n_tokens)
        x = hooks.resid_post(model, ids, [layer], mask)[layer]
        before_n = stats.n_tokens
        stats.add(sae.encode(x.to(sae.device, sae.dtype)), ids, keep)
        bar.update(stats.n_tokens - before_n)
        if max_tokens is not None and stats.n_tokens >= max_tokens:
            break
    bar.close()
    if stats.n_tokens == 0:
        raise ValueError("No tokens to measure: the batches were empty or held only BOS and padding.")
    return stats.to("cpu")


def _fingerprint(sae) -> str:
    # A few weights and the config: a retrained SAE at the same path gets a new cache file.
    h = hashlib.sha256(json.dumps(sae.cfg.to_dict(), sort_keys=True, default=str).encode())
    for t in (sae.W_enc[:, :8], sae.threshold[:64] if hasattr(sae, "threshold") else sae.b_enc[:64]):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def feature_stats(
    model, tokenizer, sae, layer: int, preset: str | None = None, n_tokens: int = 4096, texts=None,
    k: int = 16, before: int = 8, after: int = 4, batch_size: int = 8, seq_len: int = 128,
    cache: bool = True, progress: bool = True,
) -> FeatureStats:  # fmt: skip
    """`stream_stats` over the first `n_tokens` held-out tokens of the preset's text (or of `texts`).

    Cached on disk (under `saehelpers.cache_dir()`) per preset, layer, text, n_tokens, settings and
    SAE weights, so a rerun loads in a moment. Fewer tokens come back if the text runs out.
    """
    rel = get_release(preset)
    layer = rel.check_layer(layer)
    if sae.cfg.d_sae != rel.d_sae:
        raise ValueError(f"The SAE has {sae.cfg.d_sae} latents but the {rel.name!r} release has {rel.d_sae}.")
    texts = None if texts is None else _check_texts(texts)  # a list, so hashing it does not use it up
    text_id = "heldout" if texts is None else hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    key = dict(v=CACHE_VERSION, preset=rel.name, layer=layer, text=text_id, n=n_tokens, k=k, before=before,
               after=after, batch=batch_size, seq=seq_len, sae=_fingerprint(sae))  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "feature_stats" / f"{rel.name}-layer{layer}-{n_tokens}tok-{digest}.pt"
    if cache and path.exists():
        return FeatureStats.load(path)
    batches = token_batches(tokenizer, rel.name, batch_size, seq_len, split="heldout", texts=texts)
    stats = stream_stats(model, sae, layer, batches, n_tokens, k, before, after, progress)
    stats.info = key
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        stats.save(tmp)
        tmp.replace(path)  # never leave a half-written file behind
    return stats


# ---------------------------------------------------------------- one text, two sets of texts


def token_strings(tokenizer, ids) -> list[str]:
    """Each token id as the text it stands for (spaces and newlines included)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def _tokenize(tokenizer, text: str, max_len: int | None = None) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: None if max_len is None else max_len - 1]
    if not ids:
        raise ValueError(f"The text {text!r} has no tokens: give a non-empty text.")
    return [tokenizer.bos_token_id, *ids]


@torch.no_grad()
def encode_text(model, tokenizer, sae, layer: int, text: str) -> tuple[list[str], torch.Tensor]:
    """The tokens of `text` (BOS left out) and their feature activations, [n_tokens, d_sae] (CPU float32)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}.")
    check_sae_at(sae, layer)
    ids = torch.tensor([_tokenize(tokenizer, text)], device=model.device)
    x = hooks.resid_post(model, ids, [layer])[layer][0, 1:]
    feats = sae.encode(x.to(sae.device, sae.dtype)).float().cpu()
    return token_strings(tokenizer, ids[0, 1:]), feats


def text_batches(tokenizer, texts, batch_size: int = 8, max_len: int = 256):
    """Batches with one row per text (BOS + its tokens, cut at max_len), right-padded: for short text lists."""
    rows = [_tokenize(tokenizer, t, max_len) for t in _check_texts(texts)]
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        n = max(map(len, part))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (n - len(r)) for r in part])
        mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in part])
        yield {"input_ids": ids, "attention_mask": mask}


def contrast(model, tokenizer, sae, layer: int, texts_a, texts_b, release) -> pd.DataFrame:
    """Features ranked by how much more they fire on `texts_a` than on `texts_b`.

    Per feature: mean activation per token over each set (BOS left out, zeros included), their
    difference `diff` = mean_a - mean_b, and the share of tokens it fires on in each set (freq_a,
    freq_b). Sorted by diff, largest first: the head is A's features, the tail B's.
    """
    texts_a, texts_b = _check_texts(texts_a, "texts_a"), _check_texts(texts_b, "texts_b")
    a, b = (
        stream_stats(model, sae, layer, text_batches(tokenizer, t), k=1, progress=False)
        for t in (texts_a, texts_b)
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


# ---------------------------------------------------------------- the decoder direction


@torch.no_grad()
def lens_logits(model, vectors: torch.Tensor) -> torch.Tensor:
    """unembed(final_norm(v)) for one direction [d_model] or several [n, d_model], as float32 logits."""
    v = torch.as_tensor(vectors).to(model.device, model.dtype)
    return model.get_output_embeddings()(model.get_decoder().norm(v)).float()


@torch.no_grad()
def logit_lens(model, tokenizer, direction: torch.Tensor, n: int = 10) -> pd.DataFrame:
    """The n tokens whose logits `direction` raises most, and the n it lowers most: unembed(final_norm(d)).

    An approximation, the "direct path" only: it treats the direction as if it were the whole
    residual stream at the top of the model. It ignores every layer after the SAE's (attention and
    MLPs read and transform the direction before the output), and the final norm's scale, which
    depends on everything else in the residual stream (for a lone direction the norm only rescales
    it, so the ranking is that of ((1 + w) * d) @ W_U). Logits before any final soft-capping.
    """
    logits = lens_logits(model, direction).cpu()
    top, bottom = logits.topk(n), logits.topk(n, largest=False)
    return pd.DataFrame(
        {
            "raises": token_strings(tokenizer, top.indices),
            "logit ↑": top.values.numpy(),
            "lowers": token_strings(tokenizer, bottom.indices),
            "logit ↓": bottom.values.numpy(),
        }  # fmt: skip
    )


@torch.no_grad()
def neighbours(sae, feature: int, n: int = 8) -> pd.DataFrame:
    """The n features whose decoder directions point most nearly the same way (cosine similarity)."""
    feature = check_feature(feature, sae.cfg.d_sae)
    W = sae.W_dec.detach().float().cpu()
    cos = W @ W[feature] / (W.norm(dim=1) * W[feature].norm()).clamp_min(1e-8)
    cos[feature] = -torch.inf  # not its own neighbour
    top = cos.topk(min(n, len(cos) - 1))
    return pd.DataFrame({"feature": top.indices.numpy(), "cosine": top.values.numpy()})


# ---------------------------------------------------------------- the card


@dataclass
class FeatureCard:
    """Everything the dashboard shows for one feature; displays as HTML in Jupyter and as text elsewhere."""

    layer: int
    feature: int
    group: int
    group_range: tuple[int, int]
    n_tokens: int
    count: int
    frequency: float
    rank: int  # by firing frequency, 1 = most frequent
    d_sae: int
    max: float
    mean_when_firing: float
    hist: list[int]  # counts per bin of `edges`
    edges: list[float]
    top: list[dict]  # Examples.of(...) with token strings
    sample: list[dict]
    logits: pd.DataFrame
    neighbours: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        from .display import card_html

        return card_html(self)

    def __str__(self) -> str:
        from .display import card_text

        return card_text(self)

    __repr__ = __str__

    def plot_histogram(self, ax=None):
        """The feature's activation histogram (log-spaced bins) with matplotlib."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 2.8))[1]
        ax.stairs(self.hist, self.edges, fill=True)
        ax.set(xscale="log", xlabel="activation (log scale)", ylabel="tokens",
               title=f"Layer {self.layer}, feature {self.feature}: {self.count} firings in {self.n_tokens} tokens")  # fmt: skip
        on = [e for e, c in zip(self.edges, self.hist) if c] or self.edges[:2]
        ax.set_xlim(on[0] / 1.5, on[-1] * 3)
        return ax


def feature_card(
    stats: FeatureStats, feature: int, model, tokenizer, sae, release, n_examples: int = 8,
    n_logits: int = 8, n_neighbours: int = 6,
) -> FeatureCard:  # fmt: skip
    """The card of one feature from `stats` (see `stream_stats`) and the SAE's decoder direction."""
    feature = check_feature(feature, stats.d_sae)
    if sae.cfg.d_sae != stats.d_sae:
        raise ValueError(f"The SAE has {sae.cfg.d_sae} latents but the statistics have {stats.d_sae}.")
    if stats.layer is not None:
        check_sae_at(sae, stats.layer)
    groups = latent_groups(release)

    def with_strings(found: list[dict]) -> list[dict]:
        for e in found:
            e["strings"] = token_strings(tokenizer, e["tokens"])
        return found

    count = int(stats.counts[feature])
    hood = neighbours(sae, feature, n_neighbours)
    near = torch.tensor(hood["feature"].tolist())
    hood["group"], hood["frequency"] = groups[near].numpy(), stats.frequency[near].numpy()
    notes = (
        []
        if count
        else [f"Feature {feature} never fired on these {stats.n_tokens} tokens: try more or other text."]
    )
    g = int(groups[feature])
    return FeatureCard(
        layer=stats.layer, feature=feature, group=g, group_range=tuple(release.groups[g]), n_tokens=stats.n_tokens,
        count=count, frequency=count / max(stats.n_tokens, 1), rank=stats.frequency_rank(feature), d_sae=stats.d_sae,
        max=float(stats.max[feature]), mean_when_firing=float(stats.sums[feature]) / max(count, 1),
        hist=stats.hist[feature].tolist(), edges=HIST_EDGES.tolist(), top=with_strings(stats.top(feature)[:n_examples]),
        sample=with_strings(stats.sample(feature, n_examples)), logits=logit_lens(model, tokenizer, sae.W_dec[feature], n_logits),
        neighbours=hood, notes=notes,
    )  # fmt: skip


__all__ = [
    "HIST_EDGES",
    "Examples",
    "FeatureCard",
    "FeatureStats",
    "check_feature",
    "contrast",
    "encode_text",
    "feature_card",
    "feature_stats",
    "float_key",
    "lens_logits",
    "logit_lens",
    "neighbours",
    "stream_stats",
    "text_batches",
    "token_strings",
    "uniform_key",
]

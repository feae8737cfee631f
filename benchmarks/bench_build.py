"""The mini build's two costs, each option side by side in one run (scripts/build_mini_release.py).

1. collect: tokens a second through the stand-in model up to the deepest SAE layer, in float32 and in
   bfloat16 (bfloat16 wins only on CPUs with avx512_bf16; the build times both and takes the faster).
2. train: tokens a second through SAELens's MultiSAETrainer for the four SAEs at once, per SAE batch
   size, on random activations (the cost does not depend on the values).

    python benchmarks/bench_build.py [--batches 512 2048 4096] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import build_mini_release as bm  # noqa: E402

from saehelpers.hooks import resid_post  # noqa: E402
from saehelpers.loading import load_model  # noqa: E402

LAYERS = [2, 6, 10, 14]


def collect_rate(dtype: str, batch: int, seq_len: int, repeat: int) -> float:
    model, tok = load_model("mini", device="cpu", dtype=dtype)
    ids = torch.randint(1000, 100_000, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = tok.bos_token_id
    resid_post(model, ids, LAYERS)
    t = time.perf_counter()
    for _ in range(repeat):
        resid_post(model, ids, LAYERS)
    return repeat * ids.numel() / (time.perf_counter() - t)


def train_rate(batch: int, steps: int) -> float:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    args = argparse.Namespace(
        layers=LAYERS,
        seed=0,
        d_sae=2048,
        k=40,
        widths=[8, 32, 128, 512, 2048],
        aux_coef=1.0,
        norm="damp",
        seq_len=128,
    )
    saes = bm.make_saes(args)
    acts = {layer: torch.randn(batch * (steps + 2), bm.D_MODEL) for layer in LAYERS}
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=3e-3,
        lr_end=3e-3,
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        lr_decay_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        device="cpu",
        dead_feature_window=80,
        feature_sampling_window=80,
        n_checkpoints=0,
        checkpoint_path="/tmp/bench_build_checkpoints",
        save_final_checkpoint=False,
    )
    hooks = {name: bm.hook_name(int(name)) for name in saes}
    trainer = MultiSAETrainer(cfg, saes, hooks, data_provider=bm.Stream(acts, batch, 0))
    t = time.perf_counter()
    trainer.fit()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[512, 2048, 4096])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rates = {dt: collect_rate(dt, 16, 128, args.repeat) for dt in ("float32", "bfloat16")}
    print("| collect (model batch 16 x 128) | tokens/s | vs float32 |\n|---|---:|---:|")
    for dt, r in rates.items():
        print(f"| {dt} | {r:.0f} | {r / rates['float32']:.2f} |")
    train = {b: train_rate(b, args.steps) for b in args.batches}
    base = train[args.batches[0]]
    print(f"\n| train 4 SAEs (SAE batch) | tokens/s | vs {args.batches[0]} |\n|---|---:|---:|")
    for b, r in train.items():
        print(f"| {b} | {r:.0f} | {r / base:.2f} |")


if __name__ == "__main__":
    main()

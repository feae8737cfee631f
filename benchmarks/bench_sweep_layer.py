"""What one layer of notebook 01's and 05's sweeps costs at the real budget, on the real shape, on this CPU.

Both notebooks sweep the real release's 25 layers, one SAE at a time, and nearly all of their time at the
real budget goes there. This runs the middle layer (12) of each sweep as its cell does, on the fake hub
(`saehelpers.fakehub`: random weights at the release's shapes), offline, with the release's budget, so
25 times a sweep's per-layer sum estimates its cell:

- 01: `load_sae`, then `activations.sae_stats` on 8 held-out batches of 4 x 256 tokens (three forward passes
  with the 262k-vocabulary loss per batch: clean, spliced, zero-ablated).
- 05: `matryoshka.prefix_metrics` on 32,768 collected tokens, and `matryoshka.prefix_loss` on 8 batches of
  4 x 64 tokens (a forward pass per prefix width and a clean one).

    python benchmarks/bench_sweep_layer.py [--dtype bfloat16|float32] [--notebooks 01 05]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--notebooks", nargs="+", default=["01", "05"], choices=["01", "05"])
    args = ap.parse_args()

    from run_real_shape import real_shape_env

    from saehelpers import fakehub

    layer = fakehub.SAE_LAYERS[
        len(fakehub.SAE_LAYERS) // 2
    ]  # the release's middle layer, as the notebooks pick
    root = fakehub.build_fake_hub(sae_layers=[layer], verbose=False)
    os.environ.update(real_shape_env(root, args.dtype, full=True))

    import saehelpers
    from saehelpers import matryoshka
    from saehelpers.activations import collect_resid, sae_stats
    from saehelpers.text import token_batches

    rel = saehelpers.get_release("gemma-3-1b")
    budget = saehelpers.get_budget(rel)
    n = len(budget.sweep_layers)
    model, tok = saehelpers.load_model(rel.name)
    print(f"model {model.dtype}, {os.cpu_count()} CPUs, layer {layer}, x {n} layers for a sweep")

    if "01" in args.notebooks:
        batches = list(
            token_batches(
                tok,
                rel.name,
                batch_size=budget.sweep_batch_size,
                seq_len=budget.sweep_seq_len,
                n_batches=budget.sweep_batches,
                split="heldout",
            )
        )
        sae, load = timed(saehelpers.load_sae, layer, rel.name)
        stats, measure = timed(sae_stats, model, sae, batches, progress=False)
        one = load + measure
        print(
            f"01: load_sae {load:.0f} s; sae_stats on {stats.n_tokens:,} tokens ({len(batches)} batches): "
            f"{measure:.0f} s; one layer {one:.0f} s; x {n}: {one * n / 60:.0f} min"
        )

    if "05" in args.notebooks:
        batches = token_batches(tok, rel.name, batch_size=8, seq_len=128, split="heldout")  # as 05's cell
        acts, collect = timed(
            collect_resid, model, batches, [layer], max_tokens=budget.prefix_tokens, progress=False
        )
        sae = saehelpers.load_sae(layer, rel.name)
        _, metrics = timed(matryoshka.prefix_metrics, sae, rel, acts.acts[layer])
        loss_batches = token_batches(tok, rel.name, batch_size=4, seq_len=64, n_batches=budget.loss_batches)
        _, loss = timed(matryoshka.prefix_loss, model, sae, rel, loss_batches, progress=False)
        print(f"05: collect {acts.n_tokens:,} tokens at one layer: {collect:.0f} s")
        print(f"05: prefix_metrics {metrics:.0f} s; prefix_loss ({budget.loss_batches} batches) {loss:.0f} s")
        print(
            f"05: one layer of the sweep {metrics + loss:.0f} s; x {n}: {(metrics + loss) * n / 60:.0f} min"
        )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()

"""What one layer of notebook 05's prefix sweep costs at the real budget, on the real shape, on this CPU.

Notebook 05's sweep cell runs `matryoshka.prefix_metrics` (32,768 held-out tokens) and `matryoshka.prefix_loss`
(8 batches of 4 x 64 tokens, a forward pass with the 262k-vocabulary logits per prefix width) for each of the
real release's 25 layers. This runs one layer (12) the same way on the fake hub (`saehelpers.fakehub`: random
weights at the release's shapes), offline, with the same budget, so 25 times its sum estimates the cell.

    python benchmarks/bench_05_layer.py [--dtype bfloat16|float32]
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

LAYER = 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args()

    from run_real_shape import real_shape_env

    from saehelpers import fakehub

    root = fakehub.build_fake_hub(sae_layers=[LAYER], verbose=False)
    os.environ.update(real_shape_env(root, args.dtype, full=True))

    import saehelpers
    from saehelpers import matryoshka
    from saehelpers.activations import collect_resid
    from saehelpers.text import token_batches

    rel = saehelpers.get_release("gemma-3-1b")
    budget = saehelpers.get_budget(rel)
    model, tok = saehelpers.load_model(rel.name)
    batches = token_batches(tok, rel.name, batch_size=8, seq_len=128, split="heldout")  # as 05's cell
    t = time.perf_counter()
    acts = collect_resid(model, batches, [LAYER], max_tokens=budget.prefix_tokens, progress=False)
    collect = time.perf_counter() - t
    sae = saehelpers.load_sae(LAYER, rel.name)
    t = time.perf_counter()
    matryoshka.prefix_metrics(sae, rel, acts.acts[LAYER])
    metrics = time.perf_counter() - t
    loss_batches = token_batches(tok, rel.name, batch_size=4, seq_len=64, n_batches=budget.loss_batches)
    t = time.perf_counter()
    matryoshka.prefix_loss(model, sae, rel, loss_batches, progress=False)
    loss = time.perf_counter() - t
    n = len(budget.sweep_layers)
    print(f"model {args.dtype}, SAE {sae.dtype}, {os.cpu_count()} CPUs")
    print(f"collect {acts.n_tokens:,} tokens at one layer: {collect:.0f} s")
    print(f"prefix_metrics: {metrics:.0f} s; prefix_loss ({budget.loss_batches} batches): {loss:.0f} s")
    print(
        f"one layer of the sweep: {metrics + loss:.0f} s; x {n} layers: {(metrics + loss) * n / 60:.0f} min"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()

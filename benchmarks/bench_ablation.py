"""Attribution patching vs true ablation (issue: notebook 04), measured side by side on the mini preset.

One layer (the notebook's: three quarters of the way up the SAE layers), the notebook's task (logit
difference between the correct and a wrong next token on six short prompts):
1. Speed: `ablation.attribute` (every latent of the layer at every token, one forward + one backward)
   vs `ablation.true_effects` on the top 50 features by |estimate|, one forward pass each.
   Goal: attribution >= 10x faster than the 50 true ablations.
2. Agreement: Spearman's rank correlation between the per-feature estimates (summed over tokens) and
   the true effects of those 50 features (no goal; reported).

The runs alternate (attribution, true ablation, ...) and each keeps its best of `--repeat`, so a busy
machine slows both sides alike.

Run: python benchmarks/bench_ablation.py [--repeat 2] [--threads N] [--top 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

GOAL = 10.0
ITEMS = [  # the notebook's task
    ("The capital of France is the city of", " Paris", " London"),
    ("The capital of Japan is", " Tokyo", " Beijing"),
    ("x = (a + b", ")", "]"),
    ("if (x > 0", ")", "]"),
    ("1, 2, 3, 4, ", "5", "6"),
    ("2, 3, 4, 5, 6, ", "7", "8"),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--top", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import saehelpers
    from saehelpers import ablation

    model, tok = saehelpers.load_model("mini")
    rel = saehelpers.get_release("mini")
    layer = rel.layers[len(rel.layers) * 3 // 4]
    sae = saehelpers.load_sae(layer, "mini")
    task = ablation.make_task(tok, ITEMS)
    with torch.no_grad():
        task.run(model)  # warm-up

    best = {"attribution": float("inf"), "true ablation": float("inf")}
    for _ in range(args.repeat):
        t = time.perf_counter()
        table = ablation.attribute(model, sae, task)
        best["attribution"] = min(best["attribution"], time.perf_counter() - t)
        estimate = table.groupby("feature")["estimate"].sum()
        top = estimate.abs().sort_values(ascending=False).index[: args.top].tolist()
        t = time.perf_counter()
        true = ablation.true_effects(model, sae, task, top, progress=False)["effect"]
        best["true ablation"] = min(best["true ablation"], time.perf_counter() - t)

    n_tokens = int(task.attention_mask.sum()) - len(ITEMS)  # BOS left out
    print(f"## Attribution patching vs true ablation (mini preset, layer {layer}, d_sae {rel.d_sae})\n")
    print(f"{len(ITEMS)} prompts, {n_tokens} tokens (BOS left out), {args.threads} threads, "
          f"best of {args.repeat}; runs alternate\n")  # fmt: skip
    print("| run | features | passes | seconds |\n|---|---|---|---|")
    print(f"| attribution (all latents, every token) | {len(estimate)} active of {rel.d_sae} | 1 forward + 1 backward "
          f"| {best['attribution']:.2f} |")  # fmt: skip
    print(
        f"| true ablation, one by one | top {len(top)} | {len(top) + 1} forward | {best['true ablation']:.2f} |"
    )
    ratio = best["true ablation"] / best["attribution"]
    rho = estimate[top].rank().corr(true.rank())  # Spearman's rank correlation
    sign = (estimate[top].gt(0) == true.gt(0)).mean()
    print(f"\nspeed: attribution {ratio:.1f}x faster than {len(top)} true ablations (goal >= {GOAL}x)")
    print(
        f"agreement on the top {len(top)}: Spearman rank correlation {rho:.2f}, same sign {sign:.0%} (no goal)"
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())

"""Steering's speed goals (issue: notebook 03), measured side by side on the mini preset.

1. Steered vs plain `generate`, 64 new tokens: steered speed >= 0.9x plain (hook overhead <= 10%).
2. Steered generation with the KV cache vs re-running the full prefix every step (`use_cache=False`),
   64 new tokens: goal >= 3x faster. Both must give the same (greedy) text. The ratio grows with the
   prefix: on a CPU, a cached step costs about one read of the weights (memory-bound) and an uncached
   one adds the compute of the whole prefix, so a short, a paragraph-long and a page-long prompt are
   measured, and one cached step is split into the unembedding and the rest.
Also reported, without a goal: clamping through the SAE (one SAE encode per step) vs plain.

The runs alternate (plain, steered, ...) and each keeps its best of `--repeat`, so a busy machine
slows both sides alike. Every run generates exactly 64 tokens (min_new_tokens), greedy.

Run: python benchmarks/bench_steering.py [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

GOALS = {"steered_vs_plain": 0.9, "cache_vs_no_cache": 3.0}
N_NEW = 64
PROMPTS = {
    "short prompt": (
        "The old lighthouse keeper climbed the stairs every evening to light the lamp. One night, as a storm "
        "rolled in from the sea, he noticed"
    ),
    "paragraph prompt": (
        "The old lighthouse keeper climbed the stairs every evening to light the lamp. He had done it for forty "
        "years, in summer and in winter, through fog so thick that he could not see his own hands and through "
        "nights so clear that the stars seemed close enough to touch. The village below knew the rhythm of his "
        "light the way it knew the church bells and the tides. Fishermen set their courses by it, children "
        "counted its flashes as they fell asleep, and the baker said he could tell the time by it. One night, as "
        "a storm rolled in from the sea and the first waves broke over the harbour wall, he noticed"
    ),
}
# A page-long prompt: the paragraph, then more of the story.
PROMPTS["page prompt"] = PROMPTS["paragraph prompt"].removesuffix(" he noticed") + (
    " he did what he always did. He wound the clockwork, trimmed the wick, polished the great lens with a "
    "soft cloth and checked the oil. Then he sat by the window with a cup of tea and watched the sea. The "
    "wind rose through the evening. By midnight it was howling around the tower, rattling the windows and "
    "throwing spray as high as the gallery. Far out in the dark, between two waves, he saw a small light "
    "that rose and fell, rose and fell, much too close to the rocks. He picked up his telescope, wiped the "
    "salt from the glass, and looked again. It was a fishing boat, and its mast was broken. He knew every "
    "boat in the harbour, and he knew this one: it belonged to the baker's son, who had gone out that "
    "morning against everyone's advice. The keeper put down his telescope, pulled on his coat and, for the "
    "first time in forty years, he"
)


@torch.no_grad()
def step_breakdown(model, tok, prompt: str, repeat: int) -> dict[str, float]:
    """Milliseconds of one decoding step with the KV cache, and of the unembedding inside it.

    Caching saves the prefix's compute in the transformer body, but every step still applies the
    unembedding (Gemma-3-270m: a 262,144 x 640 matrix, 168M of its 268M parameters) to the new token.
    """
    import copy

    ids = tok(prompt, return_tensors="pt").input_ids
    out = model(ids, use_cache=True)
    nxt = out.logits[:, -1:].argmax(-1)
    h = torch.zeros(1, 1, model.config.hidden_size)

    def best(fn):
        times = []
        for _ in range(repeat + 1):
            cache = copy.deepcopy(out.cache)  # each step starts from the same cache
            t = time.perf_counter()
            fn(cache)
            times.append(time.perf_counter() - t)
        return 1e3 * min(times[1:])

    return {
        "cached step": best(lambda c: model(nxt, cache=c, use_cache=True, logits_to_keep=1)),
        "unembedding alone": best(lambda c: model.lm_head(h)),
    }


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import saehelpers
    from saehelpers import steering
    from saehelpers.loading import sae_path
    from saehelpers.text import token_batches

    model, tok = saehelpers.load_model("mini")
    rel = saehelpers.get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    _, spread = steering.resid_norms(model, layer, token_batches(tok, "mini", 4, 64, n_batches=1))
    sae = saehelpers.load_sae(layer, "mini") if (sae_path(layer) / "cfg.json").exists() else None
    if sae is not None:
        feature = 0
        vector = steering.feature_direction(sae, feature)
        what = f"feature {feature} of the layer-{layer} SAE"
    else:
        vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
        what = f"a random direction (the mini SAEs are not built yet) at layer {layer}"
    coef = 0.25 * spread / vector.norm().item()  # a push of a quarter of the residual spread
    print(f"## Steered generation (mini preset, {what}, coef {coef:.1f} = 0.25 x the residual spread)\n")
    print(
        f"{N_NEW} new tokens, greedy, batch 1, {args.threads} threads, best of {args.repeat}; runs alternate\n"
    )
    print("| prompt | run | seconds | new tokens / s |\n|---|---|---|---|")

    ok = True
    summary = []
    for label, prompt in PROMPTS.items():

        def gen(prompt=prompt, **kw):
            return steering.generate(model, tok, prompt, N_NEW, min_new_tokens=N_NEW, **kw)

        def steered(**kw):
            with steering.steer(model, layer, vector, coef):
                return gen(**kw)

        def clamped():
            with steering.clamp(model, sae, feature, 10.0):
                return gen()

        runs = {"plain": gen, "steered": steered, "steered, no KV cache": lambda: steered(use_cache=False)}
        if sae is not None and label == "short prompt":
            runs["clamped (SAE encode per step)"] = clamped
        gen()  # warm-up
        best = dict.fromkeys(runs, float("inf"))
        texts = {}
        for _ in range(args.repeat):
            for name, fn in runs.items():
                t, texts[name] = timed(fn)
                best[name] = min(best[name], t)
        label = f"{label} ({len(tok(prompt).input_ids)} tokens)"
        for name, sec in best.items():
            print(f"| {label} | {name} | {sec:.2f} | {N_NEW / sec:.1f} |")
        r1 = best["plain"] / best["steered"]
        r2 = best["steered, no KV cache"] / best["steered"]
        same = texts["steered"] == texts["steered, no KV cache"]
        summary.append(f"{label}: steered speed / plain speed {r1:.2f}x (goal >= {GOALS['steered_vs_plain']}x); "
                       f"KV cache vs re-running the prefix each step {r2:.1f}x (goal >= {GOALS['cache_vs_no_cache']}x); "
                       f"same text with and without the cache: {same}")  # fmt: skip
        if "clamped (SAE encode per step)" in best:
            summary.append(f"{label}: clamped speed / plain speed {best['plain'] / best['clamped (SAE encode per step)']:.2f}x (no goal)")  # fmt: skip
        ok &= r1 >= GOALS["steered_vs_plain"] and r2 >= GOALS["cache_vs_no_cache"] and same
    print("\n" + "\n".join(summary))
    b = step_breakdown(model, tok, PROMPTS["short prompt"], max(args.repeat, 3))
    print(f"\nOne decoding step with the KV cache takes {b['cached step']:.0f} ms; the unembedding alone takes "
          f"{b['unembedding alone']:.0f} ms of it ({b['unembedding alone'] / b['cached step']:.0%}). Re-running the "
          "prefix adds the body's compute for every earlier token but the same unembedding, so the ratio "
          "grows with the prompt's length.")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The layer sweep's speed and memory goals (issue: notebook 01), measured side by side.

1. Activations for all SAE layers from ONE forward pass per batch vs one pass per layer
   (the usual idiom: a full forward per layer, keeping `hidden_states[L + 1]`): goal >= 2.5x.
   The stricter baseline, one pass per layer that also stops early, is reported too.
2. Stopping after an early layer vs a full forward pass with logits: goal >= 3x.
3. Peak memory of a sweep over every mini layer vs measuring one SAE, each in a fresh process:
   goal extra < 1.5 SAEs' worth (no SAE stays behind).
4. The same sweep code on the fake real-shaped release (d_model 1152, SAE 1152 x 32768, 2 layers),
   reporting peak memory, so the real preset's budget is known (Colab free tier: ~12 GB RAM).

Run: python benchmarks/bench_sweep.py [--skip-real]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

GOALS = {"one_pass": 2.5, "stop_early": 3.0, "extra_saes": 1.5}


def best_of(fn, repeat=3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def speed(batch_size=8, seq_len=128) -> dict:
    import saehelpers
    from saehelpers import hooks
    from saehelpers.text import token_batches

    model, tok = saehelpers.load_model("mini")
    layers = list(saehelpers.get_release("mini").layers)
    batch = next(token_batches(tok, "mini", batch_size=batch_size, seq_len=seq_len, n_batches=1))
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def one_pass():
        hooks.resid_post(model, ids, layers, mask)

    def full_pass_per_layer():
        for layer in layers:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]

    def early_pass_per_layer():
        for layer in layers:
            hooks.resid_post(model, ids, [layer], mask)

    def early_layer():
        hooks.resid_post(model, ids, [layers[0]], mask)

    def full_with_logits():
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits

    t = {name: best_of(fn) for name, fn in [
        ("one_pass", one_pass), ("full_pass_per_layer", full_pass_per_layer),
        ("early_pass_per_layer", early_pass_per_layer), ("early_layer", early_layer),
        ("full_with_logits", full_with_logits)]}  # fmt: skip
    return {"layers": layers, "tokens": batch_size * seq_len, "seconds": t}


CHILD = r"""
import json, resource, sys, torch
import saehelpers
from saehelpers.activations import sae_stats
from saehelpers.text import token_batches
preset, mode, only = sys.argv[1], sys.argv[2], sys.argv[3]
model, tok = saehelpers.load_model(preset)
rel = saehelpers.get_release(preset)
layers = [int(x) for x in only.split(",")] if only else list(rel.layers)
batches = list(token_batches(tok, "mini", batch_size=2, seq_len=64, n_batches=2))
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
out = {"before_saes": base}
if mode == "one":
    sae = saehelpers.load_sae(layers[0], preset)
    out["sae_bytes"] = sum(p.numel() * p.element_size() for p in sae.parameters())
    sae_stats(model, sae, batches, progress=False)
else:
    for sae in saehelpers.iter_saes(layers, preset=preset):
        out["sae_bytes"] = sum(p.numel() * p.element_size() for p in sae.parameters())
        sae_stats(model, sae, batches, progress=False)
out["peak"] = rss()
out["layers"] = layers
print("RESULT " + json.dumps(out))
"""


def child(preset: str, mode: str, layers=(), env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, preset, mode, ",".join(map(str, layers))], capture_output=True, text=True,
                         env=env, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(
        next(x for x in out.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT ")
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true", help="skip the fake real-shaped release")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ok = True

    s = speed()
    t = s["seconds"]
    r1, r1s, r2 = (
        t["full_pass_per_layer"] / t["one_pass"],
        t["early_pass_per_layer"] / t["one_pass"],
        (t["full_with_logits"] / t["early_layer"]),
    )
    print(f"## Speed (mini preset, layers {s['layers']}, one batch of {s['tokens']} tokens, best of 3)\n")
    print("| run | seconds |\n|---|---|")
    for name, sec in t.items():
        print(f"| {name} | {sec:.3f} |")
    print(f"\nall layers in one pass vs a full pass per layer: {r1:.1f}x (goal >= {GOALS['one_pass']}x)")
    print(
        f"all layers in one pass vs an early-stopping pass per layer: {r1s:.1f}x (stricter baseline, no goal)"
    )
    print(
        f"stop after layer {s['layers'][0]} vs full forward with logits: {r2:.1f}x (goal >= {GOALS['stop_early']}x)"
    )
    ok &= r1 >= GOALS["one_pass"] and r2 >= GOALS["stop_early"]

    one, sweep = child("mini", "one"), child("mini", "sweep")
    extra = (sweep["peak"] - one["peak"]) / one["sae_bytes"]
    mb = 2**20
    print("\n## Peak memory (mini preset, fresh process each, ru_maxrss)\n")
    print("| run | peak RSS (MB) |\n|---|---|")
    print(f"| model + one SAE, measured | {one['peak'] / mb:,.0f} |")
    print(f"| model + sweep of layers {sweep['layers']} | {sweep['peak'] / mb:,.0f} |")
    print(
        f"\none SAE: {one['sae_bytes'] / mb:.1f} MB; the sweep's extra peak: {extra:+.2f} SAEs (goal < {GOALS['extra_saes']})"
    )
    ok &= extra < GOALS["extra_saes"]

    if not args.skip_real:
        from saehelpers import fakehub

        real_layers = (0, 12)  # the fake cache holds only these layers' SAEs
        root = fakehub.build_fake_hub(sae_layers=real_layers)
        env = {k: v for k, v in os.environ.items() if k not in ("SAEHELPERS_PRESET", "HF_TOKEN")}
        env |= fakehub.hub_env(root)
        real = child("gemma-3-1b", "sweep", real_layers, env=env)
        print(
            "\n## Fake real-shaped release (random weights, d_model 1152, SAE 1152 x 32768, float32 on CPU)\n"
        )
        print(f"model loaded: {real['before_saes'] / 2**30:.2f} GB peak RSS; sweep of layers {real['layers']}: "
              f"{real['peak'] / 2**30:.2f} GB peak RSS; one SAE {real['sae_bytes'] / 2**30:.2f} GB")  # fmt: skip
        print("(batches of 2 x 64 tokens; logits are [batch x seq x 262144], so peak grows with batch x seq)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

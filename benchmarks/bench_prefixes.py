"""All Matryoshka prefix reconstructions from one encode, measured side by side.

Three ways to get the reconstruction of every prefix width, timed on the same activations:
- full: one `sae.encode` + one `sae.decode` (the whole SAE only; the unit of cost);
- incremental: one encode + `matryoshka.prefix_decode` (all widths, each group's latents decoded once);
- naive: one encode + one `sae.decode` per width on a masked copy of the activations.
Goal: incremental <= 1.5x full (naive is about 1 + n_widths decodes).
Cases: the mini preset's layer-6 SAE on random activations of its d_in (the shipped weights), and a
random SAE of the real release's shape (1152 x 32768, thresholds set for about k active latents).

Run: python benchmarks/bench_prefixes.py [--tokens N] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

GOAL = 1.5


def random_real_sae(rel, x):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=rel.d_model, d_sae=rel.d_sae, dtype="float32", device="cpu"))
    sae.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    sae.W_enc.copy_(torch.randn(rel.d_model, rel.d_sae, generator=g) / rel.d_model**0.5)
    sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
    pre = x[:256] @ sae.W_enc
    sae.threshold.copy_(pre.quantile(1 - rel.k / rel.d_sae, dim=0).clamp_min(1e-3))
    return sae


def sparse_inputs(sae, k: int, n: int) -> torch.Tensor:
    """Inputs the SAE reads as sparse: decodes of random codes with k active latents per token, plus noise."""
    g = torch.Generator().manual_seed(1)
    idx = torch.rand(n, sae.cfg.d_sae, generator=g).topk(k, dim=1).indices
    codes = torch.zeros(n, sae.cfg.d_sae).scatter(1, idx, 1.0) * (
        1.5 * sae.threshold.detach().clamp_min(1e-3)
    )
    x = sae.decode(codes).detach()
    return x + 0.01 * x.std() * torch.randn(x.shape, generator=g)


def timings(sae, rel, x, repeat: int) -> dict:
    """Best-of-`repeat` seconds of each way; the three are interleaved in each round."""
    from saehelpers import matryoshka

    widths = rel.matryoshka_widths

    def full():
        return sae.decode(sae.encode(x))

    def incremental():
        return matryoshka.prefix_decode(sae, rel, sae.encode(x))

    def naive():
        acts = sae.encode(x)
        out = {}
        for w in widths:
            masked = acts.clone()
            masked[:, w:] = 0
            out[w] = sae.decode(masked)
        return out

    ways = {"full": full, "incremental": incremental, "naive": naive}
    best = dict.fromkeys(ways, float("inf"))
    with torch.no_grad():
        for f in ways.values():
            f()  # warm-up
        for _ in range(repeat):
            for name, f in ways.items():
                t = time.perf_counter()
                f()
                best[name] = min(best[name], time.perf_counter() - t)
        # the incremental prefixes are the masked decodes
        inc, nav = incremental(), naive()
        err = max((inc[w] - nav[w]).abs().max().item() / nav[w].abs().max().item() for w in widths)
    return {**best, "err": err, "l0": (sae.encode(x[:256]) != 0).sum(-1).float().mean().item()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import saehelpers

    torch.manual_seed(0)
    rows = []
    mini = saehelpers.get_release("mini")
    layer = mini.layers[1]
    sae = saehelpers.load_sae(layer, "mini", device="cpu", dtype="float32")
    x = sparse_inputs(sae, mini.k, args.tokens)
    rows.append((f"mini layer {layer} ({mini.d_model} x {mini.d_sae})", timings(sae, mini, x, args.repeat)))
    real = saehelpers.get_release("gemma-3-1b")
    x = torch.randn(args.tokens, real.d_model)
    rows.append(
        (
            f"real shape, random ({real.d_model} x {real.d_sae})",
            timings(random_real_sae(real, x), real, x, args.repeat),
        )
    )

    print(f"{args.tokens} tokens, {torch.get_num_threads()} threads, best of {args.repeat}; ms per call")
    print(
        "| SAE | L0 | full encode+decode | incremental, all prefixes | naive masked decodes | incremental / full | naive / full | max rel err |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for name, r in rows:
        inc, nav = r["incremental"] / r["full"], r["naive"] / r["full"]
        ok &= inc <= GOAL
        print(
            f"| {name} | {r['l0']:.0f} | {1e3 * r['full']:.1f} | {1e3 * r['incremental']:.1f} | {1e3 * r['naive']:.1f} "
            f"| {inc:.2f}x | {nav:.2f}x | {r['err']:.1e} |"
        )
    print(f"goal: incremental <= {GOAL}x full: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

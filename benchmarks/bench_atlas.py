"""The feature atlas (issue #38): speed-up of 2 processes over 1, and one layer at the real width.

1. --part speedup: the same `python -m saehelpers atlas` run on mini, once as one process and once under
   `torchrun --nproc-per-node 2`, one thread per process (OMP_NUM_THREADS=1, --threads 1). Reports the
   streaming phase's tokens/s (read, encode, merge: what grows with --tokens) and each whole command's wall
   time; goal: 2 processes >= 1.7x one. It also checks that both wrote the same bytes.
2. --part real: one layer of the fake hub (random weights at the real shapes: Gemma-3-1b, width 32,768) as
   one process: time per phase, peak RSS, the atlas's size on disk. From those it COMPUTES (does not measure)
   what a T4, and 8 T4s under torchrun, would need for all 25 layers over 10M tokens (see `estimate`).

Run: python benchmarks/bench_atlas.py [--part speedup|real|both] [--tokens N] [--real-tokens N]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.7
ROOT = Path(__file__).resolve().parents[1]

# Assumptions of the estimate (stated in the README's table): a T4 has no bfloat16 tensor cores, so bfloat16
# matmuls run near its float32 rate (8.1 TFLOP/s peak); we assume half of that is sustained.
T4_FLOPS = 4.0e12
N_PARAMS, VOCAB, D_MODEL, D_SAE, N_LAYERS = 999_885_952, 262_144, 1152, 32_768, 26


def run_atlas(args: list[str], out: Path, timings: Path, world: int, env: dict) -> float:
    cmd = [
        sys.executable,
        "-m",
        "saehelpers",
        "atlas",
        *args,
        "--out",
        str(out),
        "--timings",
        str(timings),
        "--quiet",
    ]
    if world > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={world}",
            *cmd[1:],
        ]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def speedup(tokens: int) -> bool:
    from saehelpers import get_release

    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["--preset", "mini", "--layers", str(layer), "--tokens", str(tokens), "--threads", "1",
            "--batch-size", "4", "--seq-len", "64"]  # fmt: skip  # 256 tokens a batch: many batches per process
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for world in (1, 2):
            wall = run_atlas(args, tmp / f"k{world}", tmp / f"k{world}.json", world, env)
            t = json.loads((tmp / f"k{world}.json").read_text())["layers"][0]
            rows[world] = (t["tokens"] / t["stream_s"], t, wall)
        same = same_files(tmp / "k1", tmp / "k2")
    print(
        f"mini, layer {layer}, {tokens} tokens in batches of 4 x 64, one thread per process, {os.cpu_count()} CPUs"
    )
    print(
        "| processes | stream tokens/s | encode s | merge s | gather+wait s | lens s | pages s | command wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for world, (rate, t, wall) in rows.items():
        print(f"| {world} | {rate:.0f} | {t['encode_s']:.1f} | {t['merge_s']:.1f} | {t['gather_s']:.1f} | "
              f"{t['lens_s']:.1f} | {t['describe_s']:.1f} | {wall:.0f} |")  # fmt: skip
    ratio = rows[2][0] / rows[1][0]
    print(f"speed-up of the stream: {ratio:.2f}x (goal >= {GOAL}x); whole command {rows[1][2] / rows[2][2]:.2f}x; "
          f"files identical: {same}")  # fmt: skip
    return ratio >= GOAL and same


def estimate(t: dict, size: int, peak_mb: float, layers: int = 25, tokens: float = 10e6) -> None:
    """What 1 T4 and 8 T4s would need for `layers` layers x `tokens` tokens: computed from FLOPs and this run."""
    body = N_PARAMS - VOCAB * D_MODEL  # the part of the model a forward to layer L runs, (L + 1) / 26 of it
    fwd = (
        sum(2 * body * (L + 1) / N_LAYERS for L in range(layers)) + layers * 2 * D_MODEL * D_SAE
    )  # FLOP/token
    merge = t["merge_s"] / t["tokens"]  # host CPU seconds per token per layer (measured, one process)
    lens = 2 * D_SAE * D_MODEL * VOCAB  # FLOP per layer
    fixed = t["describe_s"] + t.get("write_s", 0)  # rank 0's pages and files per layer (measured, CPU)
    print(f"\nComputed for {layers} layers x {tokens / 1e6:.0f}M tokens (not measured): GPU work {fwd / 1e9:.1f} GFLOP "
          f"per token at {T4_FLOPS / 1e12:.0f} TFLOP/s sustained per T4; the host merge {merge * 1e6:.0f} us per token "
          f"per layer (measured here, one CPU thread per process); pages and files {fixed:.0f} s per layer (rank 0).")  # fmt: skip
    print("| setup | GPU (forward + encode + lens) | host merge | pages + files | total | disk |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, k in (("1 T4", 1), ("8 T4s (torchrun, 8 processes)", 8)):
        gpu = (fwd * tokens + layers * lens) / T4_FLOPS / k
        host = merge * tokens * layers / k
        pages = fixed * layers
        total = gpu + host + pages
        print(f"| {name} | {gpu / 3600:.1f} h | {host / 3600:.1f} h | {pages / 3600:.1f} h | {total / 3600:.1f} h | "
              f"{size * layers / 2**30:.1f} GiB |")  # fmt: skip
    print(f"(peak RAM of the one-layer run here: {peak_mb:,.0f} MB; the statistics do not grow with tokens)")


def real(tokens: int) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from run_real_shape import real_shape_env

    from saehelpers import fakehub
    from saehelpers.atlas import atlas_size

    layer = 12
    root = fakehub.build_fake_hub(sae_layers=[layer], verbose=False)
    env = {**os.environ, **real_shape_env(root, "bfloat16", full=True)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args = ["--preset", "gemma-3-1b", "--layers", str(layer), "--tokens", str(tokens)]
        wall = run_atlas(args, tmp / "site", tmp / "t.json", 1, env)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        timings = json.loads((tmp / "t.json").read_text())
        t = timings["layers"][0] | {"write_s": timings["write_s"]}
        size = atlas_size(tmp / "site")
        files = sorted((p.name, p.stat().st_size) for p in (tmp / "site" / "data").iterdir())
    print(f"fake hub (random weights, real shapes), layer {layer}, {t['tokens']} tokens, bfloat16, "
          f"{timings['threads']} threads: command {wall:.0f} s, peak RSS {peak_mb:,.0f} MB, atlas {size / 2**20:.1f} MiB")  # fmt: skip
    print("phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k.endswith("_s")))
    print(f"stream: {t['tokens'] / t['stream_s']:.0f} tokens/s; files: " + ", ".join(f"{n} {s / 2**20:.1f} MiB" for n, s in files))  # fmt: skip
    estimate(t, size, peak_mb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["speedup", "real", "both"], default="both")
    ap.add_argument("--tokens", type=int, default=4096, help="mini tokens for the speed-up (default 4096)")
    ap.add_argument("--real-tokens", type=int, default=2048, help="fake-hub tokens for one real-width layer")
    args = ap.parse_args()
    ok = True
    if args.part in ("speedup", "both"):
        ok = speedup(args.tokens)
    if args.part in ("real", "both"):
        real(args.real_tokens)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

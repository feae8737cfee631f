"""Peak memory of `activations.collect_resid`: batches joined at the end vs copied into one tensor per layer.

Without max_tokens, collect_resid keeps each batch and joins them at the end; with max_tokens it copies each
batch into a preallocated tensor. Each way runs in a fresh process on the same batches (mini model, every
layer, so the result is large), and the table gives the rise of the peak RSS over the result's size.
Notebook 05 collects 25 layers x 32,768 tokens on the real release (3.8 GB): the ratio is what it pays.

    python benchmarks/bench_collect_memory.py [--batches 40]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import gc, sys, torch
from saehelpers.activations import collect_resid
from saehelpers.loading import load_model
from saehelpers.text import token_batches

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

n_batches, preallocate = int(sys.argv[1]), sys.argv[2] == "1"
model, tok = load_model("mini", device="cpu", dtype="float32")
layers = list(range(model.config.num_hidden_layers))
batches = list(token_batches(tok, "mini", 8, 128, n_batches, split="heldout"))
collect_resid(model, batches[:1], layers, progress=False)  # warm-up: working buffers, mapped weights
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
acts = collect_resid(model, batches, layers, max_tokens=8 * 128 * n_batches if preallocate else None, progress=False)
size = sum(a.numel() * a.element_size() for a in acts.acts.values()) / 2**20
print(f"{size:.0f} {status('VmHWM') - before:.0f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=40, help="batches of 8 x 128 tokens")
    args = ap.parse_args()
    print("| collect_resid | result (MB) | peak rise (MB) | peak rise / result |\n|---|---:|---:|---:|")
    for name, flag in (
        ("joined at the end (max_tokens=None)", "0"),
        ("preallocated (max_tokens given)", "1"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.batches), flag], capture_output=True, text=True, check=True
        )
        size, rise = map(float, out.stdout.split()[-2:])
        print(f"| {name} | {size:.0f} | {rise:.0f} | {rise / size:.2f} |")


if __name__ == "__main__":
    main()

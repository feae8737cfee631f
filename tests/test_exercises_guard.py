"""What the checkers guard, with answers beyond the reference and the named mistakes: a function that
damages the SAE or the model it is handed, leaves or removes hooks of any kind, or changes torch's global
state is named and undone; right answers written other ways pass; a wrong answer is named only by a
mistake it matches on every case; a function that never returns is stopped."""

import numpy as np
import pytest
import torch
import torch.nn.modules.module as torch_module

from saehelpers import exercises, hooks, metrics
from saehelpers.exercises import core, lesson01, lesson03, lesson05, lesson06


@pytest.fixture(scope="module")
def sae():
    from saehelpers import get_release, load_sae

    return load_sae(get_release("mini").layers[1], "mini", dtype="float32")


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "damage,named",
    [
        (lambda s: s.W_dec[0].div_(s.W_dec[0].norm()), "changed sae.W_dec"),  # normalise a row in place
        (lambda s: s.threshold.zero_(), "changed sae.threshold"),
        (lambda s: s.W_dec.data[3].mul_(2), "changed sae.W_dec"),  # through .data: no version bump
        (lambda s: setattr(s, "b_dec", torch.nn.Parameter(torch.zeros_like(s.b_dec))), "changed sae.b_dec"),
    ],
)
def test_a_function_that_damages_the_lessons_sae_is_named_and_the_sae_put_back(sae, damage, named):
    before = _state(sae)
    b_dec = sae.b_dec

    def clamp(resid, sae, feature, value):
        right = lesson03._clamp(resid, sae, feature, value)  # the right answer, computed before the damage
        if sae.cfg.d_in != 8:  # the toy SAE's cases pass; the lesson's SAE is damaged
            with torch.no_grad():
                damage(sae)
        return right

    with pytest.raises(exercises.ExerciseFailed, match=named) as info:
        exercises.check_clamp_resid(clamp, sae)
    assert "your SAE" in str(info.value) and "Work on copies" in str(info.value)
    assert _equal(_state(sae), before) and sae.b_dec is b_dec


def test_the_reference_is_computed_before_the_learners_call(sae):
    """A function that zeroes the threshold and then answers on the damaged SAE is wrong."""

    def encode(sae, x):
        with torch.no_grad():
            sae.threshold.zero_()
        return sae.encode(x)

    with pytest.raises(exercises.ExerciseFailed, match="changed sae.threshold"):
        exercises.check_encode(encode, sae)


def _capture_then(after):
    def capture(model, layer, input_ids):
        captured = []
        layer_module = hooks.decoder_layers(model)[layer]
        layer_module.register_forward_hook(
            lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out)
        )
        try:
            with torch.no_grad():
                model(input_ids)
        finally:
            after(model, layer_module)
        return captured[0]

    return capture


def _all_hooks(model) -> list:
    tables = [getattr(torch_module, name) for name in core._GLOBAL_HOOKS]
    tables += [getattr(m, attr) for m in model.modules() for attr in core._HOOKS]
    return [sorted(t) for t in tables]


def test_clearing_a_hook_dict_is_named_and_the_hooks_not_yours_put_back(mini):
    model = mini[0]
    layer = hooks.decoder_layers(model)[0]
    theirs = layer.register_forward_hook(lambda m, a, out: None)  # stands for transformers' own hooks
    try:
        before = _all_hooks(model)
        clear = _capture_then(lambda model, module: module._forward_hooks.clear())
        with pytest.raises(exercises.ExerciseFailed, match=r"removed \d hook\(s\) it did not add") as info:
            exercises.check_capture(clear, model)
        assert "never by clearing a hook dict" in str(info.value)
        assert _all_hooks(model) == before and theirs.id in layer._forward_hooks
    finally:
        theirs.remove()


def test_a_global_hook_left_behind_is_named_and_removed(mini):
    model = mini[0]
    before = _all_hooks(model)

    def capture(model, layer, input_ids):
        torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: None)
        return lesson01._capture(model, layer, input_ids)

    with pytest.raises(exercises.ExerciseFailed, match=r"left 1 global hook\(s\) in .*_global_forward_hooks"):
        exercises.check_capture(capture, model)
    assert _all_hooks(model) == before


@pytest.mark.parametrize(
    "change,named",
    [
        (lambda model: torch.set_default_dtype(torch.float64), "set torch's default dtype to torch.float64"),
        (lambda model: torch.set_grad_enabled(False), "turned gradients off"),
        (lambda model: model.train(), r"switched the model to training mode \(model.train\(\)\)"),
    ],
)
def test_torchs_global_state_and_training_mode_are_named_and_put_back(mini, change, named):
    model = mini[0]
    state = torch.get_default_dtype(), torch.is_grad_enabled(), model.training

    def capture(model, layer, input_ids):
        out = lesson01._capture(model, layer, input_ids)
        change(model)
        return out

    with pytest.raises(exercises.ExerciseFailed, match=named):
        exercises.check_capture(capture, model)
    assert (torch.get_default_dtype(), torch.is_grad_enabled(), model.training) == state


def test_numpy_scalars_are_numbers(capsys):
    def explained_variance(x, x_hat, about="mean"):
        return np.float32(metrics.explained_variance(x, x_hat, about))

    assert exercises.check_explained_variance(explained_variance) is None
    assert capsys.readouterr().out.startswith("✓ explained_variance: all ")
    msg = core.difference(np.array([0.5]), 0.25)
    assert msg.endswith("expected a single number (a Python float or int). Wrap it in float().")


def test_an_integer_answer_names_the_first_wrong_entry_and_its_value():
    def group_of(latents, widths):
        out = lesson05._group_of(latents, widths).clone()
        out[latents == 0] = 7
        return out

    with pytest.raises(exercises.ExerciseFailed, match=r"the first is index \d+: got 7, expected 0\."):
        exercises.check_group_of(group_of)


def test_a_mistake_is_named_only_when_it_matches_every_case():
    """max(activation, value) agrees with steering where value is 0 and with clamping elsewhere: neither."""

    def clamp_up(resid, sae, feature, value):
        a = sae.encode(resid)[..., feature]
        return resid + (a.clamp(min=value) - a)[..., None] * sae.W_dec[feature]

    steered = next(m for m in lesson03.CLAMP_MISTAKES if m.name == "steered")
    with pytest.raises(exercises.ExerciseFailed) as info:
        exercises.check_clamp_resid(clamp_up, lesson03.toy_sae())
    assert steered.message not in str(info.value) and "value=0.0: the result differs" in str(info.value)


def test_euclidean_nearest_rows_are_refused_and_named():
    euclidean = next(m for m in lesson06.MATCH_MISTAKES if m.name == "euclidean")

    def best_match(W_dec, directions):
        i = torch.cdist(directions, W_dec).argmin(1)  # another way to write the mistake
        cos = torch.nn.functional.cosine_similarity(W_dec[i], directions, dim=-1)
        return i, cos

    with pytest.raises(exercises.ExerciseFailed, match="a short row at cosine 0.99") as info:
        exercises.check_best_match(best_match)
    assert euclidean.message in str(info.value)


def test_a_function_that_never_returns_is_stopped(monkeypatch, capsys):
    monkeypatch.setattr(core, "TIME_LIMIT", 0.3)

    def absorption_score(latent_acts, child_on):
        while True:
            try:
                pass
            except Exception:  # a learner's catch-all does not swallow the time limit
                pass

    with pytest.raises(exercises.ExerciseFailed, match=r"did not return within 0.3 s on 20 samples"):
        exercises.check_absorption_score(absorption_score)
    # Nothing fires later: the next check runs as usual.
    exercises.check_absorption_score(lambda acts, on: (acts[on] == 0).float().mean().item())
    assert capsys.readouterr().out.startswith("✓ absorption_score")


def test_a_verdict_renders_as_one_line_in_jupyter():
    with pytest.raises(exercises.ExerciseFailed) as info:
        exercises.check_absorption_score(lambda acts, on: 2.0)
    lines = info.value._render_traceback_()
    assert len(lines) == 1 and "✗ absorption_score, on 20 samples" in lines[0] and "expected" in lines[0]

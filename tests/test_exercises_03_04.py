"""Lessons 03 and 04's exercises beyond the generic tests: the SAE checkers in bfloat16 (the notebooks'
default on this CPU; the generic tests use float32), other right answers than the reference, and the
notebook cells that put the learner's function in a hook or compare it with saehelpers."""

import contextlib
import io

import pytest
import torch
from checking import passed

from saehelpers import ablation, exercises, get_release, hooks, load_sae, steering
from saehelpers.exercises import core, lesson03, lesson04


def notebook_sae(dtype):
    """The notebooks' SAE (the topmost of the mini release: the largest residual entries, up to ~2e4)."""
    release = get_release("mini")
    layer = release.layers[len(release.layers) * 3 // 4]
    return layer, load_sae(layer, "mini", dtype=dtype)


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def sae(request):
    return notebook_sae(request.param)[1]


def _quiet(check, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return check(*args)


# Right answers written otherwise than the reference: in bfloat16 they round differently.
def clamp_by_decoding(resid, sae, feature, value):
    a = sae.encode(resid)
    clamped = a.clone()
    clamped[..., feature] = value
    return sae.decode(clamped) + (resid - sae.decode(a))


def clamp_in_two_steps(resid, sae, feature, value):
    a = sae.encode(resid)[..., feature : feature + 1]
    d = sae.W_dec[feature]
    return resid - a * d + value * d


def ablate_by_decoding(resid, sae, features):
    a = sae.encode(resid)
    ablated = a.clone()
    ablated[..., features] = 0
    return sae.decode(ablated) + (resid - sae.decode(a))


def ablate_in_a_loop(resid, sae, features):
    a = sae.encode(resid)
    for f in features:
        resid = resid - a[..., f, None] * sae.W_dec[f]
    return resid


@pytest.mark.parametrize(
    "check,right",
    [
        (exercises.check_clamp_resid, [lesson03._clamp, clamp_by_decoding, clamp_in_two_steps]),
        (exercises.check_ablate_resid, [lesson04._ablate, ablate_by_decoding, ablate_in_a_loop]),
    ],
)
def test_right_answers_pass_in_both_dtypes(sae, check, right):
    for fn in right:
        assert passed(check, fn, sae) >= 4


@pytest.mark.parametrize(
    "check,mistakes",
    [
        (exercises.check_clamp_resid, lesson03.CLAMP_MISTAKES),
        (exercises.check_ablate_resid, lesson04.ABLATE_MISTAKES),
    ],
)
def test_mistakes_are_named_in_both_dtypes_on_the_notebook_sae_alone(sae, check, mistakes):
    """Not only the toy SAE's cases: the learner's own SAE's cases name each mistake too."""
    cases_of = {
        exercises.check_clamp_resid: lesson03._clamp_cases,
        exercises.check_ablate_resid: lesson04._ablate_cases,
    }
    reference = lesson03._clamp if check is exercises.check_clamp_resid else lesson04._ablate
    cases = cases_of[check](sae, False)
    for m in mistakes:
        with pytest.raises(exercises.ExerciseFailed) as info, torch.no_grad():
            _quiet(core.check, "x", m.fn, reference, cases, mistakes)
        assert m.message in str(info.value), m.name


def steer_positions(resid, vector, coef, positions):  # notebook 03's solution
    out = resid.clone()
    out[:, positions] += coef * vector
    return out


def test_steer_positions_in_a_hook_is_steering_steer_at_those_positions(mini):
    model, tok = mini
    layer, sae = notebook_sae("float32")
    feature, coef = 3, 7.5
    d = steering.feature_direction(sae, feature)
    ids = tok("The weather is very nice today, let's go for a walk.", return_tensors="pt").input_ids
    later = list(range(4, ids.shape[1]))
    with hooks.replace(model, layer, lambda h: steer_positions(h, d, coef, later)):
        mine = hooks.resid_post(model, ids, [layer])[layer]
    with steering.steer(model, sae, feature, coef, positions=later):
        theirs = hooks.resid_post(model, ids, [layer])[layer]
    clean = hooks.resid_post(model, ids, [layer])[layer]
    torch.testing.assert_close(mine, theirs)
    assert torch.equal(mine[:, :4], clean[:, :4]) and not torch.allclose(mine[:, 4:], clean[:, 4:])


ITEMS = [
    ("The capital of France is the city of", " Paris", " London"),
    ("x = (a + b", ")", "]"),
    ("1, 2, 3, 4, ", "5", "6"),
]


def test_ablate_resid_in_a_hook_is_ablation_ablate(mini):
    model, tok = mini
    layer, sae = notebook_sae("float32")
    task = ablation.make_task(tok, ITEMS)
    with torch.no_grad():
        with hooks.replace(model, layer, lambda h: lesson04._ablate(h, sae, [1, 18]), include_bos=False):
            mine = task.metric(task.run(model))
        with ablation.ablate(model, sae, [1, 18]):
            theirs = task.metric(task.run(model))
    assert abs(mine.item() - theirs.item()) < 1e-5


def test_attribution_on_the_notebooks_gradient_is_ablation_attribute(mini):
    """Notebook 04's exercise cell: the gradient by hand and the learner's function give attribute's table."""
    model, tok = mini
    layer, sae = notebook_sae("float32")
    task = ablation.make_task(tok, ITEMS)
    table = ablation.attribute(model, sae, task)
    x = hooks.resid_post(model, task.input_ids, [layer], task.attention_mask)[layer].requires_grad_()
    with torch.enable_grad(), hooks.replace(model, layer, lambda h: x):
        (grad,) = torch.autograd.grad(task.metric(task.run(model)), x)
    for row in range(len(ITEMS)):
        est = lesson04._attribution(sae.encode(x.detach())[row], grad[row], sae.W_dec)
        part = table[table["row"] == row]
        got = est[part["position"].tolist(), part["feature"].tolist()]
        torch.testing.assert_close(got, torch.tensor(part["estimate"].tolist()), rtol=1e-4, atol=1e-6)
        kept = est[1 : task.last[row] + 1]
        t, f = divmod(int(kept.abs().argmax()), kept.shape[1])
        assert (t + 1, f) == (part["position"].iloc[0], part["feature"].iloc[0])

"""The exercise checkers: each passes its reference answer, names each known mistake, and lets an
unattempted exercise (NotImplementedError) say so in one line and go on with saehelpers' own version."""

import re

import pytest
import torch

from saehelpers import exercises
from saehelpers.exercises import core

ALL = [(lesson, e) for lesson, items in exercises.LESSONS.items() for e in items]
MISTAKES = [(lesson, e, m) for lesson, e in ALL for m in e.mistakes]


def _code_lines(fn) -> list[str]:
    """The solution's statements that would give the answer away (not its signature or docstring)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    lines = {line.strip() for n in body for line in ast.unparse(n).splitlines()}
    # A bare call such as `handle.remove()` is an API a hint may name; the rest is the working.
    return [line for line in lines if len(line) >= 12 and not re.fullmatch(r"[\w.]+\(\)", line)]


def _id(item) -> str:
    return item.check.__name__ if isinstance(item, core.Exercise) else getattr(item, "name", str(item))


@pytest.fixture(scope="module")
def context(request):
    """What a checker may need from the notebook: the mini model (float32) and one of its SAEs."""
    cache = {}

    def get(needs):
        out = []
        for need in needs:
            if need not in cache:
                if need == "model":
                    cache[need] = request.getfixturevalue("mini")[0]
                elif need == "sae":
                    from saehelpers import get_release, load_sae

                    release = get_release("mini")
                    cache[need] = load_sae(release.layers[1], "mini", dtype="float32")
                else:
                    raise KeyError(need)
            out.append(cache[need])
        return out

    return get


def test_every_lesson_has_two_to_four_exercises():
    assert sorted(exercises.LESSONS) == ["00", "01", "02", "03", "04", "05", "06", "07"]
    assert all(2 <= len(items) <= 4 for items in exercises.LESSONS.values())
    assert sum(len(items) for items in exercises.LESSONS.values()) >= 14
    names = [e.check.__name__ for _, e in ALL]
    assert len(set(names)) == len(names) and all(n.startswith("check_") for n in names)
    assert all(getattr(exercises, n) is e.check for n, (_, e) in zip(names, ALL))


@pytest.mark.parametrize("lesson,exercise", ALL, ids=lambda x: _id(x) if not isinstance(x, str) else x)
def test_reference_passes(lesson, exercise, context, capsys):
    assert exercise.check(exercise.solution, *context(exercise.needs)) is None  # no stray Out[n]
    out = capsys.readouterr().out
    name = exercise.check.__name__.removeprefix("check_")
    assert out.startswith(f"✓ {name}") and int(re.search(r": all (\d+) checks pass", out)[1]) >= 2


@pytest.mark.parametrize(
    "lesson,exercise,mistake", MISTAKES, ids=lambda x: _id(x) if not isinstance(x, str) else x
)
def test_mistake_is_named(lesson, exercise, mistake, context):
    with pytest.raises(exercises.ExerciseFailed) as info:
        exercise.check(mistake.fn, *context(exercise.needs))
    assert mistake.message in str(info.value)
    # The message names the mistake and shows expected values, never the reference's code.
    code = _code_lines(exercise.solution)
    assert code and not [line for line in code if line in str(info.value)]


@pytest.mark.parametrize("lesson,exercise", ALL, ids=lambda x: _id(x) if not isinstance(x, str) else x)
def test_unattempted_exercise_says_so_and_lends_saehelpers_version(lesson, exercise, context, capsys):
    # As in a notebook: the learner's stub lives in the namespace the cells share.
    namespace = {}
    exec("def my_fn(*args, **kwargs):\n    # YOUR CODE HERE\n    raise NotImplementedError()", namespace)
    assert exercise.check(namespace["my_fn"], *context(exercise.needs)) is None
    number = f"{lesson}.{exercises.LESSONS[lesson].index(exercise) + 1}"
    assert capsys.readouterr().out == (
        f"Exercise {number} not attempted yet (my_fn raises NotImplementedError): the cells below use "
        "saehelpers' own version. Write yours and run this cell again when you are ready.\n"
    )
    assert namespace["my_fn"] is exercise.solution  # so the cells below the exercise run


@pytest.mark.parametrize("lesson,exercise", ALL, ids=lambda x: _id(x) if not isinstance(x, str) else x)
def test_a_crash_names_the_case_and_a_wrong_type_says_what_was_expected(lesson, exercise, context):
    def crash(*args, **kwargs):
        raise KeyError("oops")

    with pytest.raises(exercises.ExerciseFailed, match=r"raised KeyError on .+: 'oops'"):
        exercise.check(crash, *context(exercise.needs))
    with pytest.raises(exercises.ExerciseFailed, match=r"the result is a str; expected"):
        exercise.check(lambda *a, **k: "nothing", *context(exercise.needs))


def test_check_rejects_a_non_function_and_spots_input_changed_in_place():
    with pytest.raises(exercises.ExerciseFailed, match="Pass your function itself"):
        exercises.check_explained_variance(0.5)

    def in_place(x, x_hat, about="mean"):
        x -= x.mean(0)
        return 1 - ((x - x_hat + x.mean(0)) ** 2).sum().item() / (x**2).sum().item()

    with pytest.raises(exercises.ExerciseFailed, match="changed its input in place"):
        exercises.check_explained_variance(in_place)


def test_difference_reports_in_plain_words():
    d = core.difference
    assert d(0.5, 0.5) is None and d(torch.tensor(0.5), 0.5) is None
    assert (
        d(torch.ones(3), 1.0)
        == "the result is a tensor of shape (3,); expected a single number (a Python float or int)."
    )
    assert d(float("nan"), 1.0).startswith("the result is nan")
    assert d(torch.ones(2, 3), torch.ones(3, 2)) == "the result has shape (2, 3); expected (3, 2)."
    msg = d(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 3.0]))
    assert "largest difference is 0.5, at index (1,) (got 2, expected 2.5)" in msg
    assert d([(0, 1)], [(0, 2)]) == "item 1 of item 0 of the result is 1; expected 2."
    assert (
        d({4: torch.ones(2)}, {4: torch.ones(2), 8: torch.ones(2)})
        == "the result has keys [4]; expected [4, 8]."
    )
    assert d(torch.tensor([1, 2]), torch.tensor([1, 3])).endswith(
        "at 1 of 2 entries; the first is index 1: got 2, expected 3."
    )
    assert "the first is index (1, 0): got 5, expected 0." in d(
        torch.tensor([[0], [5]]), torch.tensor([[0], [0]])
    )


def test_a_case_may_carry_its_own_tolerance(capsys):
    def reference(x):
        return x * 2

    def close(x):
        return x * 2 + 0.01

    tight = [core.Case("tight", (torch.ones(3),))]
    loose = [core.Case("loose", (torch.ones(3),), atol=0.05)]
    with pytest.raises(exercises.ExerciseFailed, match="on tight: the result differs"):
        core.check("double", close, reference, tight)
    assert core.check("double", close, reference, loose) is None
    assert capsys.readouterr().out == "✓ double: all 1 checks pass.\n"

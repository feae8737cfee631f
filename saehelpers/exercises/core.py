"""The checking engine every exercise shares: run the learner's function on small cases, compare with
the reference, and when they differ, name the mistake if it is a known one.

A checker never shows the reference's code. It may show the value the reference gives on a small case,
because that is what a learner compares against when debugging.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class ExerciseFailed(AssertionError):
    """The learner's function gave a wrong answer; the message says what and hints at why."""


@dataclass
class Case:
    """One call: the arguments, how to name the case in a message, and optionally its own tolerance
    (e.g. looser for a bfloat16 SAE, where rounding grows with the size of the activations)."""

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    rtol: float | None = None
    atol: float | None = None


@dataclass
class Mistake:
    """A known wrong version: if the learner's output matches `fn`'s, `message` says what went wrong."""

    name: str
    fn: Callable
    message: str


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value  # models, SAEs and numbers are passed as they are


def _same_inputs(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_inputs(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_inputs(a[k], b[k]) for k in a)
    return True


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex


def _kind(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def difference(got, want, rtol: float = 1e-4, atol: float = 1e-5, what: str = "the result") -> str | None:
    """None when `got` matches `want`; else what differs, in plain words."""
    if isinstance(want, bool):
        if got is not want and got != want:
            return f"{what} is {got!r}; expected {want!r}."
        return None
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        if not _is_number(got):
            return f"{what} is {_kind(got)}; expected a single number (a Python float or int)."
        g = float(got)
        if math.isnan(g):
            return f"{what} is nan; expected {_fmt(want)}. Look for a division by zero or a log of 0."
        if not math.isclose(g, want, rel_tol=rtol, abs_tol=atol):
            return f"{what} is {_fmt(g)}; expected {_fmt(want)}."
        return None
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{what} is {_kind(got)}; expected a tensor of shape {tuple(want.shape)}."
        if got.shape != want.shape:
            return f"{what} has shape {tuple(got.shape)}; expected {tuple(want.shape)}."
        if want.dtype == torch.bool or not want.is_floating_point():
            if not torch.equal(got.to(want.dtype), want):
                bad = int((got.to(want.dtype) != want).sum())
                return f"{what} differs from the expected values at {bad} of {want.numel()} entries."
            return None
        g, w = got.detach().double().cpu(), want.detach().double().cpu()
        if not torch.isfinite(g).all():
            return f"{what} contains nan or inf; expected finite values."
        if not torch.allclose(g, w, rtol=rtol, atol=atol):
            err = (g - w).abs()
            at = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
            return (
                f"{what} differs from the expected values: the largest difference is {_fmt(err.max().item())}, "
                f"at index {at} (got {_fmt(g[at].item())}, expected {_fmt(w[at].item())})."
            )
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{what} is {_kind(got)}; expected a dict with keys {sorted(want)}."
        if set(got) != set(want):
            return f"{what} has keys {sorted(got)}; expected {sorted(want)}."
        for k in want:
            problem = difference(got[k], want[k], rtol, atol, f"{what}[{k!r}]")
            if problem:
                return problem
        return None
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{what} is {_kind(got)}; expected a {type(want).__name__} of {len(want)} items."
        if len(got) != len(want):
            return f"{what} has {len(got)} items; expected {len(want)}."
        for i, (g, w) in enumerate(zip(got, want)):
            problem = difference(g, w, rtol, atol, f"item {i} of {what}")
            if problem:
                return problem
        return None
    if got != want:
        return f"{what} is {got!r}; expected {want!r}."
    return None


def call(fn: Callable, case: Case, name: str):
    """Call the learner's function on a copy of the case's inputs. NotImplementedError passes through
    (an exercise not attempted yet); any other exception becomes ExerciseFailed naming the case."""
    args, kwargs = _clone(case.args), _clone(case.kwargs)
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as e:
        raise ExerciseFailed(f"{name} raised {type(e).__name__} on {case.label}: {e}") from e
    if not (_same_inputs(args, case.args) and _same_inputs(kwargs, case.kwargs)):
        raise ExerciseFailed(
            f"{name} changed its input in place on {case.label}. Hint: build a new tensor "
            "(x + y, torch.where, .clone()) instead of writing into an argument (x += ..., x[...] = ...)."
        )
    return out


def check(
    name: str,
    fn: Callable,
    reference: Callable,
    cases: list[Case],
    mistakes: tuple[Mistake, ...] = (),
    rtol: float = 1e-4,
    atol: float = 1e-5,
    quiet: bool = False,
) -> int:
    """Run `fn` on every case against `reference`. Raises ExerciseFailed on the first wrong case, naming
    the mistake when `fn`'s output matches a known wrong version's; prints a line and returns the
    number of cases when all pass. A case's own rtol / atol, when set, replace the ones given here."""
    if not callable(fn):
        raise ExerciseFailed(f"Pass your function itself, e.g. check(my_fn), not {_kind(fn)}.")
    default = (rtol, atol)
    for case in cases:
        rtol = default[0] if case.rtol is None else case.rtol
        atol = default[1] if case.atol is None else case.atol
        got = call(fn, case, name)
        want = reference(*_clone(case.args), **_clone(case.kwargs))
        problem = difference(got, want, rtol, atol)
        if problem is None:
            continue
        for m in mistakes:
            wrong = m.fn(*_clone(case.args), **_clone(case.kwargs))
            if difference(wrong, want, rtol, atol) is not None and difference(got, wrong, rtol, atol) is None:
                raise ExerciseFailed(f"{name}, on {case.label}: {m.message}")
        raise ExerciseFailed(f"{name}, on {case.label}: {problem}")
    if not quiet:
        print(f"✓ {name}: all {len(cases)} checks pass.")
    return len(cases)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass
class Exercise:
    """One exercise, for the tests: its checker, a right answer, and the wrong versions it must name.

    `check(fn, *context)` where context is what `needs` lists, from the notebook: "model" (the loaded
    language model), "sae" (an SAE of the release).
    """

    check: Callable
    solution: Callable
    mistakes: tuple[Mistake, ...] = ()
    needs: tuple[str, ...] = ()

"""The checking engine every exercise shares: run the learner's function on small cases, compare with
the reference, and when they differ, name the mistake if it is a known one.

A checker never shows the reference's code. It may show the value the reference gives on a small case,
because that is what a learner compares against when debugging.

It guards what it hands over: the reference is computed before the learner's call; each call runs under a
time limit; and a call that changes its inputs, the SAE's or the model's parameters, any hook on them (or
torch's global hooks), the default dtype, grad mode or a module's training flag is named, and the change
undone, so one wrong answer cannot damage the cells after it. A known mistake is named only when the
learner's output matches it on every case.
"""

from __future__ import annotations

import ctypes
import math
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.modules.module as torch_module

# Seconds a learner's function may take on one case (or 20 times what the reference took, if more).
TIME_LIMIT = 20.0


class ExerciseFailed(AssertionError):
    """The learner's function gave a wrong answer; the message says what and hints at why.

    In IPython and Jupyter it shows as its one message, without a traceback through the checker."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m✗ {self}\x1b[0m"]


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
    """A Python, numpy or one-element torch number (numpy registers its scalars as numbers.Real)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if isinstance(value, numbers.Real):
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
            hint = " Wrap it in float()." if getattr(got, "size", 0) == 1 else ""
            return f"{what} is {_kind(got)}; expected a single number (a Python float or int).{hint}"
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
            differs = got.to(want.dtype).cpu() != want.cpu()
            if differs.any():
                at = tuple(int(i) for i in differs.nonzero()[0])
                shown = at[0] if len(at) == 1 else at
                return (
                    f"{what} differs from the expected values at {int(differs.sum())} of {want.numel()} "
                    f"entries; the first is index {shown}: got {got[at].item()!r}, expected {want[at].item()!r}."
                )
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


class _TimeUp(BaseException):
    """Raised in the checker's thread when a learner's function runs past its time limit. A BaseException,
    so that a learner's `except Exception:` inside a loop does not swallow it."""


def _limited(fn: Callable, args, kwargs, seconds: float):
    """fn(*args, **kwargs), stopped with _TimeUp after `seconds`.

    A timer thread raises _TimeUp in this thread (PyThreadState_SetAsyncExc): it works in any thread and
    on every OS (signal.alarm is Unix-only and main-thread-only), and stops a Python loop at its next
    bytecode; a single long call into C (one huge matmul, time.sleep) ends before it takes effect."""
    target, lock, done = threading.get_ident(), threading.Lock(), []

    def fire():
        with lock:
            if not done:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(_TimeUp))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        return fn(*args, **kwargs)
    finally:
        with lock:
            done.append(True)
        timer.cancel()


# Every kind of hook a module holds, and the flags that go with some of them; and torch's global ones.
_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)
_GLOBAL_HOOKS = tuple(
    name
    for name in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
        "_global_forward_hooks_with_kwargs",
        "_global_forward_hooks_always_called",
        "_global_module_registration_hooks",
        "_global_parameter_registration_hooks",
        "_global_buffer_registration_hooks",
    )
    if isinstance(getattr(torch_module, name, None), dict)
)
_FLAGS = ("_with_kwargs", "_always_called")
_LIBRARIES = ("transformers", "accelerate", "torch", "peft", "sae_lens")


def _from_library(fn) -> bool:
    return (getattr(fn, "__module__", None) or "").split(".")[0] in _LIBRARIES


# A module up to this many numbers (the mini SAEs, the toy ones) is copied, to compare and put back;
# a larger one by its tensors' identity and version counters (which every in-place op bumps), and for
# an SAE (the real release's) also by checksums.
_CLONE_UP_TO = 20_000_000


def _modules(case: Case) -> list[tuple[str, torch.nn.Module]]:
    """The models and SAEs a case hands the learner, named as a learner would ("sae", "model")."""
    out = []
    for value in (*case.args, *case.kwargs.values()):
        if isinstance(value, torch.nn.Module) and all(value is not m for _, m in out):
            out.append(("sae" if hasattr(getattr(value, "cfg", None), "d_sae") else "model", value))
    return out


def _hook_tables(modules) -> dict[str, dict]:
    tables = {f"torch.nn.modules.module.{name}": getattr(torch_module, name) for name in _GLOBAL_HOOKS}
    for label, top in modules:
        for sub, module in top.named_modules():
            for attr in _HOOKS:
                table = getattr(module, attr, None)
                if isinstance(table, dict):
                    tables[f"{label}{'.' + sub if sub else ''}.{attr}"] = table
    return tables


class _Guard:
    """What a learner's function may not change, taken before the call; `changes()` says what it did
    change and puts it back: the SAE's and the model's parameters and buffers, their hooks of every kind
    (those the learner added and those it removed, e.g. transformers' own), torch's global hooks, the
    default dtype, grad mode and each module's training flag."""

    def __init__(self, modules):
        self.modules = modules
        self.dtype, self.grad = torch.get_default_dtype(), torch.is_grad_enabled()
        self.training = [(label, m, m.training) for label, m in modules]
        self.tables = {name: (table, dict(table)) for name, table in _hook_tables(modules).items()}
        self.tensors = []
        for label, m in modules:
            named = (*m.named_parameters(), *m.named_buffers())
            small = sum(tensor.numel() for _, tensor in named) <= _CLONE_UP_TO
            for name, tensor in named:
                if small:
                    copy = tensor.detach().clone()
                elif label == "sae":  # a checksum catches writes through .data, which keep _version
                    copy = tensor.detach().sum(dtype=torch.float64)
                else:  # a language model: summing a billion numbers per call is too slow; _version suffices
                    copy = None
                self.tensors.append((label, m, name, tensor, tensor._version, tensor.data_ptr(), small, copy))

    def changes(self) -> list[str]:
        said = []
        if torch.get_default_dtype() != self.dtype:
            said.append(f"set torch's default dtype to {torch.get_default_dtype()} (it was {self.dtype})")
            torch.set_default_dtype(self.dtype)
        if torch.is_grad_enabled() != self.grad:
            said.append(
                f"turned gradients {'on' if self.grad is False else 'off'} for everything after it "
                "(torch.set_grad_enabled); use `with torch.no_grad():` around your own code instead"
            )
            torch.set_grad_enabled(self.grad)
        for label, m, was in self.training:
            if m.training != was:
                said.append(
                    f"switched the {label} to {'training' if m.training else 'eval'} mode "
                    f"({label}.{'train' if m.training else 'eval'}())"
                )
                m.train(was)
        learner = set()  # the ids of the hooks the learner added (hook ids are unique across torch)
        for name, (table, before) in self.tables.items():
            if name.endswith(_FLAGS):
                continue
            # Libraries may add hooks of their own on first use (transformers, for output_hidden_states).
            added = [k for k in table if k not in before and not _from_library(table[k])]
            removed = [k for k in before if k not in table]
            for k in added:
                del table[k]
            for k in removed:
                table[k] = before[k]
            learner.update(added)
            if added and "_global_" in name:
                said.append(
                    f"left {len(added)} global hook(s) in {name} (a handle's .remove() takes one off)"
                )
            elif added:
                said.append(f"left {len(added)} hook(s) in {name}; keep each handle and call handle.remove()")
            if removed:
                said.append(
                    f"removed {len(removed)} hook(s) it did not add, from {name} (e.g. transformers' own, "
                    "which output_hidden_states needs): remove only your own, with handle.remove(), never "
                    "by clearing a hook dict"
                )
        for name, (table, before) in self.tables.items():
            if name.endswith(_FLAGS):
                for k in [k for k in table if k in learner]:
                    del table[k]
                table.update({k: v for k, v in before.items() if k not in table})
        for label, m, name, tensor, version, ptr, small, copy in self.tensors:
            owner, _, attr = name.rpartition(".")
            holder = m.get_submodule(owner) if owner else m
            now = getattr(holder, attr, None)
            replaced = now is not tensor
            if small:
                changed = replaced or tensor._version != version or not torch.equal(tensor.detach(), copy)
            else:
                changed = replaced or tensor._version != version or tensor.data_ptr() != ptr
                if copy is not None:
                    changed = changed or not torch.equal(tensor.detach().sum(dtype=torch.float64), copy)
            if not changed:
                continue
            if replaced:
                setattr(holder, attr, tensor)  # the original object, which later cells hold too
            if small:
                with torch.no_grad():
                    tensor.copy_(copy)
                said.append(f"changed {label}.{name} (the checker put it back)")
            else:
                said.append(
                    f"changed {label}.{name}, too large for the checker to keep a copy: run the cell that "
                    f"loads the {label} again"
                )
        return said


def call(fn: Callable, case: Case, name: str, seconds: float | None = None):
    """Call the learner's function on a copy of the case's inputs, with a time limit. NotImplementedError
    passes through (an exercise not attempted yet); any other exception becomes ExerciseFailed naming
    the case, and so does any change to its inputs, to the models and SAEs it was handed, or to torch's
    global state (each is put back first)."""
    args, kwargs = _clone(case.args), _clone(case.kwargs)
    seconds = TIME_LIMIT if seconds is None else seconds
    guard = _Guard(_modules(case))
    try:
        out = _limited(fn, args, kwargs, seconds)
    except NotImplementedError:
        guard.changes()
        raise
    except _TimeUp:
        guard.changes()
        raise ExerciseFailed(
            f"{name} did not return within {seconds:g} s on {case.label}; the checker stopped it. Look for "
            "a loop that never ends (a while loop whose condition never turns false), or a much larger "
            "computation than the exercise needs."
        ) from None
    except Exception as e:
        guard.changes()
        raise ExerciseFailed(f"{name} raised {type(e).__name__} on {case.label}: {e}") from e
    changed = guard.changes()
    if changed:
        raise ExerciseFailed(
            f"{name}, on {case.label}: your function " + "; and ".join(changed) + ". A function handed a "
            "model or an SAE must leave it as it found it: later cells use it. Work on copies "
            "(w = sae.W_dec / norm, not sae.W_dec /= norm)."
        )
    if not (_same_inputs(args, case.args) and _same_inputs(kwargs, case.kwargs)):
        raise ExerciseFailed(
            f"{name} changed its input in place on {case.label}. Hint: build a new tensor "
            "(x + y, torch.where, .clone()) instead of writing into an argument (x += ..., x[...] = ...)."
        )
    return out


def _matches(fn: Callable, got, case: Case, rtol: float, atol: float) -> bool:
    try:
        return difference(got, fn(*_clone(case.args), **_clone(case.kwargs)), rtol, atol) is None
    except Exception:
        return False


def check(
    name: str,
    fn: Callable,
    reference: Callable,
    cases: list[Case],
    mistakes: tuple[Mistake, ...] = (),
    rtol: float = 1e-4,
    atol: float = 1e-5,
    quiet: bool = False,
) -> None:
    """Run `fn` on every case against `reference`, whose answer is computed first (so a function that
    changes what it is handed cannot change the answer too). Raises ExerciseFailed at the first wrong
    case; it names a known mistake only when `fn` gives that mistake's output on every case. Prints a
    line when all pass and returns nothing. A case's own rtol / atol, when set, replace the ones given."""
    if not callable(fn):
        raise ExerciseFailed(f"Pass your function itself, e.g. check(my_fn), not {_kind(fn)}.")
    runs, first = [], None
    for case in cases:
        rtol_, atol_ = (rtol if case.rtol is None else case.rtol), (atol if case.atol is None else case.atol)
        start = time.perf_counter()
        want = reference(*_clone(case.args), **_clone(case.kwargs))
        took = time.perf_counter() - start
        got = call(fn, case, name, max(TIME_LIMIT, 20 * took))
        runs.append((case, got, rtol_, atol_))
        problem = difference(got, want, rtol_, atol_)
        if problem and first is None:
            first = (case, problem)
    if first is None:
        if not quiet:
            print(f"✓ {name}: all {len(cases)} checks pass.")
        return None
    case, problem = first
    for m in mistakes:
        if all(_matches(m.fn, got, c, r, a) for c, got, r, a in runs):
            raise ExerciseFailed(f"{name}, on {case.label}: {m.message}")
    raise ExerciseFailed(f"{name}, on {case.label}: {problem}")


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

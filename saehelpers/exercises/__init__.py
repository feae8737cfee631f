"""Exercises: the checkers each lesson's exercises call.

In a lesson, you write the heart of an idea as a small function, then hand it to its checker:

    def explained_variance(x, x_hat, about="mean"):
        ...
    exercises.check_explained_variance(explained_variance)

The checker runs your function on small cases against the reference, prints one line when all pass,
and otherwise raises `ExerciseFailed` saying what differs and, for the common mistakes, which one it
is (in Jupyter, as one message without a traceback). It never shows the reference's code. An exercise
not attempted yet says so in one line and the lesson goes on with saehelpers' own version, so Run All
runs every other cell.
"""

import functools
import importlib
import pkgutil

from .core import ExerciseFailed


def _skippable(check, solution, number: str):
    """The checker, letting an exercise not attempted yet (its function still raises NotImplementedError)
    say so in one line instead of stopping Run All; the learner's name for the function then refers to
    saehelpers' own version, so the cells below it run."""

    @functools.wraps(check)
    def wrapped(fn, *args, **kwargs):
        try:
            return check(fn, *args, **kwargs)
        except NotImplementedError:
            name = getattr(fn, "__name__", "your function")
            namespace = getattr(fn, "__globals__", {})
            if namespace.get(name) is fn:
                namespace[name] = solution
            print(
                f"Exercise {number} not attempted yet ({name} raises NotImplementedError): the cells below use "
                "saehelpers' own version. Write yours and run this cell again when you are ready."
            )
            return None

    return wrapped


# Every exercise, lesson by lesson ("00": [...]), for the tests (tests/test_exercises.py); each
# lesson's checkers are exported here by name, numbered as the lessons number them (00.1, 00.2, ...).
LESSONS = {}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("lesson"):
        _module = importlib.import_module(f".{_info.name}", __name__)
        _lesson = _info.name.removeprefix("lesson")
        LESSONS[_lesson] = _module.EXERCISES
        for _n, _exercise in enumerate(_module.EXERCISES, 1):
            _exercise.check = _skippable(_exercise.check, _exercise.solution, f"{_lesson}.{_n}")
            globals()[_exercise.check.__name__] = _exercise.check

__all__ = ["LESSONS", "ExerciseFailed", *(e.check.__name__ for ex in LESSONS.values() for e in ex)]

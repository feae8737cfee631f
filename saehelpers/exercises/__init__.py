"""Exercises: the checkers each lesson's exercises call.

In a lesson, you write the heart of an idea as a small function, then hand it to its checker:

    def explained_variance(x, x_hat, about="mean"):
        ...
    exercises.check_explained_variance(explained_variance)

The checker runs your function on small cases against the reference, prints one line when all pass,
and otherwise raises `ExerciseFailed` saying what differs and, for the common mistakes, which one it
is. It never shows the reference's code. Cells after an exercise use saehelpers' own functions, so
skipping an exercise never blocks the rest of the lesson.
"""

import importlib
import pkgutil

from .core import ExerciseFailed

# Every exercise, lesson by lesson ("00": [...]), for the tests (tests/test_exercises.py); each
# lesson's checkers are exported here by name.
LESSONS = {}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("lesson"):
        _module = importlib.import_module(f".{_info.name}", __name__)
        LESSONS[_info.name.removeprefix("lesson")] = _module.EXERCISES
        for _exercise in _module.EXERCISES:
            globals()[_exercise.check.__name__] = _exercise.check

__all__ = ["LESSONS", "ExerciseFailed", *(e.check.__name__ for ex in LESSONS.values() for e in ex)]

"""pytest plugin around nbmake: `pytest --nbmake notebooks` runs each lesson once, as a learner would.

nbmake collects and executes the notebooks; this wraps each of its items so that a lesson also fails on
anything written to stderr (naming the cell), runs on the mini preset, and leaves its executed copy in
.cache/executed/ with `saehelpers_run` metadata and its kernel's variables for the claim tests
(tests/claims.py). It lives at the root because pytest applies a conftest's hooks only to items under
its folder, and the lessons are in notebooks/.
"""

import importlib.util
import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("saehelpers_claims", ROOT / "tests" / "claims.py")
claims = importlib.util.module_from_spec(_spec)
sys.modules["saehelpers_claims"] = claims  # dataclasses look their module up there
_spec.loader.exec_module(claims)


def pytest_configure(config):
    # One id per test session: tests/claims.py reuses a run only when this session wrote it.
    os.environ.setdefault(claims.SESSION, uuid.uuid4().hex)


def _runtest(item):
    from nbmake.pytest_items import NotebookFailedException

    option = item.config.option
    given = any(a.startswith("--nbmake-timeout") for a in item.config.invocation_params.args)
    source = Path(item.filename)
    if not source.is_absolute():
        source = Path(item.config.rootdir) / source
    result = claims.with_mini(
        lambda: claims.execute(
            source,
            option.nbmake_timeout if given else claims.TIMEOUT,
            kernel=option.nbmake_kernel,
            session=os.environ[claims.SESSION],
        )
    )
    if result.error is not None:
        raise NotebookFailedException(result)  # nbmake's own report: the summary names the cell


def pytest_collection_modifyitems(items):
    for item in items:
        if getattr(item, "nbmake", False):
            item.runtest = lambda item=item: _runtest(item)
            item.add_marker(pytest.mark.heavy)  # the fast lane runs no notebook

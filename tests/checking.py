"""How the exercise tests read a checker's verdict: a passing checker prints its tick and returns nothing."""

import contextlib
import io
import re


def passed(check, *args) -> int:
    """The number of cases a check passed, read from its tick line; fails when it did not pass or returned a value."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = check(*args)
    assert result is None, f"a checker returns nothing (a notebook would show Out[..]: {result!r})"
    found = re.search(r"^✓ .*: all (\d+) checks pass", out.getvalue(), re.M)
    assert found, f"no tick line in {out.getvalue()!r}"
    return int(found[1])

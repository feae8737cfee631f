"""Write the learner versions of the lessons: every solution region becomes "your code here".

The committed notebooks in notebooks/ are the solutions. In an exercise cell (tagged "exercise") the
lines from `### BEGIN SOLUTION` to `### END SOLUTION` (nbgrader's markers) are replaced by

    # YOUR CODE HERE
    raise NotImplementedError()

at the same indentation, and the result goes to exercises/ under the same name, without outputs.

    python scripts/make_exercises.py           # write exercises/*.ipynb
    python scripts/make_exercises.py --check   # exit 1 if a committed learner notebook is out of step
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXERCISES = ROOT / "exercises"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
TAG = "exercise"
NOTE = (
    "**This is the exercise version.** Each cell marked *Exercise* asks you to write a small function, "
    "then checks it (`exercises.check_...`); a failed check says what is wrong and how to fix it. *Run All* "
    "runs the whole notebook: an exercise you have not written yet says so in one line, and the cells below "
    "it use saehelpers' own version, so you can skip one and go on. The solutions are in "
    "[`notebooks/{name}`](../notebooks/{name})."
)


def strip_solutions(source: str, where: str) -> str:
    """The source with each solution region replaced by a NotImplementedError stub."""
    out, inside, indent = [], False, ""
    for n, line in enumerate(source.split("\n"), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {n}: {BEGIN} inside another solution region.")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}, line {n}: {END} without a {BEGIN} before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} without an {END}.")
    return "\n".join(out)


def learner_version(nb: dict, name: str) -> dict:
    """The learner notebook for solution notebook `nb` (a dict as json loads it)."""
    nb = copy.deepcopy(nb)
    n_exercises = 0
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        tagged = TAG in cell.get("metadata", {}).get("tags", [])
        if BEGIN in source or END in source:
            if cell["cell_type"] != "code" or not tagged:
                raise ValueError(f"{name}, cell {i}: solution markers in a cell not tagged {TAG!r}.")
            source = strip_solutions(source, f"{name}, cell {i}")
            n_exercises += 1
        elif tagged:
            raise ValueError(f"{name}, cell {i}: tagged {TAG!r} but has no {BEGIN} ... {END} region.")
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell["source"] = source.splitlines(keepends=True)
    if not n_exercises:
        raise ValueError(f"{name} has no exercise cells.")
    title = nb["cells"][0]
    title["source"] = ("".join(title["source"]).rstrip("\n") + "\n\n" + NOTE.format(name=name)).splitlines(
        keepends=True
    )
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def solutions() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def expected(paths=None) -> dict[Path, str]:
    """Each learner notebook's path and the text it should have (default: for every lesson)."""
    return {
        EXERCISES / p.name: dumps(learner_version(json.loads(p.read_text()), p.name))
        for p in (paths or solutions())
    }


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="solution notebooks (default: all lessons)")
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 if out of step"
    )
    args = parser.parse_args(argv)
    want = expected(args.paths)
    if args.check:
        stale = [p for p, text in want.items() if not p.exists() or p.read_text() != text]
        extra = [] if args.paths else sorted(set(EXERCISES.glob("*.ipynb")) - set(want))
        for p in stale:
            print(f"out of step: {_show(p)}", file=sys.stderr)
        for p in extra:
            print(f"no solution notebook for: {_show(p)}", file=sys.stderr)
        if stale or extra:
            print("run: python scripts/make_exercises.py", file=sys.stderr)
            return 1
        print(f"{len(want)} learner notebooks in step")
        return 0
    EXERCISES.mkdir(exist_ok=True)
    for p, text in want.items():
        p.write_text(text)
        print(f"wrote {_show(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

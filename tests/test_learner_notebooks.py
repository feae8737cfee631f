"""The learner notebooks in exercises/: generated from the solutions, in step, and when run top to
bottom (Run All) every cell runs: each exercise not written yet says so in one line and the cells below
it use saehelpers' own version."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make = _load("make_exercises")
runner = _load("run_notebooks")
LEARNER = sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))


def test_a_learner_notebook_for_every_lesson_in_step_with_its_solution():
    assert [p.name for p in LEARNER] == [p.name for p in make.solutions()]
    assert make.main(["--check"]) == 0


def test_check_spots_a_stale_learner_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(make, "EXERCISES", tmp_path)
    assert make.main([]) == 0
    stale = tmp_path / LEARNER[0].name
    stale.write_text(stale.read_text().replace("YOUR CODE HERE", "my code"))
    (tmp_path / "99_extra.ipynb").write_text("{}")
    assert make.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"out of step: {stale}" in err
    assert "99_extra.ipynb" in err and "python scripts/make_exercises.py" in err


def test_strip_solutions_keeps_indentation_and_the_rest():
    source = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n\n\ncheck(f)"
    assert make.strip_solutions(source, "nb") == (
        "def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\ncheck(f)"
    )


@pytest.mark.parametrize(
    "source,message",
    [
        ("### BEGIN SOLUTION\nx = 1", "without an ### END SOLUTION"),
        ("x = 1\n### END SOLUTION", "line 2: ### END SOLUTION without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: ### BEGIN SOLUTION inside"),
    ],
)
def test_unbalanced_markers_are_named(source, message):
    with pytest.raises(ValueError, match=message):
        make.strip_solutions(source, "nb")


def _nb(cells):
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# title\n"]}, *cells]}


def test_markers_only_in_tagged_code_cells():
    untagged = {
        "cell_type": "code",
        "metadata": {},
        "outputs": [],
        "source": ["### BEGIN SOLUTION\n", "### END SOLUTION"],
    }
    with pytest.raises(ValueError, match="cell 1: solution markers in a cell not tagged 'exercise'"):
        make.learner_version(_nb([untagged]), "x.ipynb")
    empty = {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "outputs": [], "source": ["f()"]}
    with pytest.raises(ValueError, match="cell 1: tagged 'exercise' but has no"):
        make.learner_version(_nb([empty]), "x.ipynb")
    with pytest.raises(ValueError, match="x.ipynb has no exercise cells"):
        make.learner_version(_nb([]), "x.ipynb")


def test_learner_version_clears_outputs_and_says_where_the_solutions_are():
    cell = {"cell_type": "code", "execution_count": 3, "metadata": {"tags": ["exercise"]},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "secret"}],
            "source": ["def f():\n", "    ### BEGIN SOLUTION\n", "    return 42\n", "    ### END SOLUTION\n"]}  # fmt: skip
    nb = make.learner_version(_nb([cell]), "07_x.ipynb")
    out = nb["cells"][1]
    assert out["outputs"] == [] and out["execution_count"] is None and "42" not in "".join(out["source"])
    assert "[`notebooks/07_x.ipynb`](../notebooks/07_x.ipynb)" in "".join(nb["cells"][0]["source"])


def _exercise_cells(path: Path) -> set[int]:
    nb = json.loads(path.read_text())
    return {i for i, c in enumerate(nb["cells"]) if make.TAG in c.get("metadata", {}).get("tags", [])}


@pytest.mark.heavy
@pytest.mark.parametrize("path", LEARNER, ids=lambda p: p.name)
def test_learner_notebook_runs_top_to_bottom_past_its_exercises(path, monkeypatch, tmp_path):
    # The smoke size: the same cells on tiny inputs. What is checked here is that Run All goes on past
    # every unattempted exercise, not the numbers; the lessons run at full size under nbmake.
    monkeypatch.setenv("SAEHELPERS_PRESET", "mini")
    monkeypatch.setenv("SAEHELPERS_SMOKE", "1")
    monkeypatch.setattr(runner, "EXECUTED", tmp_path)
    result = runner.run(path, save=True)
    assert result.ok, result.errors + result.stderr
    nb = json.loads((tmp_path / path.name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)  # every code cell ran
    exercise_cells = sorted(_exercise_cells(path))
    assert len(exercise_cells) >= 2
    lesson = path.name[:2]
    for n, i in enumerate(exercise_cells, 1):
        text = "".join("".join(o.get("text", "")) for o in nb["cells"][i]["outputs"])
        said = [line for line in text.splitlines() if "not attempted yet" in line]
        assert len(said) == 1 and said[0].startswith(f"Exercise {lesson}.{n} not attempted yet ("), text
        assert "saehelpers' own version" in said[0]

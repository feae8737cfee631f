"""`python -m saehelpers doctor --workshop`: the rows a workshop's setup check reads, and its exit code."""

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys

import pytest

from saehelpers import loading
from saehelpers.__main__ import DISK_NEED_GB


def doctor(tmp_path, *args, **env_extra):
    """Run the doctor in a fresh process with its cache in tmp_path/cache; return (exit code, rows, text)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf"), SAEHELPERS_DTYPE="float32")
    env["SAEHELPERS_CACHE"] = str(tmp_path / "cache")
    for key in ("SAEHELPERS_PRESET", "SAEHELPERS_WIDGETS", "SAEHELPERS_MINI_DIR", "HF_TOKEN"):
        env.pop(key, None)
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-m", "saehelpers", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stderr == "" or "Traceback" not in out.stderr, out.stderr
    rows = {line[:24].strip(): line[24:] for line in out.stdout.splitlines()}
    return out.returncode, rows, out.stdout + out.stderr


def convert_fake(tmp_path, dtype="float32"):
    """Mark the mini model as converted in `dtype` in tmp_path/cache, as `mini_model_dir` leaves it."""
    done = tmp_path / "cache" / "models" / f"gemma-3-270m-v{loading.MINI_CACHE_VERSION}" / dtype / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    return done.parent


def front_end_ok() -> bool:
    try:
        return int(md.version("ipywidgets").split(".")[0]) >= 8 and bool(md.version("jupyterlab_widgets"))
    except md.PackageNotFoundError:
        return False


def lab_installed() -> bool:
    try:
        return bool(md.version("jupyterlab"))
    except md.PackageNotFoundError:
        return False


def free_gb(path) -> float:
    return shutil.disk_usage(path).free / 1024**3


def test_plain_doctor_has_no_workshop_rows(tmp_path):
    code, rows, text = doctor(tmp_path)
    assert (
        "verdict" in rows
        and not {"disk", "mini converted", "widgets", "jupyterlab", "workshop"} & rows.keys()
    )
    assert "not yet converted" in rows["mini preset"] and "in float32" in rows["mini preset"]
    assert "mini release" not in rows  # the shipped one: nothing to say


def test_doctor_names_a_rebuilt_mini_release_under_trial(tmp_path):
    from saehelpers.release import mini_dir

    trial = tmp_path / "trial"
    shutil.copytree(mini_dir(), trial)
    code, rows, text = doctor(tmp_path, SAEHELPERS_MINI_DIR=str(trial))
    assert rows["mini release"] == f"{trial} (from $SAEHELPERS_MINI_DIR)"
    layers = json.loads((trial / "release.json").read_text())["layers"]
    assert f"SAEs shipped for layers {layers}" in rows["mini preset"]


def test_workshop_fails_when_the_model_is_not_converted_and_says_how_to_convert_it(tmp_path):
    code, rows, text = doctor(tmp_path, "--workshop", HF_TOKEN="hf_do_not_print_me")
    assert "hf_do_not_print_me" not in text and rows["HF token"] == "set"
    model_dir = tmp_path / "cache" / "models" / f"gemma-3-270m-v{loading.MINI_CACHE_VERSION}" / "float32"
    assert rows["mini converted"].startswith(f"FAIL: no float32 copy at {model_dir} ")
    assert rows["mini converted"].endswith(
        """Fix: python -c "from saehelpers.loading import mini_model_dir; mini_model_dir('float32')\""""
    )
    need = DISK_NEED_GB["not converted"]  # before the conversion: room for the GGUF file and two copies
    assert f"needs {need:g} GB" in rows["disk"]
    assert rows["disk"].startswith("ok: " if free_gb(tmp_path) >= need else "FAIL: ")
    assert rows["workshop"].startswith("NOT READY: fix ") and "mini converted" in rows["workshop"]
    assert code == 1


@pytest.mark.skipif(
    not (front_end_ok() and lab_installed()), reason="needs ipywidgets 8, jupyterlab_widgets, jupyterlab"
)
def test_workshop_passes_when_converted_with_room_and_a_widget_front_end(tmp_path):
    model_dir = convert_fake(tmp_path)
    code, rows, text = doctor(tmp_path, "--workshop", "--min-free-gb", "0.001")
    assert rows["mini converted"] == f"ok: float32 copy at {model_dir}", text
    assert rows["mini preset"].startswith("model package installed; converted in float32")
    free = float(rows["disk"].removeprefix("ok: ").split(" GB free at ")[0])
    assert free == pytest.approx(free_gb(tmp_path), abs=0.5)
    assert rows["disk"].endswith(f"free at {tmp_path / 'cache'} (the cache's disk; needs 0.001 GB)")
    assert (
        rows["widgets"]
        == f"ok: ipywidgets {md.version('ipywidgets')}, jupyterlab_widgets {md.version('jupyterlab_widgets')}"
    )
    assert rows["jupyterlab"].startswith(f"ok: {md.version('jupyterlab')}")
    assert rows["workshop"] == "OK: ready for the workshop."
    assert code == 0
    # One verdict, the last row: no "verdict OK" above a workshop verdict.
    assert "verdict" not in rows and list(rows)[-1] == "workshop"


def test_workshop_fails_on_a_full_disk_and_ipywidgets_7(tmp_path):
    convert_fake(tmp_path)
    # A dist-info earlier on the path than the real one: importlib.metadata reports ipywidgets 7.7.1 (Colab's).
    fake = tmp_path / "site" / "ipywidgets-7.7.1.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: ipywidgets\nVersion: 7.7.1\n")
    code, rows, text = doctor(
        tmp_path,
        "--workshop",
        "--min-free-gb",
        "1e9",
        PYTHONPATH=str(tmp_path / "site"),
        SAEHELPERS_WIDGETS="0",
    )
    assert rows["disk"].startswith("FAIL: ") and rows["disk"].endswith(
        "needs 1e+09 GB. Fix: free space there, or set SAEHELPERS_CACHE to a folder on a disk with room."
    )
    assert rows["widgets"].startswith("FAIL: ipywidgets 7.7.1, jupyterlab_widgets ")
    assert rows["widgets"].endswith("Fix: pip install 'ipywidgets>=8.1' jupyterlab_widgets")
    assert rows["mini converted"].startswith("ok: ")
    assert rows["workshop"].startswith("NOT READY: fix disk, widgets")
    assert code == 1
    assert "verdict" not in rows and list(rows)[-1] == "workshop" and "OK" not in text.split("workshop")[-1]


@pytest.mark.skipif(not front_end_ok(), reason="needs ipywidgets 8 and jupyterlab_widgets")
def test_widgets_switched_off_is_a_note_not_a_failure(tmp_path):
    convert_fake(tmp_path)
    code, rows, text = doctor(tmp_path, "--workshop", "--min-free-gb", "0.001", SAEHELPERS_WIDGETS="0")
    assert rows["widgets"].startswith("ok: ") and rows["widgets"].endswith(
        "(but SAEHELPERS_WIDGETS=0: explorers show static HTML)"
    )
    assert "widgets" not in rows["workshop"]


def test_doctor_says_which_dtype_and_why(tmp_path):
    _, rows, text = doctor(tmp_path)  # SAEHELPERS_DTYPE=float32 (the helper's default)
    assert rows["model dtype"] == "float32: $SAEHELPERS_DTYPE=float32", text
    _, rows, text = doctor(tmp_path, SAEHELPERS_LOW_MEMORY="1")
    line = rows["model dtype"]
    assert line.startswith("float32, embedding in bfloat16: $SAEHELPERS_DTYPE=float32"), text
    assert "$SAEHELPERS_LOW_MEMORY keeps the embedding in bfloat16" in line
    # Low memory changes nothing in bfloat16.
    _, rows, text = doctor(tmp_path, SAEHELPERS_DTYPE="bfloat16", SAEHELPERS_LOW_MEMORY="1")
    assert rows["model dtype"] == "bfloat16: $SAEHELPERS_DTYPE=bfloat16", text

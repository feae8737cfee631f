"""WORKSHOP.md: the room's install command works against `python -m http.server` as written, and the
3-hour agenda adds up, with its set-up slot and buffer."""

import re
import shlex
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "WORKSHOP.md").read_text()


def _wheel(folder: Path, name: str = "roomcheck", version: str = "1.0") -> None:
    """A minimal pure-Python wheel, standing in for the wheelhouse's 196."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "OK = True\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            z.writestr(path, text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_rooms_install_command_works_against_http_server(tmp_path):
    serve = next(line for line in GUIDE.splitlines() if line.strip().startswith("python -m http.server"))
    install = next(line for line in GUIDE.splitlines() if "--find-links http://INSTRUCTOR-IP" in line)
    (tmp_path / "wheelhouse").mkdir()
    _wheel(tmp_path / "wheelhouse")
    port = _free_port()
    server_args = shlex.split(serve.split("#")[0])[1:]  # python -m http.server 8000
    assert server_args[:3] == ["-m", "http.server", "8000"]
    server = subprocess.Popen(
        [sys.executable, *server_args[:2], str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        args = shlex.split(
            install.replace("INSTRUCTOR-IP:8000", f"127.0.0.1:{port}").replace("INSTRUCTOR-IP", "127.0.0.1")
        )
        assert args[:2] == ["pip", "install"] and args[-2:] == ["torch", "saehelpers[mini,lab]"]
        cmd = [sys.executable, "-m", *args[:-2], "roomcheck", "--target", str(tmp_path / "site"), "-q"]
        env = {"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        for _ in range(50):  # the server may take a moment to listen
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
            if done.returncode == 0 or "Connection refused" not in done.stderr + done.stdout:
                break
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "site" / "roomcheck" / "__init__.py").exists()
    finally:
        server.terminate()
        server.wait(timeout=10)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def test_the_three_hour_agenda_adds_up_with_its_setup_slot_and_buffer():
    section = GUIDE.split("## Agenda: 3 hours")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (\d:\d\d)-(\d:\d\d) \| ([^|]+) \|", section, re.M)
    spans = [(_minutes(a), _minutes(b), what) for a, b, what in rows]
    assert spans[0][0] == 0 and spans[-1][1] == 180
    assert all(end == nxt for (_, end, _), (nxt, _, _) in zip(spans, spans[1:])), "gaps or overlaps"
    setup = spans[0]
    assert "doctor --workshop" in setup[2] and setup[1] - setup[0] >= 20
    buffers = [end - start for start, end, what in spans if what.startswith("Buffer")]
    assert buffers and buffers[0] >= 10

"""JupyterLab in a real browser: start a server, drive Chromium with Playwright, read what a learner sees.

Used by tests/test_browser.py and scripts/screenshots.py. Everything here stops what it starts: `Lab.stop`
ends the server's process group and every kernel it spawned (kernels run in sessions of their own).

    lab = start_lab(copy_notebooks(["notebooks/02_exploring_features.ipynb"], tmp), env={...})
    browser = launch_browser(playwright)
    page = open_notebook(browser.new_page(), lab, "02_exploring_features.ipynb")
    run_all(page)
    ...
    lab.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browsers cannot be downloaded here
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
WIDGET_VIEW = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.widget-view+json"]'

# JupyterLab settings for a test run: no news or update pop-up over the notebook, and every cell attached
# to the DOM (the default windowing skips rendering cells outside the viewport).
SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


@dataclass
class Lab:
    """A running `jupyter lab`: its process, address, token and the folder with its log and settings."""

    proc: subprocess.Popen
    port: int
    token: str
    root: Path  # the notebooks it serves
    workdir: Path  # log, config, runtime, data (kernel specs), settings
    stopped: bool = field(default=False)

    @property
    def log(self) -> Path:
        return self.workdir / "lab.log"

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel of this server (frees a notebook's memory and CPU before the next one)."""
        for k in self.api("kernels"):
            self.api(f"kernels/{k['id']}", method="DELETE", timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        """End the server's process group and every process it started (kernels too); safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)  # start_lab gave the server a session (and group) of its own
            except ProcessLookupError:
                pass
            for p in family:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
            _, alive = psutil.wait_procs(family, timeout=grace)
            if not alive:
                break
        if self.proc.poll() is None:
            self.proc.wait(5)


def add_kernel(workdir: Path, name: str, display_name: str, env: dict[str, str]) -> str:
    """A kernel spec in the server's data folder: this venv's Python with extra environment variables."""
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "env": env,
    }
    folder = Path(workdir) / "data" / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return name


def copy_notebooks(paths, dest: Path, kernels: dict[str, str] | None = None) -> Path:
    """Copy notebooks into `dest` (the browser saves into the copies, never into notebooks/).

    kernels maps a copy's new file name to a kernel spec name: that notebook is copied once more under the
    new name, set to open with that kernel (the source is the path whose name the new name starts with).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(
                f"No notebook at {p}: check the path (e.g. notebooks/00_quickstart.ipynb)."
            )
        shutil.copy2(p, dest / p.name)
    for new, kernel in (kernels or {}).items():
        src = next((p for p in paths if new.startswith(p.stem)), None)
        if src is None:
            raise FileNotFoundError(f"{new}: its name must start with one of {[p.stem for p in paths]}.")
        nb = json.loads(src.read_text())
        nb["metadata"]["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
        (dest / new).write_text(json.dumps(nb, indent=1))
    return dest


def start_lab(
    notebook_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    port: int | None = None,
    workdir: Path | None = None,
    command: list[str] | None = None,
) -> Lab:
    """Start `jupyter lab` on 127.0.0.1 serving `notebook_dir`, with a random token; return once it answers.

    env: added to this process's environment (kernels inherit it). Config, runtime, data and settings
    live in `workdir` (default: a new temporary folder), so no user setting or workspace leaks in.
    command: run this instead of jupyter lab (tests of the failure paths).
    Raises FileNotFoundError (no such folder), OSError (port taken), RuntimeError (the server exited) or
    TimeoutError (no answer in `timeout` seconds); each names what to check, and leaves no process behind.
    """
    notebook_dir = Path(notebook_dir)
    if not notebook_dir.is_dir():
        raise FileNotFoundError(f"No notebook folder at {notebook_dir}: check the path given to start_lab.")
    if port is None:
        port = free_port()
    elif port_in_use(port):
        raise OSError(
            f"Port {port} on 127.0.0.1 is already in use: stop what listens there "
            f"(`ss -ltnp 'sport = :{port}'` shows it) or let start_lab pick a free port (port=None)."
        )
    workdir = Path(workdir or tempfile.mkdtemp(prefix="saehelpers-lab-"))
    for sub in ("config", "runtime", "data", "workspaces"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    for plugin, values in SETTINGS.items():
        f = workdir / "settings" / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    token = secrets.token_hex(16)
    full_env = {
        **os.environ,
        **(env or {}),
        "JUPYTER_CONFIG_DIR": str(workdir / "config"),
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
        "JUPYTER_DATA_DIR": str(workdir / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(workdir / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    argv = command or [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebook_dir}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
        *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),  # CI runs as root
    ]  # fmt: skip
    with open(workdir / "lab.log", "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
            cwd=notebook_dir, start_new_session=True,
        )  # fmt: skip
    lab = Lab(proc, port, token, notebook_dir, workdir)
    try:
        _wait_ready(lab, timeout)
    except BaseException:
        lab.stop(grace=5)
        raise
    return lab


def _wait_ready(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if lab.proc.poll() is not None:
            raise RuntimeError(
                f"jupyter lab exited (code {lab.proc.returncode}) before it answered on port {lab.port}; "
                f"check its log {lab.log}:\n{log_tail(lab.log)}"
            )
        try:
            lab.api("status", timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"jupyter lab did not answer on http://127.0.0.1:{lab.port} within {timeout:g} s "
                f"(a slow machine? a broken install?); check its log {lab.log}:\n{log_tail(lab.log)}"
            )
        time.sleep(0.25)


# ---------------------------------------------------------------- the browser


def install_hint() -> str:
    return (
        f"Chromium is not installed at {CHROMIUM}: install it with `sudo apt-get install -y chromium` "
        "(Debian/Ubuntu), or leave the browser tests out with `pytest -m 'not heavy'`."
    )


def chromium_missing() -> str | None:
    """None when Chromium is installed at CHROMIUM, else a message saying how to install it."""
    return None if os.access(CHROMIUM, os.X_OK) else install_hint()


def need_browser(what: str = "the browser test") -> None:
    """Skip (a developer's machine) or fail (CI set) when Chromium or Playwright is missing."""
    import pytest

    problem = chromium_missing()
    if problem is None:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "Playwright is not installed: `pip install -e '.[dev]'`."
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so {what} must run: {problem}")
        pytest.skip(problem)


def launch_browser(playwright, timeout: float = 60.0):
    """Headless Chromium (Debian's) through Playwright."""
    if chromium_missing():
        raise FileNotFoundError(install_hint())
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, timeout=timeout * 1000, args=["--disable-dev-shm-usage"]
    )


def open_notebook(page, lab: Lab, name: str, timeout: float = 90.0):
    """Open `name` (a file in the server's folder) in JupyterLab; wait until all its cells are drawn and
    its kernel is idle."""
    path = lab.root / name
    if not path.is_file():
        raise FileNotFoundError(f"No notebook {name} in {lab.root}: copy it there first (copy_notebooks).")
    n = len(json.loads(path.read_text())["cells"])
    page.goto(lab.url(f"lab/tree/{quote(name)}?reset"), timeout=timeout * 1000)
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel + ' .jp-Cell').length === n",
        arg=[NOTEBOOK, n],
        timeout=timeout * 1000,
    )
    wait_kernel_idle(page, timeout)
    left = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if left.count():  # fold the file browser away: the notebook gets the page's width
        left.first.click()
    return page


def kernel_status(page) -> str:
    """The kernel's state as the status bar shows it: 'idle', 'busy', 'connecting', ... or '' (no kernel yet).

    (The notebook toolbar's execution indicator says 'idle' before a kernel is even attached, and Run All
    then runs nothing; the status bar's "Python 3 (ipykernel) | Idle" appears once it is connected.)
    """
    return page.evaluate(
        """() => {
            for (const el of document.querySelectorAll('.jp-StatusBar-TextItem')) {
                const m = el.textContent.trim().match(/^(.+) \\| (\\w+)$/);
                if (m && m[1] !== 'No Kernel') return m[2].toLowerCase();
            }
            return '';
        }"""
    )


def wait_kernel_idle(page, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while kernel_status(page) != "idle":
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"The notebook's kernel was not idle within {timeout:g} s "
                f"(status {kernel_status(page)!r}); check the server log."
            )
        time.sleep(0.5)


def menu(page, top: str, item: str) -> None:
    """Click a menu bar entry, then one of its items (e.g. 'Run', 'Run All Cells')."""
    page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
    entry = page.locator(".lm-Menu-content .lm-Menu-itemLabel").get_by_text(item, exact=True)
    entry.hover()
    time.sleep(0.3)  # a Lumino menu ignores a click that comes right after it opened
    entry.click()


def prompts(page) -> list[str]:
    """Each code cell's input prompt, e.g. '[3]:', '[*]:' (running or queued) or '[ ]:' (not run)."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + ' .jp-CodeCell .jp-InputPrompt')]
                   .map(e => e.textContent.trim())""",
        NOTEBOOK,
    )


def run_all(page, timeout: float = 300.0) -> float:
    """Run > Run All Cells; wait until every code cell has run (or one failed and the rest were
    cancelled) and the kernel is idle. Returns the seconds it took."""
    start = time.monotonic()
    before = prompts(page)
    menu(page, "Run", "Run All Cells")
    deadline = start + timeout
    started = False
    while True:
        p = prompts(page)
        started = started or p != before
        if started and "[*]:" not in p and kernel_status(page) == "idle":
            time.sleep(0.5)  # outputs of the last messages may still be rendering
            if "[*]:" not in prompts(page) and kernel_status(page) == "idle":
                return time.monotonic() - start
        if not started and time.monotonic() > start + 20:
            raise TimeoutError("Run > Run All Cells did not start any cell within 20 s: is the menu there?")
        if time.monotonic() > deadline:
            running = [i for i, x in enumerate(p) if x == "[*]:"]
            raise TimeoutError(
                f"Run All did not finish within {timeout:g} s: code cells {running} (counting code cells "
                "only) still queued or running."
            )
        time.sleep(0.5)


def cells(page) -> list[dict]:
    """Every cell of the open notebook as {type, prompt, text, images, loaded, mimes}."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + ' .jp-Cell')].map(c => {
            const outs = [...c.querySelectorAll('.jp-OutputArea-output')];
            const imgs = [...c.querySelectorAll('.jp-OutputArea-output img')];
            return {
                type: c.classList.contains('jp-CodeCell') ? 'code' : c.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
                prompt: (c.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent.trim(),
                text: [...c.querySelectorAll('.jp-OutputArea')].map(o => o.innerText).join('\\n'),
                images: imgs.length,
                loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                mimes: outs.map(o => o.getAttribute('data-mime-type') || ''),
            };
        })""",
        NOTEBOOK,
    )


def cell(page, index: int):
    """A locator of the index-th cell of the open notebook."""
    return page.locator(f"{NOTEBOOK} .jp-Cell").nth(index)


def find_cell(root: Path, name: str, *needles: str) -> int:
    """The index of the last code cell of notebook `name` whose source holds every one of `needles`."""
    nb = json.loads((Path(root) / name).read_text())
    found = [
        i for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and all(n in "".join(c["source"]) for n in needles)
    ]  # fmt: skip
    if not found:
        raise LookupError(f"{name} has no code cell holding {needles}: was the notebook changed?")
    return found[-1]


def shot(page, top, path: Path, bottom=None, pad: int = 6, width: float | None = None) -> Path:
    """Screenshot from locator `top`'s top edge to `bottom`'s bottom edge (default: `top`'s own); as wide as
    `top`, or `width` px, or (width=0) up to the notebook's right edge, so overflowing output shows too.
    The page's viewport must be tall enough to show the whole region."""
    top.scroll_into_view_if_needed()
    box = top.bounding_box()
    end = (bottom or top).bounding_box()
    if box is None or end is None:
        raise LookupError(f"nothing visible to screenshot for {Path(path).name}")
    x, y = max(box["x"] - pad, 0), max(box["y"] - pad, 0)
    if width == 0:
        nb = page.locator(NOTEBOOK).bounding_box()
        width = nb["x"] + nb["width"] - x - 20  # leave out the scroll bar
    width = width or box["width"] + 2 * pad
    height = min(end["y"] + end["height"] + pad - y, page.viewport_size["height"] - y)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, clip={"x": x, "y": y, "width": width, "height": height})
    return Path(path)

"""Real-browser test helpers: a private JupyterLab server and Playwright page actions.

The server runs on 127.0.0.1 with a random token, its own config, runtime, settings and
``CLEARNB_HOME`` folders, and nothing that reaches the network (no news feed, no update
check, a read-only extension manager, no server extensions but JupyterLab's own). Pages
are driven through ``window.jupyterapp`` (``expose_app_in_browser``) so that waits follow
JupyterLab's own state (kernel status, the "Run All Cells" command's promise) instead of
sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import in_ci

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
# Server extensions the test server loads; every other installed one is switched off, so
# the page only depends on JupyterLab itself (and start-up stays fast).
SERVER_EXTENSIONS = ("jupyterlab", "jupyter_lsp")
# Prebuilt front-end extensions the page loads; every other installed one is disabled.
LAB_EXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "anywidget")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def chromium_missing_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (.ci/run installs Debian's chromium with apt-get)"
    return None


# In CI a missing browser must fail the tests, not skip them: .ci/run installs it.
skip_without_chromium = pytest.mark.skipif(
    chromium_missing_reason() is not None and not in_ci(),
    reason=chromium_missing_reason() or "",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def descendant_pids(root: int) -> list[int]:
    """Live processes below ``root`` (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return sorted(found)


@dataclass
class JupyterLab:
    """A running JupyterLab server: where it answers and where its notebooks live."""

    url: str
    token: str
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's log (stdout and stderr)."""
        try:
            with self.log_path.open(errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except OSError as exc:
            return f"(no log: {exc})"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
        """Call the server's REST API (``path`` like ``/api/status``); the decoded JSON."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "PUT") else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def end_sessions(self) -> None:
        """Close every notebook session and shut its kernel down (between tests)."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE", timeout=30)

    def lab_url(self, path: str = "") -> str:
        """URL of a JupyterLab page, e.g. ``lab_url("tree/x.ipynb")``, with the token."""
        return f"{self.url}/lab/{path}?token={self.token}"

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the server and every kernel it started down; kill what does not stop."""
        if self.process.poll() is None:
            leftovers = descendant_pids(self.process.pid)
            try:
                self.api("/api/shutdown", method="POST")
            except (OSError, urllib.error.URLError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        else:
            leftovers = []
        for pid in leftovers:  # kernels run in their own session: not in the server's group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _server_extension_switches() -> list[str]:
    """Command-line switches that turn off every server extension but SERVER_EXTENSIONS."""
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    manager = ExtensionConfigManager(read_config_path=jupyter_config_path())
    installed = set(manager.get_jpserver_extensions())  # type: ignore[no-untyped-call]
    wanted = {name: name in SERVER_EXTENSIONS for name in installed | set(SERVER_EXTENSIONS)}
    return [f"--ServerApp.jpserver_extensions={name}={on}" for name, on in sorted(wanted.items())]


def _write_lab_config(config_dir: Path) -> None:
    """Settings for the test server: no news prompt, only LAB_EXTENSIONS in the page."""
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_federated_extensions

    installed = get_federated_extensions(jupyter_path("labextensions"))
    disabled = {name: True for name in installed if name not in LAB_EXTENSIONS}
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": disabled}))
    notification = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


def start_jupyter_lab(base: Path, timeout: float = 90.0) -> JupyterLab:
    """Start JupyterLab with notebooks under ``base/notebooks``; return once it answers."""
    root = base / "notebooks"
    home = base / "clearnb-home"
    for folder in (root, home, base / "config", base / "runtime", base / "ipython"):
        folder.mkdir(parents=True, exist_ok=True)
    _write_lab_config(base / "config")
    token = secrets.token_hex(16)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "JPY_", "CLEARNB_"))
    }
    env.update(
        CLEARNB_HOME=str(home),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "config" / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "config" / "lab" / "workspaces"),
        IPYTHONDIR=str(base / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",  # ServerApp.token is its deprecated alias
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",
        *_server_extension_switches(),
    ]
    if os.geteuid() == 0:  # CI runs as root; the server refuses to unless told
        command.append("--allow-root")
    log_path = base / "jupyterlab.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = JupyterLab(f"http://127.0.0.1:{port}", token, root, log_path, process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {process.returncode} before answering.\n"
                f"command: {' '.join(command)}\nlog tail:\n{lab.log_tail()}"
            )
        try:
            lab.api("/api/status", timeout=2)
            return lab
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            lab.stop()
            raise RuntimeError(
                f"JupyterLab did not answer {lab.url}/api/status within {timeout:.0f} s.\n"
                f"log tail:\n{lab.log_tail()}"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.1)  # poll interval; returns early if the server dies


def write_notebook(lab: JupyterLab, name: str, cells: list[str], hide_code: bool = False) -> Path:
    """Write a notebook of code ``cells`` (Python 3 kernel) under the server's root.

    ``hide_code`` collapses the cells' inputs, so their outputs fill the screen.
    """
    metadata = {"jupyter": {"source_hidden": True}} if hide_code else {}
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell-{index}",
                "metadata": metadata,
                "execution_count": None,
                "outputs": [],
                "source": source,
            }
            for index, source in enumerate(cells)
        ],
    }
    path = lab.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1))
    return path


# JavaScript run in the page. Each reads JupyterLab's state through window.jupyterapp.
_NOTEBOOK_READY = """(path) => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext || !panel.context) return false;
  if (panel.context.path !== path || !panel.context.isReady || !panel.isVisible) return false;
  const ctx = panel.sessionContext;
  const kernel = ctx.session && ctx.session.kernel;
  return Boolean(ctx.isReady && kernel && kernel.status === 'idle'
                 && kernel.connectionStatus === 'connected');
}"""

_NOTEBOOK_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!app) return {app: false};
  if (!panel || !panel.sessionContext) return {app: true, widget: panel ? panel.id : null};
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {
    app: true,
    path: panel.context ? panel.context.path : null,
    visible: panel.isVisible,
    ready: panel.sessionContext.isReady,
    kernel: kernel ? kernel.status : null,
    connection: kernel ? kernel.connectionStatus : null,
  };
}"""

_RUN_ALL = """() => {
  const app = window.jupyterapp;
  const state = {done: false, ok: null, error: null};
  window.__testRunAll = state;
  app.commands.execute('notebook:run-all-cells').then(
    (ok) => { state.ok = ok; state.done = true; },
    (error) => { state.error = String(error); state.done = true; },
  );
}"""

_CELL_REPORT = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells;
  const report = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    const errors = cell.outputs.toJSON()
      .filter((o) => o.output_type === 'error')
      .map((o) => `${o.ename}: ${o.evalue}`);
    report.push({index: i, count: cell.executionCount, state: cell.executionState || null,
                 errors});
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {kernel: kernel ? kernel.status : null, cells: report};
}"""


def open_notebook(page: Page, lab: JupyterLab, name: str, timeout: float = 60_000) -> None:
    """Open ``name`` (relative to ``lab.root``) in JupyterLab; return when its kernel is idle."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # A workspace of its own per page: no tabs restored from an earlier test.
    workspace = f"test-{secrets.token_hex(4)}"
    url = lab.lab_url(f"workspaces/{workspace}/tree/{name}")
    page.goto(url, wait_until="domcontentloaded", timeout=timeout)
    try:
        page.wait_for_function(_NOTEBOOK_READY, arg=name, timeout=timeout, polling=100)
    except PlaywrightTimeout:
        state = page.evaluate(_NOTEBOOK_STATE)
        raise AssertionError(
            f"notebook {name!r} did not open with an idle kernel within {timeout / 1000:.0f} s; "
            f"JupyterLab state: {state}"
        ) from None


def run_all_cells(page: Page, timeout: float = 60_000, check: bool = True) -> dict[str, Any]:
    """Run every cell of the current notebook ("Run All Cells"); wait until it is done.

    Returns a report of the code cells (execution count, errors). With ``check``, a cell
    that raised, or one left unexecuted, fails with the errors in the message.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate(_RUN_ALL)
    try:
        page.wait_for_function("() => window.__testRunAll.done", timeout=timeout, polling=100)
        page.wait_for_function(
            "() => { const p = window.jupyterapp.shell.currentWidget;"
            " const k = p.sessionContext.session && p.sessionContext.session.kernel;"
            " return Boolean(k && k.status === 'idle'); }",
            timeout=timeout,
            polling=100,
        )
    except PlaywrightTimeout:
        raise AssertionError(
            f"Run All Cells did not finish within {timeout / 1000:.0f} s: "
            f"{page.evaluate(_CELL_REPORT)}"
        ) from None
    outcome = page.evaluate("() => window.__testRunAll")
    report: dict[str, Any] = page.evaluate(_CELL_REPORT)
    if check:
        errors = [f"cell {c['index']}: {e}" for c in report["cells"] for e in c["errors"]]
        unrun = [c["index"] for c in report["cells"] if c["count"] is None]
        if outcome["error"] or errors or unrun:
            raise AssertionError(
                f"Run All Cells failed: command error {outcome['error']!r}; "
                f"cell errors {errors}; cells not executed {unrun}"
            )
    return report


def wait_for_text(page: Page, selector: str, text: str, timeout: float = 30_000) -> None:
    """Wait until an element matching ``selector`` and containing ``text`` is visible."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(selector, has_text=text).first.wait_for(state="visible", timeout=timeout)
    except PlaywrightTimeout:
        found = page.locator(selector).all_inner_texts()
        shown = [t.strip()[:120] for t in found[:10]]
        raise AssertionError(
            f"no visible {selector!r} containing {text!r} after {timeout / 1000:.0f} s; "
            f"{len(found)} element(s) match {selector!r}: {shown}"
        ) from None


def screenshot(page: Page, name: str, show: Locator | None = None) -> Path:
    """Save a PNG of the page as test-artifacts/screenshots/``name``.png; its path.

    ``show``: an element to scroll into view first (the notebook scrolls, the page not).
    """
    if show is not None:
        show.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path))
    return path

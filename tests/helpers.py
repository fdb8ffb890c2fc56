"""Shared test helpers: fixture notebooks, process checks, waits and the CI skip rule."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn, TypeVar

import pytest

from clearnb.processes import process_alive

T = TypeVar("T")

NOTEBOOKS = Path(__file__).parent / "notebooks"


def notebook(name: str) -> Path:
    """Path of a fixture notebook in tests/notebooks."""
    return NOTEBOOKS / f"{name}.ipynb"


def process_exists(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    return process_alive(pid)


def wait_until_gone(pid: int, timeout: float = 15.0) -> bool:
    """Wait for ``pid`` to end; True if it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_exists(pid):
            return True
        time.sleep(0.05)
    return not process_exists(pid)


def descendants() -> dict[int, str]:
    """Live processes descending from this one, with their command lines."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])
        commands[int(entry.name)] = command
    me = os.getpid()

    def below_me(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            seen.add(pid)
            pid = parents[pid]
            if pid == me:
                return True
        return False

    return {pid: command for pid, command in commands.items() if below_me(pid)}


def child_kernel_pids() -> list[int]:
    """Live kernel processes (and kernel fork servers) descending from this process."""
    return sorted(pid for pid, command in descendants().items() if is_kernel(command))


KERNEL_COMMANDS = ("ipykernel", "clearnb.execution.ipkernel", "clearnb.execution.forkserver")


def is_kernel(command: str) -> bool:
    """True for the command line of a kernel or of a kernel fork server."""
    return any(name in command for name in KERNEL_COMMANDS)


def kernel_pids_of(home: Path) -> list[int]:
    """Live kernel processes anywhere (orphans too) whose ``CLEARNB_HOME`` is ``home``."""
    wanted = f"CLEARNB_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if is_kernel(command) and wanted in environ and process_exists(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def in_ci() -> bool:
    """True in continuous integration: ``CI`` set to ``true`` (as .ci/run and CI services do).

    There every extra of the project is installed, so nothing may be skipped for want of
    one: what would be skipped on a developer's machine fails instead.
    """
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip the test for ``reason`` (something it needs is missing); in CI, fail it instead."""
    if in_ci():
        pytest.fail(f"{reason}; in CI (CI=true) nothing may be skipped", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, extra: str = "dev") -> ModuleType:
    """Import ``name``; where it is missing skip the test, except in CI where it fails."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        problem = str(exc)
    skip_or_fail_in_ci(f"{name} is not installed (pip install -e '.[{extra}]'): {problem}")


def wait_until(condition: Callable[[], T], timeout: float = 60.0, what: str = "the condition") -> T:
    """Poll ``condition`` until it returns something true; that value.

    Fails the test, naming ``what``, if it is still false after ``timeout`` seconds: a
    generous bound for a state that must come, never a window the state must fall into.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(0.05)


def isolated_home(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point clearnb at a store of its own in ``folder`` for one test (``CLEARNB_HOME``),
    with no other location or task id inherited from the environment."""
    monkeypatch.setenv("CLEARNB_HOME", str(folder))
    inherited = ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_CACHE_DIR")
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    for name in inherited:
        monkeypatch.delenv(name, raising=False)
    return folder

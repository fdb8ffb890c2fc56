"""Shared test helpers: fixture notebooks and process checks."""

from __future__ import annotations

import os
import time
from pathlib import Path

from clearnb.processes import process_alive

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


def child_kernel_pids() -> list[int]:
    """Live kernel processes (and kernel fork servers) descending from this process."""
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

    def descends(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            seen.add(pid)
            pid = parents[pid]
            if pid == me:
                return True
        return False

    return sorted(pid for pid, command in commands.items() if is_kernel(command) and descends(pid))


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

"""Shared test helpers: fixture notebooks and process checks."""

from __future__ import annotations

import os
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).parent / "notebooks"


def notebook(name: str) -> Path:
    """Path of a fixture notebook in tests/notebooks."""
    return NOTEBOOKS / f"{name}.ipynb"


def process_exists(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_gone(pid: int, timeout: float = 15.0) -> bool:
    """Wait for ``pid`` to end; True if it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_exists(pid):
            return True
        time.sleep(0.05)
    return not process_exists(pid)


def child_kernel_pids() -> list[int]:
    """Live ipykernel processes whose parent is this process."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.split(")")[-1].split()
        if fields[0] != "Z" and int(fields[1]) == me and "ipykernel" in cmdline:
            found.append(int(entry.name))
    return found

"""Processes as Linux shows them in ``/proc``: whether one still runs, a kernel's tree,
its memory, its end.

A process is named by its pid and start time (a pid alone may be reused). A kernel may
start processes of its own (``subprocess``, ``multiprocessing``, a shell command, a daemon
that leaves its session: the kernel is their subreaper, :func:`become_subreaper`). They
count towards its memory, and they end with it: a kernel is killed with its process
group, every process of its session, and every descendant seen while it ran. Elsewhere
(no ``/proc``) the tree is the kernel alone and memory cannot be measured.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@functools.cache
def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def can_measure_memory() -> bool:
    """True where the memory of a process tree can be read (``/proc`` exists)."""
    return (PROC / "self" / "statm").exists()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (of any of its threads)."""
    found: list[int] = []
    try:
        threads = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for thread in threads:
        try:
            text = (thread / "children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), parents first."""
    found: list[int] = []
    seen = {pid}
    frontier = [pid]
    while frontier:
        below = [child for parent in frontier for child in children(parent) if child not in seen]
        seen.update(below)
        found.extend(below)
        frontier = below
    return found


def resident_bytes(pid: int) -> int:
    """Resident memory (RSS) of one process; 0 once it is gone."""
    try:
        fields = (PROC / str(pid) / "statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _page_size() if len(fields) > 1 else 0


def tree_resident_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it, added up."""
    return sum(resident_bytes(member) for member in (pid, *descendants(pid)))


def _stat_fields(pid: int | str) -> list[bytes]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, session...)."""
    try:
        with open(PROC / str(pid) / "stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return []


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def session_of(pid: int) -> int | None:
    """Session id of ``pid``; None once it is gone."""
    fields = _stat_fields(pid)
    return int(fields[3]) if len(fields) > 3 else None


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): with the pid, names one process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def snapshot(pids: Iterable[int]) -> dict[int, int]:
    """``{pid: start time}`` of the given processes that still run."""
    found = {pid: start_time(pid) for pid in pids}
    return {pid: started for pid, started in found.items() if started is not None}


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (read from every ``/proc/<pid>/stat``)."""
    try:
        entries = os.listdir(PROC)
    except OSError:
        return []
    members: list[int] = []
    for name in entries:
        if name.isdigit():
            fields = _stat_fields(name)
            if len(fields) > 3 and int(fields[3]) == sid:
                members.append(int(name))
    return members


def kill_tree(pid: int | None, group: int | None, seen: Mapping[int, int] | None = None) -> None:
    """SIGKILL a kernel with everything it started.

    ``group`` is the kernel's process group, which is also its session (pooled kernels
    lead their own session). Processes that left the group keep the session; processes
    that left the session are found as descendants of ``pid`` while it still runs, or in
    ``seen`` (a :func:`snapshot` of the kernel and its descendants) once it is gone.
    """
    if not hasattr(os, "killpg"):
        return
    if group in (os.getpgid(0), os.getsid(0)):
        group = None  # never this process's own group or session
    seen = seen or {}
    known = [p for p, started in seen.items() if start_time(p) == started]
    below = []
    if pid and (pid in known or (group and session_of(pid) == group)):
        below = descendants(pid)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for member in (*known, *below, *(session_members(group) if group else ())):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process (a kernel) the parent of every orphan below it (Linux).

    A process a kernel daemonizes (``setsid -f``, a double fork) leaves the kernel's session
    and is re-parented when its parent exits; as a subreaper the kernel stays its parent, so
    the kernel's tree (its memory, what ends with it) keeps it. True if that is set.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def exit_description(code: int | None) -> str | None:
    """``"exited with code 1"`` or ``"killed by signal SIGKILL"`` for a process exit code

    as :mod:`subprocess` gives it (negative: the signal that ended it); None if unknown.
    """
    if code is None:
        return None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by signal {name}"
    return f"exited with code {code}"


def controller_identity() -> dict[str, Any]:
    """The host, pid and start time of this process, recorded with a run it controls."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "since": start_time(pid)}


def controller_gone(identity: Any) -> bool:
    """True when the controller process ``identity`` names is known to have ended: it ran
    on this host and its pid is gone or now belongs to a process started later."""
    if not isinstance(identity, dict) or identity.get("host") != socket.gethostname():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return identity.get("since") != start_time(pid)
    if not process_alive(pid):
        return True
    since, now = identity.get("since"), start_time(pid)
    return since is not None and now is not None and since != now

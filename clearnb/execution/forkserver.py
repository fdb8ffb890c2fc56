"""A fork server for Python kernels: import ipykernel once, fork a kernel per request.

Starting a Python kernel from scratch spends most of its half second importing IPython,
ipykernel, zmq and tornado. This small process pays that once; each kernel is then a
``fork()`` of it that only binds its sockets and builds its shell (about 0.15 s).

Protocol, one JSON object per line: the pool writes ``{"connection_file": ..., "env": {...},
"cwd": ..., "log": ...}`` on stdin and reads ``{"pid": N}`` (or ``{"error": ...}``) on stdout;
``{"exit_code": N, "wait": seconds}`` asks how kernel N ended and reads ``{"exit_code": code}``
(negative: killed by that signal; null: still running or unknown). When stdin closes (the
pool closed, or its process died), every kernel still running is killed and the server
exits, so no kernel outlives the process that asked for it.

The server must stay single-threaded and hold no zmq context or event loop before it
forks; it imports only what every kernel imports anyway.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import select
import signal
import sys
import time
import traceback
from typing import Any

from clearnb.execution.ipkernel import bind_frameworks, route_pipe_over_ipc
from clearnb.processes import become_subreaper

KERNEL_ARGUMENTS = ("--HistoryManager.enabled=False",)


EXIT_CODES_KEPT = 1000
"""How many exit codes of ended kernels the server remembers."""


class _Reaper:
    """Reaps ended kernels as SIGCHLD arrives and remembers how each one ended.

    ``children`` holds the kernels not reaped yet: their pids cannot have been reused, so
    they are safe to kill.
    """

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.children: set[int] = set()

    def fork(self) -> int:
        """``os.fork()``, the new kernel noted as a child before SIGCHLD can report it."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid:
                self.codes.pop(pid, None)  # a code kept from an earlier process of that pid
                self.children.add(pid)
            return pid
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})

    def reap(self, *_: object) -> None:
        """Collect every ended child (the SIGCHLD handler)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.codes[pid] = os.waitstatus_to_exitcode(status)
            while len(self.codes) > EXIT_CODES_KEPT:
                del self.codes[next(iter(self.codes))]

    def kill_children(self) -> None:
        """SIGKILL every kernel not reaped yet, with its process group."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def exit_code(self, pid: int, wait: float) -> int | None:
        """How child ``pid`` ended, waiting up to ``wait`` seconds for it to end."""
        deadline = time.monotonic() + max(0.0, wait)
        while pid not in self.codes:
            self.reap()
            if pid in self.codes or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return self.codes.get(pid)


def _run_kernel(request: dict[str, Any]) -> None:
    """In the forked child: become a fresh session and start the kernel (never returns)."""
    code = 1
    try:
        os.setsid()
        become_subreaper()  # daemons the kernel starts stay in its tree
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log_path = request.get("log") or os.devnull
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)  # replaces the request pipe
        os.dup2(log_fd, 1)  # replaces the reply pipe
        os.dup2(log_fd, 2)
        os.close(null_fd)
        os.close(log_fd)
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        if request.get("cwd"):
            os.chdir(request["cwd"])
        random.seed()
        sys.argv = [sys.argv[0], "-f", request["connection_file"]]
        route_pipe_over_ipc(request["connection_file"])
        bind_frameworks()
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize([*KERNEL_ARGUMENTS, "-f", request["connection_file"]])  # type: ignore[no-untyped-call]
        app.start()  # type: ignore[no-untyped-call]
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:  # the kernel could not start: say why in its log
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


BASE_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.debugger",  # debugpy: a tenth of a second per kernel
    "IPython.core.interactiveshell",
    "pdb",
    "pydoc",
)
"""What every kernel imports while it starts; imported once here instead."""


def serve(preload: list[str]) -> int:
    """Answer fork requests on stdin until it closes.

    The modules every kernel needs are imported before the server says it is ready;
    ``preload`` (modules steps often use, like clearnb's own) are imported while the
    server is idle, so that the first kernel does not wait for them.
    """
    for module in BASE_MODULES:
        importlib.import_module(module)
    reaper = _Reaper()
    signal.signal(signal.SIGCHLD, reaper.reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.fileno()
    replies = sys.stdout.buffer
    replies.write(b'{"ready": true}\n')
    replies.flush()
    pending = list(preload)
    buffer = b""
    try:
        while True:
            if b"\n" not in buffer:
                readable, _, _ = select.select([requests], [], [], 0 if pending else None)
                if not readable:
                    with contextlib.suppress(Exception):
                        importlib.import_module(pending.pop(0))
                    continue
                chunk = os.read(requests, 65536)
                if not chunk:
                    break
                buffer += chunk
                continue
            line, _, buffer = buffer.partition(b"\n")
            try:
                request = json.loads(line)
                if "exit_code" in request:
                    code = reaper.exit_code(int(request["exit_code"]), float(request["wait"]))
                    replies.write(json.dumps({"exit_code": code}).encode() + b"\n")
                    replies.flush()
                    continue
                pid = reaper.fork()
            except Exception as exc:  # a malformed request or no memory to fork
                replies.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                replies.write(b"\n")
                replies.flush()
                continue
            if pid == 0:
                _run_kernel(request)
            replies.write(json.dumps({"pid": pid}).encode() + b"\n")
            replies.flush()
    finally:
        reaper.kill_children()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))

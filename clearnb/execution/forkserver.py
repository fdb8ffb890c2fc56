"""A fork server for Python kernels: import ipykernel once, fork a kernel per request.

Starting a Python kernel from scratch spends most of its half second importing IPython,
ipykernel, zmq and tornado. This small process pays that once; each kernel is then a
``fork()`` of it that only binds its sockets and builds its shell (about 0.15 s).

Protocol, one JSON object per line: the pool writes ``{"connection_file": ..., "env": {...},
"cwd": ..., "log": ...}`` on stdin and reads ``{"pid": N}`` (or ``{"error": ...}``) on stdout.
When stdin closes (the pool closed, or its process died), every kernel still running is
killed and the server exits, so no kernel outlives the process that asked for it.

The server must stay single-threaded and hold no zmq context or event loop before it
forks; it imports only what every kernel imports anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import traceback
from typing import Any

KERNEL_ARGUMENTS = ("--HistoryManager.enabled=False",)


def _kill_children(children: set[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _run_kernel(request: dict[str, Any]) -> None:
    """In the forked child: become a fresh session and start the kernel (never returns)."""
    code = 1
    try:
        os.setsid()
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


def serve(preload: list[str]) -> int:
    """Answer fork requests on stdin until it closes."""
    import pdb  # noqa: F401 - imported once here, inherited by every kernel
    import pydoc  # noqa: F401

    for module in preload:
        with contextlib.suppress(Exception):
            __import__(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the system
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = sys.stdout.buffer
    replies.write(b'{"ready": true}\n')
    replies.flush()
    children: set[int] = set()
    try:
        for line in requests:
            try:
                request = json.loads(line)
                pid = os.fork()
            except Exception as exc:  # a malformed request or no memory to fork
                replies.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                replies.write(b"\n")
                replies.flush()
                continue
            if pid == 0:
                _run_kernel(request)
            children = {p for p in children if _alive(p)}
            children.add(pid)
            replies.write(json.dumps({"pid": pid}).encode() + b"\n")
            replies.flush()
    finally:
        _kill_children(children)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))

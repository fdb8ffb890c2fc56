"""Start an IPython kernel whose every socket is an IPC socket.

Whatever transport its connection file names, ipykernel listens on a TCP port of
127.0.0.1 for the output of processes the kernel forks (its IOPub "pipe"). For a kernel
connected over IPC, this puts that pipe on a Unix socket too, next to the kernel's other
sockets (in the pool's private folder), so that the kernel opens no TCP port at all.

``python -m clearnb.execution.ipkernel -f CONNECTION_FILE`` runs a kernel like
``python -m ipykernel_launcher``; the fork server calls :func:`route_pipe_over_ipc` itself.
Either way the kernel starts with :func:`bind_frameworks`, so that the models a step saves
with an ML framework's own call are registered even if it never calls ``Task.init``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

PIPE_SUFFIX = "-pipe"
"""Added to an IPC connection's ``ip`` (a path prefix) to name the kernel's pipe socket."""


def pipe_path(ip: str) -> str:
    """Path of the pipe socket of a kernel whose IPC sockets start with ``ip``."""
    return f"{ip}{PIPE_SUFFIX}"


def route_pipe_over_ipc(connection_file: str) -> bool:
    """Make kernels started in this process use an IPC socket for ipykernel's pipe.

    Does nothing (and returns False) unless the connection file names the ``ipc``
    transport and this ipykernel has the pipe this knows how to move.
    """
    try:
        info = json.loads(Path(connection_file).read_text())
    except (OSError, ValueError):
        return False
    if info.get("transport") != "ipc" or not info.get("ip"):
        return False
    import zmq
    from ipykernel.iostream import IOPubThread
    from zmq.eventloop.zmqstream import ZMQStream

    if not all(hasattr(IOPubThread, name) for name in ("_setup_pipe_in", "_setup_pipe_out")):
        return False
    endpoint = f"ipc://{pipe_path(str(info['ip']))}"

    def setup_pipe_in(self: Any) -> None:
        self._pipe_uuid = os.urandom(16)
        pipe_in = self.socket.context.socket(zmq.PULL)
        pipe_in.linger = 0
        try:
            pipe_in.bind(endpoint)
        except zmq.ZMQError as exc:
            warnings.warn(
                f"Couldn't bind IOPub Pipe to {endpoint}: {exc}\n"
                "subprocess output will be unavailable.",
                stacklevel=2,
            )
            self._pipe_flag = False
            pipe_in.close()
            return
        self._pipe_in = ZMQStream(pipe_in, self.io_loop)
        self._pipe_in.on_recv(self._handle_pipe_msg)

    def setup_pipe_out(self: Any) -> tuple[Any, Any]:
        context = zmq.Context()
        pipe_out = context.socket(zmq.PUSH)
        pipe_out.linger = 3000
        pipe_out.connect(endpoint)
        return context, pipe_out

    setattr(IOPubThread, "_setup_pipe_in", setup_pipe_in)  # noqa: B010
    setattr(IOPubThread, "_setup_pipe_out", setup_pipe_out)  # noqa: B010
    return True


def bind_frameworks() -> None:
    """Register the models saved by ML frameworks in this kernel as its run's output models
    (:mod:`clearnb.frameworks`); a failure to do so leaves the kernel as it is."""
    try:
        from clearnb import frameworks

        frameworks.install()
    except Exception as exc:  # the kernel matters more than the binding
        warnings.warn(f"ML frameworks are not bound in this kernel: {exc}", stacklevel=2)


def main(argv: list[str]) -> None:
    """Run a kernel for the connection file after ``-f`` in ``argv``, its pipe over IPC."""
    if "-f" in argv[:-1]:
        route_pipe_over_ipc(argv[argv.index("-f") + 1])
    if sys.path and sys.path[0] in ("", os.getcwd(), str(Path(__file__).parent)):
        del sys.path[0]  # like ipykernel_launcher; the kernel adds its folder back
    bind_frameworks()
    from clearnb.processes import become_subreaper

    become_subreaper()  # daemons the kernel starts stay in its tree
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main(sys.argv[1:])

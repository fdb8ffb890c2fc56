"""Dask clusters for tests, always stopped: ``dask scheduler`` / ``dask worker`` processes on
127.0.0.1, and the checks that none of their processes (or kernels) is left afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.helpers import descendants, is_kernel, process_exists


def dask_leftovers(started: Sequence[int] = ()) -> list[str]:
    """Dask processes (workers, schedulers, nannies) or kernels still alive that this test
    started: below this process, or among the ``started`` pids (their own sessions)."""
    found = [
        f"{pid} {command}"
        for pid, command in descendants().items()
        if is_kernel(command) or "spawn_main" in command or "dask" in command
    ]
    found += [f"{pid} (started by the test)" for pid in started if process_exists(pid)]
    return found


def wait_for_no_leftovers(started: Sequence[int] = (), timeout: float = 30.0) -> list[str]:
    """:func:`dask_leftovers` once they are gone, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = dask_leftovers(started)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class DaskProcess:
    """One ``python -m dask ...`` process in its own session; its output goes to ``log``."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(encoding="utf-8")

    def kill(self) -> None:
        """SIGKILL the process alone, as a crash would (what it started must go by itself)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not end in time; then whatever is left of its
        process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._out.close()


class DaskProcesses:
    """A scheduler and workers started as ``dask scheduler`` / ``dask worker`` processes on
    127.0.0.1; all stopped when the ``with`` block ends."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.started: list[DaskProcess] = []
        self.scheduler: DaskProcess | None = None
        self.address = ""

    def start_scheduler(self, timeout: float = 60.0) -> str:
        """Start a scheduler on a free port; its address (``tcp://127.0.0.1:PORT``)."""
        number = sum(1 for p in self.started if "scheduler" in p.log.name)
        file = self.folder / f"scheduler-{number}.json"
        command = [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1"]
        command += ["--port", "0", "--scheduler-file", str(file), "--dashboard-address", ":0"]
        self.scheduler = DaskProcess(command, self.env, self.folder / f"scheduler-{number}.log")
        self.started.append(self.scheduler)
        deadline = time.monotonic() + timeout
        while not file.exists() or not file.read_text(encoding="utf-8").strip():
            if self.scheduler.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the scheduler did not start: {self.scheduler.output()}")
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written in one go, but give it a moment to be complete
        self.address = str(json.loads(file.read_text(encoding="utf-8"))["address"])
        return self.address

    def start_worker(
        self,
        name: str,
        *,
        nthreads: int = 1,
        resources: str | None = None,
        hostname: str | None = None,
    ) -> DaskProcess:
        """Start a worker without a nanny (killing it kills the worker: nothing restarts it);
        ``hostname`` runs it in a namespace of its own where the machine has that name."""
        command = [sys.executable, "-m", "dask", "worker", self.address, "--name", name]
        command += ["--nthreads", str(nthreads), "--no-nanny", "--host", "127.0.0.1"]
        command += ["--no-dashboard", "--local-directory", str(self.folder / f"dask-{name}")]
        if resources:
            command += ["--resources", resources]
        if hostname:
            quoted = " ".join(f"'{part}'" for part in command)
            command = ["unshare", "--uts", "sh", "-c", f"hostname {hostname} && exec {quoted}"]
        worker = DaskProcess(command, self.env, self.folder / f"worker-{name}.log")
        self.started.append(worker)
        return worker

    def output(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()}" for p in self.started)

    def pids(self) -> list[int]:
        return [p.pid for p in self.started]

    def __enter__(self) -> DaskProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in reversed(self.started):  # workers first, the scheduler last
            process.stop()

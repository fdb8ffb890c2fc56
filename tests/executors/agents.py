"""Agent processes for tests: started with ``python -m clearnb agent``, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from clearnb.store import Store

APPEND = Path(__file__).parent.parent / "notebooks" / "queue" / "append.ipynb"


def agent_environ(home: Path, store_url: str | None = None) -> dict[str, str]:
    """The environment of a process that uses the store under ``home`` (or ``store_url``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARNB_")}
    env.pop("JPY_SESSION_NAME", None)
    env["CLEARNB_HOME"] = str(home)
    if store_url:
        env["CLEARNB_STORE_URL"] = store_url
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


class AgentProcess:
    """One ``clearnb agent`` process; its output goes to ``log``."""

    def __init__(
        self,
        name: str,
        queues: list[str],
        env: dict[str, str],
        log: Path,
        *,
        workers: int = 1,
        lease: float = 30.0,
    ) -> None:
        self.name = name
        self.log = log
        command = [sys.executable, "-m", "clearnb", "agent", "--name", name]
        for queue in queues:
            command += ["--queue", queue]
        command += ["--workers", str(workers), "--lease", str(lease)]
        self._out = log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, store: Store, timeout: float = 60.0) -> None:
        """Wait until the agent has announced itself in the store."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(w.id == self.name for w in store.get_workers()):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"agent {self.name} exited: {self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"agent {self.name} did not start: {self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(encoding="utf-8")

    def kill(self) -> None:
        """SIGKILL the agent process alone, as a crash would (its kernels must go by themselves)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (stop running tasks), then SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with_group_gone(self.process.pid)
        self._out.close()


def with_group_gone(pgid: int) -> None:
    """Kill whatever is left in process group ``pgid`` (kernels of a killed agent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Agents:
    """Agent processes started by a test, stopped when it ends (``with Agents(...) as a``)."""

    def __init__(self, store: Store, env: dict[str, str], folder: Path) -> None:
        self.store = store
        self.env = env
        self.folder = folder
        self.started: list[AgentProcess] = []

    def start(
        self, name: str, queues: list[str], *, workers: int = 1, lease: float = 30.0
    ) -> AgentProcess:
        agent = AgentProcess(
            name,
            queues,
            self.env,
            self.folder / f"agent-{name}.log",
            workers=workers,
            lease=lease,
        )
        self.started.append(agent)
        agent.wait_ready(self.store)
        return agent

    def __enter__(self) -> Agents:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for agent in self.started:
            agent.stop()

    def output(self) -> str:
        return "\n".join(f"--- {a.name}\n{a.output()}" for a in self.started)

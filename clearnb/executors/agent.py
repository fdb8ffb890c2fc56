"""An agent: serves queues, running each task it takes with the local runner.

``clearnb agent --queue default --workers 2`` starts one. Each worker slot takes the next
task of its queues (in the order given, oldest first) and runs it: a notebook or function
step on a pre-started kernel of the agent's pool, a pipeline controller in this process.
While a task runs, a heartbeat renews the agent's lease on it; an agent that stops
renewing (it died, or lost the store) loses its tasks, which end ``failed`` with that
reason. The heartbeat also carries abort requests (``clearnb task abort ID``) to the
kernel running the task.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.dispatch import reachable_notebook
from clearnb.errors import ClearnbError
from clearnb.execution.runner import NotebookRunner, RunHandle
from clearnb.store.records import FINAL_STATUSES, TaskRecord, WorkerRecord

log = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0
"""Seconds an agent's claim on a running task lasts without a heartbeat."""
DEFAULT_POLL_INTERVAL = 0.1
"""Longest pause between two looks at an empty queue."""


class Agent:
    """Serves ``queues`` with ``workers`` tasks at once until :meth:`stop` is called.

    ``lease`` (seconds) is how long a task stays this agent's without a heartbeat (sent
    every third of it); ``say`` receives one line per thing the agent does.
    """

    def __init__(
        self,
        queues: Sequence[str],
        *,
        workers: int = 1,
        config: Config | None = None,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        name: str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        names = [q.strip() for q in queues]
        if not names or not all(names):
            raise ClearnbError("an agent serves one queue or more: pass --queue NAME")
        if workers < 1:
            raise ClearnbError(f"an agent runs at least one task at a time, not {workers}")
        if lease <= 0:
            raise ClearnbError(f"the lease is a number of seconds above 0, not {lease}")
        self.queues = list(dict.fromkeys(names))
        self.workers = workers
        self.config = config or Config.from_env()
        self.lease = float(lease)
        self.heartbeat = max(0.05, min(5.0, self.lease / 3))
        self.poll_interval = poll_interval
        self.id = name or f"{socket.gethostname()}:{os.getpid()}"
        self._say = say or _print_line
        self._backend = Backend.for_config(self.config)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, RunHandle] = {}
        self._controllers: dict[str, Any] = {}
        self._runner: NotebookRunner | None = None
        self._started = time.time()
        self.tasks_run = 0

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Serve the queues until :meth:`stop`; returns once running tasks have ended."""
        self._runner = NotebookRunner(self.config, pool_size=self.workers).start()
        # The runner imports papermill (about 2 s) on its first run: do it before saying
        # the agent is ready, so that its first task starts as fast as the others.
        importlib.import_module("papermill")
        self._beat()
        self._say(
            f"agent {self.id} serves {', '.join(map(repr, self.queues))} with "
            f"{self.workers} worker{'s' if self.workers > 1 else ''} "
            f"(store {self._backend.store.url})"
        )
        beat = threading.Thread(target=self._heartbeat_loop, name="agent heartbeat", daemon=True)
        beat.start()
        slots = [
            threading.Thread(target=self._serve, name=f"agent worker {n}", daemon=True)
            for n in range(self.workers)
        ]
        for slot in slots:
            slot.start()
        try:
            while any(slot.is_alive() for slot in slots):
                for slot in slots:
                    slot.join(0.2)
        finally:
            self._stopping.set()
            beat.join()
            self._beat(status="stopped")
            runner, self._runner = self._runner, None
            if runner is not None:
                runner.close()
            self._say(f"agent {self.id} stopped after {self.tasks_run} task(s)")

    def stop(self, abort: str | None = None) -> None:
        """Take no more tasks; with ``abort`` (a reason), also stop the running ones."""
        self._stopping.set()
        if abort is not None:
            with self._lock:
                handles = list(self._running.items())
                controllers = list(self._controllers.values())
            for _, handle in handles:
                handle.abort(abort)
            for pipe in controllers:
                pipe.abort(abort)

    @property
    def running(self) -> list[str]:
        """Ids of the tasks this agent runs now."""
        with self._lock:
            return list(self._running)

    # -- taking and running tasks ------------------------------------------------------

    def _serve(self) -> None:
        store = self._backend.store
        pause = 0.005
        while not self._stopping.is_set():
            record: TaskRecord | None = None
            try:
                if store.has_queued(self.queues):
                    record = store.dequeue_task(self.queues, self.id, self.lease)
            except ClearnbError as exc:
                self._say(f"cannot reach the store: {exc}; trying again")
                self._stopping.wait(1.0)
                continue
            if record is None:
                self._stopping.wait(pause)
                pause = min(pause * 2, self.poll_interval)
                continue
            pause = 0.005
            self._run(record)

    def _run(self, record: TaskRecord) -> None:
        store = self._backend.store
        handle = RunHandle()
        with self._lock:
            self._running[record.id] = handle
        kind = {"controller": "pipeline", "function": "function step"}.get(record.task_type, "task")
        waited = time.time() - (record.enqueued or time.time())
        self._say(
            f"{kind} {record.id} {record.name!r} from queue {record.queue!r} "
            f"(waited {waited:.2f} s)"
        )
        began = time.monotonic()
        try:
            record = store.update_task(
                record.id, runtime={**record.runtime, "agent": self.id, "agent_queue": record.queue}
            )
            if record.task_type == "controller":
                status = self._run_controller(record)
            else:
                status = self._run_notebook(record, handle)
        except Exception as exc:
            log.exception("agent could not run task %s", record.id)
            status = "failed"
            store.update_task(
                record.id,
                status="failed",
                completed=time.time(),
                error={
                    "reason": f"the agent {self.id} could not run it: {type(exc).__name__}: {exc}",
                    "ename": type(exc).__name__,
                    "traceback": traceback.format_exception(exc),
                },
            )
        finally:
            with self._lock:
                self._running.pop(record.id, None)
                self._controllers.pop(record.id, None)
            store.release_task(record.id, self.id)
        self.tasks_run += 1
        line = f"{kind} {record.id} {record.name!r} {status} in {time.monotonic() - began:.2f} s"
        if status != "completed":
            reason = (store.get_task(record.id).error or {}).get("reason")
            line += f": {reason}" if reason else ""
        self._say(line)

    def _run_notebook(self, record: TaskRecord, handle: RunHandle) -> str:
        if not record.notebook or "injected" not in record.runtime:
            raise ClearnbError(
                "the task was put in the queue without being prepared; enqueue it with "
                "Task.enqueue(...) or `clearnb task enqueue ID --queue Q`"
            )
        assert self._runner is not None
        limit = record.runtime.get("time_limit")
        task = self._runner.run_prepared(
            reachable_notebook(self._backend, record),
            time_limit=float(limit) if limit else None,
            memory_limit=record.runtime.get("memory_limit"),
            handle=handle,
        )
        return task.status

    def _run_controller(self, record: TaskRecord) -> str:
        from clearnb.pipeline.controller import PipelineController

        definition = record.runtime.get("definition")
        if not isinstance(definition, dict):
            raise ClearnbError(
                "the pipeline task holds no pipeline definition; enqueue a pipeline with "
                "pipe.start(queue=...)"
            )
        pipe = PipelineController.from_definition(definition, config=self.config, task=record.id)
        with self._lock:
            self._controllers[record.id] = pipe
        pipe.start(wait=True)
        pipe.stop()
        status = self._backend.store.get_task(record.id).status
        return status if status in FINAL_STATUSES else "failed"

    # -- heartbeat ---------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        store = self._backend.store
        while not self._stopping.wait(self.heartbeat) or self.running:
            try:
                self._beat()
                answers = store.renew_leases(self.id, self.running, self.lease)
                for task_id, reason in answers.items():
                    if reason is not None:
                        self._abort(task_id, reason)
                for expired in store.expire_leases():
                    self._say(
                        f"task {expired.id} {expired.name!r} failed: "
                        f"{(expired.error or {}).get('reason')}"
                    )
            except ClearnbError as exc:
                self._say(f"heartbeat failed: {exc}")
            if self._stopping.is_set():
                time.sleep(min(self.heartbeat, 0.2))

    def _abort(self, task_id: str, reason: str) -> None:
        with self._lock:
            handle = self._running.get(task_id)
            pipe = self._controllers.get(task_id)
        if pipe is not None:
            pipe.abort(reason)
        elif handle is not None and handle.reason is None:
            self._say(f"stopping task {task_id}: {reason}")
            handle.abort(reason)

    def _beat(self, status: str | None = None) -> None:
        running = self.running
        self._backend.store.put_worker(
            WorkerRecord(
                id=self.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                queues=self.queues,
                capacity=self.workers,
                running=running,
                status=status or ("busy" if running else "idle"),
                started=self._started,
                last_seen=time.time(),
            )
        )


def _print_line(text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {text}", file=sys.stdout, flush=True)

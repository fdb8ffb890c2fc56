"""Send tasks to queues that agents serve, and follow them until they end.

A queued task is a row of the store with status ``queued`` and a queue name; an agent
(:mod:`clearnb.executors.agent`) takes it, runs it with the same runner as local runs and
keeps a lease on it while it runs. Everything here talks to the store only, so it works
from any process or machine that reaches the store.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from clearnb.backend import Backend
from clearnb.execution import events as run_events
from clearnb.execution.events import EventCallback, RunEvent
from clearnb.executors.base import StepRequest
from clearnb.store.records import FINAL_STATUSES, TaskRecord, WorkerRecord

if TYPE_CHECKING:
    from clearnb.execution.runner import RunHandle
    from clearnb.store import Store
    from clearnb.task import Task

log = logging.getLogger(__name__)

AGENT_SEEN_WITHIN = 30.0
"""Seconds since its last heartbeat within which an agent counts as serving its queues."""
WAIT_INTERVAL = 0.1
"""Seconds between two looks at the store while following a queued task."""
UNSERVED_REMINDER = 30.0
"""Seconds between two warnings about a queue that no agent serves."""
SOURCE_ARTIFACT = "source_notebook"
"""The notebook as it was when the task was queued, for agents that cannot read its path."""


class QueueWarning(UserWarning):
    """A task waits in a queue that no agent serves."""


def agents_serving(
    store: Store, queue: str, within: float = AGENT_SEEN_WITHIN
) -> list[WorkerRecord]:
    """Agents seen in the last ``within`` seconds that serve ``queue``."""
    seen = store.get_workers(seen_since=time.time() - within)
    return [worker for worker in seen if queue in worker.queues and worker.status != "stopped"]


def unserved_message(queue: str) -> str:
    """What a user is told when a task waits in a queue nobody serves."""
    return (
        f"no agent serves queue {queue!r}: the task stays queued until one does. "
        f"Start one where the store is reachable: clearnb agent --queue {queue}"
    )


def enqueue(
    backend: Backend,
    task_id: str,
    queue: str,
    *,
    force: bool = False,
    runtime: Mapping[str, Any] | None = None,
    warn: bool = True,
) -> TaskRecord:
    """Put task ``task_id`` in ``queue``; returns its record (status ``queued``).

    A notebook task that was never prepared (a clone, a task registered interactively) is
    validated and prepared first, so bad parameters are refused here and not on an agent.
    ``runtime`` adds facts for the agent (e.g. ``time_limit``). ``force`` re-runs a task
    that already ended. With ``warn``, a queue that no agent serves gives a
    :class:`QueueWarning`.
    """
    store = backend.store
    record = store.get_task(task_id)
    if force and record.status in FINAL_STATUSES:
        record = store.update_task(task_id, status="created", error=None, completed=None)
    if record.task_type != "controller" and record.status == "created":
        if record.runtime.get("template"):  # the task enqueued is the one that runs
            runtime = {k: v for k, v in record.runtime.items() if k != "template"}
            record = store.update_task(record.id, runtime=runtime)
        if "injected" not in record.runtime:
            from clearnb.execution.runner import prepare_run

            record = prepare_run(backend, task=record.id, check_kernel_installed=False)
    if runtime:
        record = store.update_task(record.id, runtime={**record.runtime, **runtime})
    ship_notebook(backend, record)
    record = store.enqueue_task(record.id, queue, force=force)
    if warn and not agents_serving(store, queue):
        warnings.warn(unserved_message(queue), QueueWarning, stacklevel=3)
    return record


def ship_notebook(backend: Backend, record: TaskRecord) -> None:
    """Store the task's notebook with it, so an agent on any machine can run it."""
    if record.task_type == "controller" or not record.notebook:
        return
    from pathlib import Path

    source = Path(record.notebook)
    if source.is_file():
        stored = backend.artifacts.save(
            record.id, SOURCE_ARTIFACT, source, codec="file", metadata={"path": str(source)}
        )
        backend.store.put_artifact(stored)


def follow(
    backend: Backend,
    task_id: str,
    *,
    until: Collection[str] = FINAL_STATUSES,
    timeout: float | None = None,
    interval: float = WAIT_INTERVAL,
    on_event: EventCallback | None = None,
    handle: RunHandle | None = None,
    on_unserved: Callable[[str], None] | None = None,
) -> TaskRecord:
    """Wait until task ``task_id`` has one of the statuses ``until``; returns its record.

    Events the agent stores for the task are passed to ``on_event`` as they appear;
    ``handle.abort()`` asks for the task to be stopped. While the task waits in a queue
    that no agent serves, ``on_unserved(message)`` is called now and then. Leases of dead
    agents are expired on the way, so a task never waits on a dead agent. Returns the
    latest record when ``timeout`` (seconds) runs out.
    """
    store = backend.store
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    abort_sent = False
    next_unserved_check = time.monotonic()
    while True:
        record = store.get_task(task_id)
        lease = record.lease_expires
        if record.status == "running" and lease is not None and lease < time.time():
            store.expire_leases()  # its agent (or controller) stopped renewing: it failed
            record = store.get_task(task_id)
        if on_event is not None:
            for event in store.get_events(task_id, after=seen):
                seen = event.seq
                try:
                    on_event(RunEvent(event.kind, task_id, dict(event.payload), event.timestamp))
                except Exception:
                    log.warning("event callback raised", exc_info=True)
        if record.status in until:
            return record
        if handle is not None and handle.reason is not None and not abort_sent:
            store.request_abort(task_id, handle.reason)
            abort_sent = True
            continue
        now = time.monotonic()
        if record.status == "queued" and record.queue and now >= next_unserved_check:
            if not agents_serving(store, record.queue):
                message = unserved_message(record.queue)
                log.warning("task %s (%s): %s", task_id, record.name, message)
                if on_unserved is not None:
                    on_unserved(message)
                next_unserved_check = now + UNSERVED_REMINDER
            else:
                next_unserved_check = now + 1.0
        if deadline is not None and now >= deadline:
            return record
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))


class QueueExecutor:
    """Runs a step by enqueueing it and following it: the controller's remote executor."""

    def __init__(self, backend: Backend, queue: str) -> None:
        self.backend = backend
        self.queue = queue

    def execute(self, request: StepRequest) -> Task:
        """Run ``request`` on an agent of the queue; return its Task once it has ended."""
        from clearnb.execution.runner import prepare_run
        from clearnb.task import Task

        record = prepare_run(
            self.backend,
            request.notebook,
            request.overrides,
            project_name=request.project_name,
            task_name=request.task_name,
            task=request.template,
            tags=request.tags,
            parent=request.parent,
            runtime={
                **request.runtime,
                "time_limit": request.time_limit,
                "memory_limit": request.memory_limit,
            },
            cache_key=request.cache_key,
            check_kernel_installed=False,
        )
        handle = request.handle
        if handle is not None and handle.reason is not None:
            final = self.backend.store.update_task(
                record.id, status="aborted", error={"reason": f"aborted: {handle.reason}"}
            )
            return Task._from_record(final, self.backend)
        ship_notebook(self.backend, record)
        self.backend.store.enqueue_task(record.id, self.queue)
        if request.on_event is not None:
            request.on_event(RunEvent(run_events.TASK_QUEUED, record.id, {"queue": self.queue}))
        final = follow(
            self.backend,
            record.id,
            on_event=request.on_event,
            handle=handle,
            on_unserved=request.on_unserved,
        )
        return Task._from_record(final, self.backend)

    def close(self) -> None:
        """Nothing to release: the queue lives in the store."""

"""The controller's remote executor: a step is sent to a queue that agents serve, and followed.

Preparing, enqueueing and following a task need only the store; they are
:mod:`clearnb.dispatch`'s, and named here too. A queued task is taken by an agent
(:mod:`clearnb.executors.agent`), which runs it with the same runner as local runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from clearnb import dispatch
from clearnb import events as run_events
from clearnb.backend import Backend
from clearnb.dispatch import (
    AGENT_SEEN_WITHIN,
    SOURCE_ARTIFACT,
    UNSERVED_REMINDER,
    WAIT_INTERVAL,
    QueueWarning,
    agents_serving,
    enqueue,
    prepare_run,
    ship_notebook,
    unserved_message,
)
from clearnb.events import EventCallback, RunEvent
from clearnb.executors.base import StepRequest
from clearnb.store.records import FINAL_STATUSES, EventRecord, TaskRecord
from clearnb.task import Task

if TYPE_CHECKING:
    from clearnb.execution.runner import RunHandle

__all__ = [
    "AGENT_SEEN_WITHIN",
    "SOURCE_ARTIFACT",
    "UNSERVED_REMINDER",
    "WAIT_INTERVAL",
    "QueueExecutor",
    "QueueWarning",
    "agents_serving",
    "enqueue",
    "follow",
    "ship_notebook",
    "unserved_message",
]


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
    watch: Callable[[TaskRecord], bool] | None = None,
    pause: Callable[[float], object] = time.sleep,
) -> TaskRecord:
    """Wait until task ``task_id`` has one of the statuses ``until``; returns its record.

    Events the agent stores for the task are passed to ``on_event`` as they appear;
    ``handle.abort()`` asks for the task to be stopped. The rest (``watch``, ``pause``) is
    :func:`clearnb.dispatch.follow`'s.
    """

    def forward(event: EventRecord) -> None:
        assert on_event is not None
        on_event(RunEvent(event.kind, task_id, dict(event.payload), event.timestamp))

    return dispatch.follow(
        backend,
        task_id,
        until=until,
        timeout=timeout,
        interval=interval,
        on_event=None if on_event is None else forward,
        abort=handle,
        on_unserved=on_unserved,
        watch=watch,
        pause=pause,
    )


class QueueExecutor:
    """Runs a step by enqueueing it and following it: the controller's remote executor."""

    def __init__(self, backend: Backend, queue: str) -> None:
        self.backend = backend
        self.queue = queue

    def execute(self, request: StepRequest) -> Task:
        """Run ``request`` on an agent of the queue; return its Task once it has ended."""
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
            strict=request.strict,
        )
        handle = request.handle
        if handle is not None and handle.reason is not None:
            final = self.backend.store.update_task(
                record.id, status="aborted", error={"reason": f"aborted: {handle.reason}"}
            )
            return Task.from_record(final, self.backend)
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
        return Task.from_record(final, self.backend)

    def close(self) -> None:
        """Nothing to release: the queue lives in the store."""

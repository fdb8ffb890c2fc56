"""Changing a task's status, as ClearML spells it: marks, queues, and waiting for an end.

Part of :class:`clearnb.task.Task`. Every status may follow every other here (a draft can
be marked completed, an aborted task started again), so ``force`` has nothing to force
past except for a task running on an agent, which ``mark_stopped`` otherwise only asks to
stop. With ``ignore_errors`` (ClearML's default) a mark that cannot be written (the task
was deleted, the store is unreachable) is logged instead of raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from clearnb import dispatch
from clearnb.backend import Backend
from clearnb.errors import ClearnbError, TaskFailedError
from clearnb.taskfacts import TaskFacts

if TYPE_CHECKING:
    from clearnb.task import Task

log = logging.getLogger(__name__)

T = TypeVar("T", bound=TaskFacts)

__all__ = ["StatusChanges", "TaskStatusEnum", "end"]


class TaskStatusEnum:
    """Status names of a task (ClearML's names mapped to clearnb's)."""

    created = "created"
    queued = "queued"
    running = "running"
    in_progress = "running"
    completed = "completed"
    failed = "failed"
    aborted = "aborted"
    stopped = "aborted"


def end(
    task: TaskFacts,
    status: str,
    error: dict[str, Any] | None,
    facts: dict[str, Any] | None = None,
) -> None:
    """Record that ``task`` ended with ``status`` (and ``error``); ``facts`` are runtime
    keys to set with it. What the task still buffers is written first."""
    task.flush()
    store = task.backend.store
    if facts:
        store.merge_runtime(task.id, facts, status=status, error=error, completed=time.time())
    else:
        store.update_task(task.id, status=status, error=error, completed=time.time())
    task.reload()


class StatusChanges(TaskFacts):
    """``mark_*``, ``enqueue``, ``dequeue`` and ``wait_for_status`` of a task."""

    def mark_started(self, force: bool = False) -> None:
        """Set status ``running`` (any status may become running here; see the module)."""
        self.backend.store.update_task(self.id, status="running", started=time.time())
        self.reload()

    def mark_completed(
        self, ignore_errors: bool = True, status_message: str | None = None, force: bool = False
    ) -> None:
        """Set status ``completed``; ``status_message`` is kept in the task's runtime."""
        facts = {"status_message": status_message} if status_message else None
        self._mark("completed", None, facts, ignore_errors)

    def mark_failed(
        self,
        ignore_errors: bool = True,
        status_reason: str | None = None,
        status_message: str | None = None,
        force: bool = False,
    ) -> None:
        """Set status ``failed``; the error's ``reason`` is ``status_reason`` and its
        ``message`` ``status_message``."""
        error: dict[str, Any] = {"reason": status_reason or "marked failed"}
        if status_message:
            error["message"] = status_message
        facts = {"status_message": status_message} if status_message else None
        self._mark("failed", error, facts, ignore_errors)

    def mark_stopped(self, force: bool = False, status_message: str | None = None) -> None:
        """Set status ``aborted``. A task running on an agent is asked to stop and the agent
        stops its kernel; with ``force`` it is marked aborted at once (the agent then stops
        its kernel when it next renews its lease)."""
        record = self.reload().record
        reason = status_message or "stopped by the user"
        if record.worker is not None and record.status == "running" and not force:
            self.backend.store.request_abort(self.id, reason)
            self.reload()
            return
        self._mark("aborted", {"reason": status_message or "stopped"}, None, ignore_errors=True)

    def _mark(
        self,
        status: str,
        error: dict[str, Any] | None,
        facts: dict[str, Any] | None,
        ignore_errors: bool,
    ) -> None:
        try:
            end(self, status, error, facts)
        except ClearnbError as exc:
            if not ignore_errors:
                raise
            log.warning("could not mark task %s %s: %s", self.id, status, exc)

    # -- queues ------------------------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        task: Task | str,
        queue_name: str | None = None,
        queue_id: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Send ``task`` to a queue; an agent serving it runs it (``clearnb agent``).

        The task must be a draft (``Task.clone``, ``Task.create``) or, with ``force``, a
        task that ended, which is reset. Bad parameters are refused here, before queueing.
        Warns (:class:`~clearnb.dispatch.QueueWarning`) if no agent serves the queue.
        """
        name = queue_name or queue_id
        if not name:
            raise ClearnbError(
                "Task.enqueue needs a queue: Task.enqueue(task, queue_name='default')"
            )
        backend = Backend.for_config() if isinstance(task, str) else task.backend
        task_id = task if isinstance(task, str) else task.id
        record = dispatch.enqueue(backend, task_id, name, force=force)
        if not isinstance(task, str):
            task.reload()
        return {"queued": 1, "task": record.id, "queue": name, "status": record.status}

    @classmethod
    def dequeue(cls, task: Task | str) -> dict[str, Any]:
        """Take a queued ``task`` out of its queue: it becomes a draft (``created``) again.

        A task that is not queued is refused with a
        :class:`~clearnb.errors.StoreError` saying what it is. Returns ClearML's answer:
        ``{"dequeued": 1, "updated": 1, "fields": {"status": "created", ...}}``.
        """
        backend = Backend.for_config() if isinstance(task, str) else task.backend
        task_id = task if isinstance(task, str) else task.id
        queue = backend.store.get_task(task_id).queue
        record = backend.store.remove_from_queue(task_id)
        if not isinstance(task, str):
            task.reload()
        return {
            "dequeued": 1,
            "updated": 1,
            "fields": {
                "status": record.status,
                "last_update": record.last_update,
                "execution.queue": None,
                "previous_queue": queue,
            },
        }

    def wait_for_status(
        self: T,
        status: Iterable[str] = ("completed", "aborted"),
        raise_on_status: Iterable[str] | None = ("failed",),
        check_interval_sec: float = 0.5,
        timeout: float | None = None,
    ) -> T:
        """Wait until the task reaches one of ``status``; returns it, reloaded.

        Reaching one of ``raise_on_status`` raises :class:`TaskFailedError` with the
        reason. ``timeout`` (seconds) raises :class:`TimeoutError` when it runs out.
        """
        wanted = {TaskStatusEnum.__dict__.get(s, s) for s in status}
        raising = {TaskStatusEnum.__dict__.get(s, s) for s in raise_on_status or ()}
        record = dispatch.follow(
            self.backend,
            self.id,
            until=wanted | raising,
            timeout=timeout,
            interval=check_interval_sec,
        )
        self.reload()
        if record.status in raising:
            reason = (record.error or {}).get("reason", record.status)
            raise TaskFailedError(
                f"Task {record.id} ({record.name}) ended {record.status}: {reason}",
                task_id=record.id,
                error=record.error,
            )
        if record.status not in wanted:
            raise TimeoutError(
                f"Task {record.id} ({record.name}) is still {record.status} after {timeout:g} s"
            )
        return self

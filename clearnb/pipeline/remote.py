"""A controller sent to a queue, and following its run from here.

``start(queue=...)`` stores the pipeline's definition (portable: function steps carry
their source) in a new controller Task and enqueues it; an agent serving the queue builds
the pipeline from it and runs it. Here, :class:`RemoteRun` follows that run through the
store: the events the remote controller stored are applied to the local steps and told
to the local listeners, so the widget and callbacks of listeners see the same sequence of
statuses as for a run in this process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clearnb.backend import Backend
from clearnb.errors import TaskNotFoundError
from clearnb.events import STEP_STATUS, PipelineEvent, from_payload
from clearnb.pipeline.drafts import controller_record
from clearnb.pipeline.node import StepJob
from clearnb.pipeline.persistence import RunRecorder
from clearnb.pipeline.spec import PipelineSpec
from clearnb.pipeline.transitions import RunState
from clearnb.status import PENDING, QUEUED, RUNNING, STEP_FINISHED, TASK_FINAL
from clearnb.store import pipelines as runs
from clearnb.store.records import TaskRecord
from clearnb.task import Task

FOLLOW_INTERVAL = 0.2
"""Seconds between two looks at a run followed through the store."""


def send(
    backend: Backend,
    spec: PipelineSpec,
    *,
    force: bool,
    callbacks: Sequence[Callable[..., Any] | None],
    tags: list[str],
    queue_name: str,
    runtime: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> TaskRecord:
    """Create the controller Task holding ``spec`` (portable), named ``name`` (the
    pipeline's by default), and put it in ``queue_name``.

    Callbacks run in the process that defines them, so a pipeline with any is refused.
    """
    from clearnb.executors.queue import enqueue

    record = controller_record(
        spec, force=force, callbacks=callbacks, tags=tags, runtime=runtime, name=name
    )
    backend.store.create_task(record)
    return enqueue(backend, record.id, queue_name)


class RemoteRun:
    """Follows a pipeline run by a controller elsewhere, through the store."""

    def __init__(self, backend: Backend, task_id: str, state: RunState) -> None:
        self.backend = backend
        self.task_id = task_id
        self.state = state
        self._seen = 0
        self._lock = threading.Lock()

    @classmethod
    def send(
        cls,
        backend: Backend,
        spec: PipelineSpec,
        state: RunState,
        recorder: RunRecorder,
        queue_name: str,
        force: bool,
        callbacks: Sequence[Callable[..., Any] | None],
        tags: list[str],
    ) -> RemoteRun:
        """Send ``spec`` to ``queue_name`` and follow its run in ``state`` from now on."""
        record = send(
            backend,
            spec,
            force=force,
            callbacks=callbacks,
            tags=tags,
            queue_name=queue_name,
            runtime=recorder.runtime,
            name=recorder.task_name(),
        )
        recorder.adopt(record.id)
        state.detach()  # the agent's controller stores the run; this side follows
        state.set_pipeline_status(QUEUED)
        return cls(backend, record.id, state)

    def poll(self) -> TaskRecord:
        """Apply the events stored since the last look; returns the Task's record."""
        store = self.backend.store
        with self._lock:
            record = store.get_task(self.task_id)
            lease = record.lease_expires
            if record.status == "running" and lease is not None and lease < time.time():
                store.expire_leases()  # the agent running the controller stopped renewing
                record = store.get_task(self.task_id)
            for stored in store.get_events(self.task_id, after=self._seen):
                self._seen = stored.seq
                event = from_payload(stored.kind, dict(stored.payload), stored.timestamp)
                if event is not None:
                    self._attach_job(event)
                    self.state.apply(event)
            if record.status in TASK_FINAL:
                runs.recover(store, self.task_id)
                record = store.get_task(self.task_id)
                document = runs.run_document(record) or {}
                self.state.catch_up({**document, "status": pipeline_status(record)})
        return record

    def _attach_job(self, event: PipelineEvent) -> None:
        """Give a step that ended its job (its Task), as a local run does, before the
        listeners hear of the end."""
        node = self.state.nodes.get(event.step or "")
        executed = event.payload.get("executed")
        if node is None or event.kind != STEP_STATUS or event.status not in STEP_FINISHED:
            return
        if isinstance(executed, str) and (node.run.job is None or node.run.executed != executed):
            with contextlib.suppress(TaskNotFoundError):
                record = self.backend.store.get_task(executed)
                node.run.job = StepJob(Task.from_record(record, self.backend))

    def follow(self, timeout: float | None = None) -> TaskRecord:
        """Wait until the run ends (or ``timeout`` seconds pass); returns the last record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.poll()
            if record.status in TASK_FINAL:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                return record
            time.sleep(FOLLOW_INTERVAL)


def pipeline_status(record: TaskRecord) -> str:
    """The status of the pipeline run by the controller Task ``record``."""
    document = runs.run_document(record) or {}
    waiting = {"queued": QUEUED, "created": PENDING, "running": RUNNING}
    return waiting.get(record.status, document.get("status") or record.status)

"""The run's own Task: opened, leased, written, closed; and the runs it may resume.

A pipeline run is a controller Task. While the run goes on here it holds a lease on that
Task (so anyone reading the store sees a controller killed on any machine as gone once the
lease expires, and an abort asked for in the store reaches the run), its run document is
rewritten at every change (:mod:`clearnb.store.pipelines` owns that document), and every
event is stored with it before listeners hear of it. Resuming reads an earlier run of the
same pipeline, settling it first if its controller died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clearnb.backend import Backend
from clearnb.config import TASK_ID_ENV
from clearnb.errors import ClearnbError, PipelineError, TaskNotFoundError
from clearnb.events import PipelineEvent, to_payload
from clearnb.pipeline.spec import NOTEBOOK, PipelineSpec, StepSpec
from clearnb.processes import controller_gone, controller_identity
from clearnb.status import ABORTED, COMPLETED, FAILED, SUCCEEDED, TASK_FINAL
from clearnb.store import Store
from clearnb.store import pipelines as runs
from clearnb.store.queues import CONTROLLER_WORKER_PREFIX
from clearnb.store.records import EventRecord, TaskRecord
from clearnb.task import Task

log = logging.getLogger(__name__)

CONTROLLER_LEASE = 60.0
"""Seconds a running controller's lease on its Task lasts without renewal: a controller
killed on any machine is seen as gone once it expires."""
CONTROLLER_RENEW = 2.0
"""Seconds between two renewals of the controller's lease (and looks for an abort request)."""


RESUMED_BY = "resumed_by"
"""Runtime key of a run naming the run that resumes it (and that run's controller)."""


class _ClaimChanged(Exception):
    """The resume claim changed between reading it and setting it."""


def _process_text(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "controller unknown"
    return f"controller pid {identity.get('pid')} on {identity.get('host')}"


class RunRecorder:
    """Keeps one pipeline's Task: the run document, its events, its lease, its end."""

    def __init__(self, backend: Backend, project: str, name: str, tags: list[str]) -> None:
        self.backend = backend
        self.project = project
        self.name = name
        self.tags = tags
        self.task: Task | None = None
        self.attached = False
        """True when the Task is the run of the notebook this controller runs in."""
        self.runs = 0
        """Runs recorded so far; every run after the first is its own Task."""
        self.runtime: dict[str, Any] = {}
        """Facts every run's Task holds in its runtime (configuration objects, arguments
        recorded for compatibility), by key."""
        self.numbered = False
        """Name the pipeline's Task ``name #N`` when N-1 pipelines of that name exist in
        the project (ClearML's ``add_run_number``)."""
        self.own_task = False
        """Record the run in a Task of its own even inside a notebook clearnb runs (that
        notebook's Task becomes its parent), for pipelines launched side by side."""
        self._lease_holder: str | None = None
        self._lease_due = 0.0

    @property
    def store(self) -> Store:
        """The metadata store."""
        return self.backend.store

    def ensure_task(self) -> Task:
        """The pipeline's Task: the notebook's own run when clearnb runs this notebook,
        else a new controller Task (created on first use)."""
        if self.task is None:
            attached = os.environ.get(TASK_ID_ENV)
            if attached and not self.own_task:
                with contextlib.suppress(TaskNotFoundError):
                    self.task = Task.init()
                    self.attached = True
                    for key, value in self.runtime.items():
                        self._merge_runtime(key, value)
            if self.task is None:
                parent = attached if attached and self.own_task else None
                self.task = self.new_task(parent=parent)
                name = self.task_name(self.task.record)
                if name != self.task.name:
                    self.store.update_task(self.task.id, name=name)
                    self.task.reload()
        return self.task

    def task_name(self, record: TaskRecord | None = None) -> str:
        """The name of the run's Task ``record`` (None: of one not yet stored): the
        pipeline's, numbered ``#N`` if ``numbered`` and N-1 controller Tasks of that name
        (numbered or not) were created in the project before it. Counting only earlier
        ones keeps the numbers apart for pipelines started at the same time."""
        if not self.numbered:
            return self.name
        pattern = re.compile(rf"^{re.escape(self.name)}( #\d+)?$")
        earlier = [
            other
            for other in self.store.find_tasks(project=self.project, task_type="controller")
            if pattern.match(other.name)
            and (record is None or (other.created, other.id) < (record.created, record.id))
        ]
        return f"{self.name} #{len(earlier) + 1}" if earlier else self.name

    def new_task(self, parent: str | None = None, name: str | None = None) -> Task:
        """A new controller Task for this pipeline (each run after the first is one)."""
        record = TaskRecord(
            project=self.project,
            name=name or self.name,
            task_type="controller",
            status="created",
            parent=parent,
            tags=list(self.tags),
            runtime=dict(self.runtime),
        )
        return Task.from_record(self.store.create_task(record), self.backend)

    def keep_runtime(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key`` of the runtime of the pipeline's Task (merged, by
        name, with what it holds there, once there is a Task) and of every later run's."""
        self.runtime[key] = dict(value)
        if self.task is not None:
            self._merge_runtime(key, value)

    def _merge_runtime(self, key: str, value: dict[str, Any]) -> None:
        assert self.task is not None
        self.store.update_runtime(self.task.id, key, lambda stored: {**(stored or {}), **value})
        self.task.reload()

    def adopt(self, task_id: str) -> Task:
        """Use the existing controller Task ``task_id`` (the one an agent took from a queue)."""
        self.task = Task.from_record(self.store.get_task(task_id), self.backend)
        self.attached = False
        return self.task

    def store_draft(self, record: TaskRecord) -> Task:
        """Make the pipeline's Task the draft ``record`` describes (status ``created``):
        the Task itself while it is an unused draft, else a new one (a child of it)."""
        task = self.task
        if task is not None and not self.attached and not self.runs and task.status == "created":
            held = self.store.get_task(task.id).runtime
            self.store.update_task(
                task.id,
                parameters=record.parameters,
                tags=record.tags,
                runtime={**held, **record.runtime},
            )
            return task.reload()
        record.parent = task.id if task is not None else None
        record.name = self.task_name()
        self.store.create_task(record)
        self.runs = 0  # the draft is the Task the next run here uses
        return self.adopt(record.id)

    def start_run(self) -> None:
        """A run begins: the first uses the pipeline's Task, later ones get their own."""
        if self.runs:
            self.next_run()
        self.runs += 1

    def next_run(self) -> None:
        """Give the next run its own Task, a child of the last one."""
        if self.task is not None:
            self.task = self.new_task(parent=self.task.id, name=self.task.name)
            self.attached = False

    def open(self, sections: Mapping[str, Mapping[str, Any]], started: float) -> None:
        """Mark the Task a running controller with the pipeline's arguments."""
        task = self.ensure_task()
        fields: dict[str, Any] = {
            "task_type": "controller",
            "parameters": {**self.store.get_task(task.id).parameters, **sections},
        }
        if self.attached:  # the notebook's own run becomes the pipeline's Task
            fields.update(project=self.project, name=self.task_name(task.record))
        else:
            fields.update(status="running", started=started, completed=None, error=None)
        self.store.update_task(task.id, **fields)
        task.reload()

    def write(self, document: Mapping[str, Any]) -> None:
        """Store the run document (a failure is logged: the run goes on)."""
        if self.task is None:
            return
        try:
            runs.write_run(self.store, self.task.id, document)
        except Exception:
            log.warning("could not store the state of pipeline %s", self.name, exc_info=True)

    def record_event(self, event: PipelineEvent) -> None:
        """Store ``event`` with the pipeline's Task (before listeners hear of it)."""
        if self.task is None:
            return
        try:
            self.store.add_event(
                EventRecord(self.task.id, event.kind, to_payload(event), timestamp=event.timestamp)
            )
        except Exception:
            log.warning("could not store an event of pipeline %s", self.name, exc_info=True)

    def keep_lease(self) -> str | None:
        """Hold (and renew) a lease on the Task while the run goes on here.

        Returns the reason of an abort asked for in the store (``clearnb task abort``), if
        any. A Task already leased (by the agent running this controller) or attached to a
        notebook's run is left to its holder.
        """
        now = time.monotonic()
        if self.task is None or self.attached or now < self._lease_due:
            return None
        self._lease_due = now + CONTROLLER_RENEW
        try:
            if self._lease_holder is None:
                if self.store.get_task(self.task.id).worker is not None:
                    self._lease_holder = ""
                    return None
                self._lease_holder = (
                    f"{CONTROLLER_WORKER_PREFIX}{socket.gethostname()}:{os.getpid()}"
                )
                self.store.update_task(
                    self.task.id,
                    worker=self._lease_holder,
                    lease_expires=time.time() + CONTROLLER_LEASE,
                )
                return None
            if not self._lease_holder:
                return None
            answer = self.store.renew_leases(self._lease_holder, [self.task.id], CONTROLLER_LEASE)
            reason = answer.get(self.task.id)
            return str(reason) if reason is not None else None
        except ClearnbError:
            log.warning("could not renew the lease of pipeline %s", self.name, exc_info=True)
            return None

    def close(self, status: str, ended: float | None, error: dict[str, Any] | None) -> None:
        """End the Task ``completed``, ``aborted`` or ``failed`` and release its lease."""
        if self.task is None or self.attached:
            return
        released: dict[str, Any] = {}
        if self._lease_holder:
            released = {"worker": None, "lease_expires": None, "abort_requested": None}
        self._lease_holder, self._lease_due = None, 0.0
        final = {COMPLETED: "completed", ABORTED: "aborted"}.get(status, FAILED)
        self.store.update_task(self.task.id, status=final, completed=ended, error=error, **released)
        self.task.reload()

    # -- earlier runs ----------------------------------------------------------------------

    def earlier_run(self, resume: bool | str, *, required: bool) -> TaskRecord | None:
        """The run to resume: ``resume`` as a task id, or this pipeline's newest other run.

        A run whose controller died is settled first. With ``required``, no earlier run is
        an error that says so.
        """
        if isinstance(resume, str):
            record = self.store.get_task(resume)
        else:
            exclude = self.task.id if self.task is not None else None
            found = runs.find_runs(
                self.store, project=self.project, name=self.name, exclude=exclude
            )
            if not found:
                if required:
                    raise PipelineError(
                        f"no earlier run of pipeline {self.name!r} in project {self.project!r} "
                        "to resume; start it without resume"
                    )
                return None
            record = found[0]
        if runs.recover(self.store, record.id):  # its controller died: settle it first
            record = self.store.get_task(record.id)
        return record

    def claim_resume(self, record: TaskRecord) -> None:
        """Mark the run ``record`` as being resumed by this run, or raise
        :class:`PipelineError` naming the run that is resuming it already.

        The claim (``runtime["resumed_by"]``: this run's Task and controller process) is
        set only if the run holds none, or one whose run has ended or whose controller is
        gone: two resumes of one run at once would both run its unfinished steps.
        """
        mine = {"task": self.ensure_task().id, "controller": controller_identity()}
        document = runs.run_document(record) or {}
        if record.status not in TASK_FINAL and not controller_gone(
            document.get(runs.CONTROLLER_KEY)
        ):
            raise PipelineError(
                f"run {record.id} of pipeline {self.name!r} is still running "
                f"({_process_text(document.get(runs.CONTROLLER_KEY))}): a run is resumed once "
                f"it has ended. Wait for it, or stop it (clearnb task abort {record.id}).",
                running=record.id,
            )
        for _ in range(5):
            seen = self.store.get_task(record.id).runtime.get(RESUMED_BY)
            if isinstance(seen, dict) and seen.get("task") != mine["task"] and self._alive(seen):
                raise PipelineError(
                    f"run {record.id} of pipeline {self.name!r} is being resumed already, by "
                    f"run {seen.get('task')} ({_process_text(seen.get('controller'))}). Wait "
                    f"for that run to end (or stop it: clearnb task abort {seen.get('task')}), "
                    "then resume again.",
                    resumed_by=seen.get("task"),
                )

            def claim(current: Any, expected: Any = seen) -> Any:
                if current != expected:
                    raise _ClaimChanged
                return mine

            try:
                self.store.update_runtime(record.id, RESUMED_BY, claim)
                return
            except _ClaimChanged:
                continue  # another resume claimed it meanwhile: look again
        raise PipelineError(f"run {record.id} could not be claimed for resuming; try again")

    def _alive(self, claim: Mapping[str, Any]) -> bool:
        """Whether the run that made ``claim`` goes on (not ended, its controller not gone)."""
        try:
            claimant = self.store.get_task(str(claim.get("task")))
        except TaskNotFoundError:
            return False
        if claimant.status in TASK_FINAL:
            return False
        return not controller_gone(claim.get("controller"))

    def completed_steps(self, record: TaskRecord) -> dict[str, TaskRecord]:
        """The steps of the run ``record`` that completed, with their Tasks, by name."""
        document = runs.run_document(record) or {}
        results: dict[str, TaskRecord] = {}
        for name, state in (document.get("nodes") or {}).items():
            if state.get("status") in SUCCEEDED and state.get("executed"):
                with contextlib.suppress(TaskNotFoundError):
                    done = self.store.get_task(state["executed"])
                    if done.status == "completed":
                        results[name] = done
        return results

    def earlier_results(self, resume: bool | str) -> dict[str, TaskRecord]:
        """The completed steps' Tasks of an earlier run (newest, or ``resume`` as an id)."""
        record = self.earlier_run(resume, required=False)
        return {} if record is None else self.completed_steps(record)


def spec_of_run(store: Store, task_id: str) -> tuple[PipelineSpec, dict[str, Any], TaskRecord]:
    """The definition of the past run ``task_id`` as far as its document tells, the
    document and the run's record (a run whose controller died is settled first).

    Notebook steps come back as steps that can run again; function steps only show.
    """
    task_id = store.resolve_task_id(task_id)
    runs.recover(store, task_id)
    record = store.get_task(task_id)
    document = runs.run_document(record)
    if not document:
        raise PipelineError(
            f"task {task_id} is not a pipeline run (it has no pipeline state); list the "
            "runs with `clearnb pipeline ls`"
        )
    spec = PipelineSpec(document["name"], document["project"], document.get("version"))
    for name in document.get("order") or list(document["nodes"]):
        saved = document["nodes"][name]
        notebook = saved.get("source") if saved.get("kind") == NOTEBOOK else None
        if saved.get("executed"):
            with contextlib.suppress(TaskNotFoundError):
                notebook = store.get_task(saved["executed"]).notebook or notebook
        spec.steps[name] = StepSpec(
            name=name,
            parents=list(saved.get("parents") or []),
            notebook=notebook if notebook and Path(notebook).exists() else None,
            parameters=dict(saved.get("parameters") or {}),
            cache_executed_step=bool(saved.get("cache")),
        )
    return spec, document, record

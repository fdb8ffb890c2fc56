"""Preparing a run of a notebook task, sending it to a queue that agents serve, following it.

A queued task is a row of the store with status ``queued`` and a queue name; an agent
(:mod:`clearnb.executors.agent`) takes it, runs it with the same runner as local runs and
keeps a lease on it while it runs. Everything here talks to the store only, so it works
from any process or machine that reaches the store, and needs no kernel.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from clearnb.artifacts.storage import SOURCE_NOTEBOOK
from clearnb.config import write_private_file
from clearnb.current import in_ipython
from clearnb.errors import ArtifactNotFoundError, ClearnbError
from clearnb.notebook.files import (
    check_kernel,
    code_fingerprint,
    kernel_name_of,
    language_of,
    load_notebook,
)
from clearnb.notebook.parameters import GENERAL, NotebookParameters
from clearnb.notebook.scripts import is_script
from clearnb.store.records import FINAL_STATUSES, EventRecord, TaskRecord, WorkerRecord

if TYPE_CHECKING:
    from clearnb.backend import Backend
    from clearnb.store import Store
    from clearnb.task import Task

log = logging.getLogger(__name__)

AGENT_SEEN_WITHIN = 30.0
"""Seconds since its last heartbeat within which an agent counts as serving its queues."""
WAIT_INTERVAL = 0.1
"""Seconds between two looks at the store while following a queued task."""
UNSERVED_REMINDER = 30.0
"""Seconds between two warnings about a queue that no agent serves."""
SOURCE_ARTIFACT = SOURCE_NOTEBOOK
"""The notebook as it was when the task was queued, for agents that cannot read its path."""


class QueueWarning(UserWarning):
    """A task waits in a queue that no agent serves."""


class ExecutedRemotely(ClearnbError):
    """Stops an interactive notebook after ``execute_remotely`` sent its task to a queue."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class AbortRequest(Protocol):
    """Something that may ask for a followed task to stop (a run handle)."""

    @property
    def reason(self) -> str | None:
        """Why the task should stop, or None while it should go on."""


def prepare_run(
    backend: Backend,
    notebook: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    project_name: str | None = None,
    task_name: str | None = None,
    task: Task | str | None = None,
    tags: Sequence[str] = (),
    parent: str | None = None,
    runtime: Mapping[str, Any] | None = None,
    cache_key: str | None = None,
    check_kernel_installed: bool = True,
    strict: bool = True,
) -> TaskRecord:
    """Validate a run of ``notebook`` (or of the draft ``task``) and record its Task.

    Nothing runs: the notebook is read, the overrides are checked against its declared
    parameters and converted to their types, and the Task is recorded with status
    ``created`` (a draft runs as itself; a template is copied into a new task).
    ``runtime`` adds facts to the task's runtime record; ``cache_key`` is stored with the
    task so that a later identical run can reuse it. ``check_kernel_installed`` refuses a
    notebook whose kernel is not installed here (off for runs sent to another machine).
    ``strict`` refuses an override the notebook does not declare; without it, such a value
    is recorded and injected as given (a pipeline step, as ClearML sets it on the task).
    """
    store = backend.store
    draft: TaskRecord | None = None
    if task is not None:
        draft = store.get_task(task if isinstance(task, str) else task.id)
        if notebook is None:
            notebook = draft.notebook
    if notebook is None:
        raise ClearnbError(
            "No notebook to run: pass a notebook path, or a task that was created from one "
            "(Task.create(..., notebook=path))."
        )
    path = Path(notebook).expanduser().absolute()
    nb = load_notebook(path)
    if check_kernel_installed:
        check_kernel(nb, path.name)
    declared = NotebookParameters.of(nb, draft.parameters if draft else None)
    defaults = declared.defaults()
    merged: dict[str, Any] = {}
    if draft is not None:  # a draft's own values count as overrides where they differ
        for section, values in draft.parameters.items():
            base = defaults.get(section, {})
            merged.update({f"{section}/{k}": v for k, v in values.items() if base.get(k, v) != v})
    merged.update({_qualified(str(k)): v for k, v in (parameters or {}).items()})
    overridden = sorted(merged)
    resolved = declared.resolve(merged, path.name, strict=strict)
    recorded = {s: dict(v) for s, v in defaults.items()}
    for section, values in resolved.items():
        recorded.setdefault(section, {}).update(values)
    facts = {
        **(runtime or {}),
        "overrides": overridden,
        "injected": declared.injected(resolved, connected=is_script(path)),
        "kernel_name": kernel_name_of(nb),
        "language": language_of(nb),
        "code_hash": code_fingerprint(nb),
    }
    if draft is not None and draft.status == "created" and not draft.runtime.get("template"):
        # a draft (a clone) runs as itself; a template is copied into a new task
        return store.update_task(
            draft.id,
            notebook=str(path),
            parameters=recorded,
            runtime={**draft.runtime, **facts},
            cache_key=cache_key,
            **({"name": task_name} if task_name else {}),
            **({"project": project_name} if project_name else {}),
        )
    if draft is None:  # names not given here are the ones Task.init gives, as in ClearML
        given = {"project": project_name, "name": task_name}
        if unnamed := [field for field, value in given.items() if not value]:
            facts["names_from_init"] = unnamed
    record = TaskRecord(
        project=project_name or (draft.project if draft else "default"),
        name=task_name or (draft.name if draft else path.stem),
        notebook=str(path),
        parameters=recorded,
        tags=list(tags) or (list(draft.tags) if draft else []),
        parent=parent or (draft.id if draft else None),
        runtime=facts,
        cache_key=cache_key,
        configuration=dict(draft.configuration) if draft else {},
    )
    created = store.create_task(record)
    if draft is not None:  # a template's run uses the models the template uses, as a clone
        store.copy_task_models(draft.id, created.id, kind="input")
    return created


def _qualified(key: str) -> str:
    return key if "/" in key else f"{GENERAL}/{key}"


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
    source = Path(record.notebook)
    if source.is_file():
        stored = backend.artifacts.save(
            record.id, SOURCE_ARTIFACT, source, codec="file", metadata={"path": str(source)}
        )
        backend.store.put_artifact(stored)


def reachable_notebook(backend: Backend, record: TaskRecord) -> TaskRecord:
    """``record``, its notebook taken from the artifact storage (where
    :func:`ship_notebook` put it) when its path is not on this machine."""
    assert record.notebook is not None
    if Path(record.notebook).is_file():
        return record
    store, artifacts = backend.store, backend.artifacts
    try:
        shipped = store.get_artifact(record.id, SOURCE_ARTIFACT)
    except ArtifactNotFoundError as exc:
        raise ClearnbError(
            f"the notebook {record.notebook} is not on this machine and was not stored "
            "with the task; give the agents the same paths (a shared folder)"
        ) from exc
    folder = backend.config.home / "runs" / record.id / "source"
    local = folder / Path(record.notebook).name
    write_private_file(local, artifacts.local_copy(shipped).read_bytes())
    runtime = {**record.runtime, "notebook_from": shipped.url}
    store.update_task(record.id, runtime=runtime)
    return dataclasses.replace(record, notebook=str(local), runtime=runtime)


def follow(
    backend: Backend,
    task_id: str,
    *,
    until: Collection[str] = FINAL_STATUSES,
    timeout: float | None = None,
    interval: float = WAIT_INTERVAL,
    on_event: Callable[[EventRecord], None] | None = None,
    abort: AbortRequest | None = None,
    on_unserved: Callable[[str], None] | None = None,
    watch: Callable[[TaskRecord], bool] | None = None,
    pause: Callable[[float], object] = time.sleep,
) -> TaskRecord:
    """Wait until task ``task_id`` has one of the statuses ``until``; returns its record.

    Events the agent stores for the task are passed to ``on_event`` as they appear; once
    ``abort.reason`` is set, the task is asked to stop. While the task waits in a queue
    that no agent serves, ``on_unserved(message)`` is called now and then. Leases of dead
    agents are expired on the way, so a task never waits on a dead agent. ``watch`` is
    shown the record at every look while the task has not ended (the executor checks
    what runs it); True means it changed the task, which is looked at again at once.
    ``pause(seconds)`` waits between two looks (an executor that knows when the task ends
    may return early). Returns the latest record when ``timeout`` (seconds) runs out.
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
                    on_event(event)
                except Exception:
                    log.warning("event callback raised", exc_info=True)
        if record.status in until:
            return record
        if abort is not None and abort.reason is not None and not abort_sent:
            store.request_abort(task_id, abort.reason)
            abort_sent = True
            continue
        if watch is not None and watch(record):
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
        pause(interval if deadline is None else max(0.0, min(interval, deadline - now)))


def stop_here(task_id: str, name: str, queue: str | None) -> NoReturn:
    """End this run of a notebook (or script) whose task ``execute_remotely`` sent to
    ``queue`` (None: left a draft, enqueued by nobody yet).

    In IPython the cell stops with :class:`ExecutedRemotely` (the kernel lives on); in a
    script the process exits with status 0.
    """
    what = "notebook" if in_ipython() else "script"
    if queue is None:
        message = (
            f"Task {task_id} ({name}) was left as a draft (status created); send it to a "
            f"queue with `clearnb task enqueue {task_id} --queue default`. The rest of the "
            f"{what} does not run here."
        )
    else:
        message = (
            f"Task {task_id} ({name}) was sent to queue {queue!r}; an agent "
            f"runs the {what} from the start. The rest of it does not run here."
        )
    if in_ipython():
        raise ExecutedRemotely(message, task_id=task_id, queue=queue)
    log.warning(message)
    raise SystemExit(0)

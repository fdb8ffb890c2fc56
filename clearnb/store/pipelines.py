"""The stored document of a pipeline run, and settling a run whose controller is gone.

A pipeline run is a controller Task whose runtime holds the run's document: the pipeline's
name, status and timings, and one entry per step (see :data:`RUN_KEYS` and
:data:`STEP_KEYS`). This module is the document's only reader and writer in the store;
everyone else goes through :func:`run_document`, :func:`write_run`, :func:`update_run` and
:func:`find_runs`. A write replaces the document in one transaction and keeps the Task's
other runtime keys, so no writer loses another's change.

A controller killed mid-run (its kernel killed, its process gone) cannot mark its steps;
whoever sees it end (the runner of the controller notebook) calls :func:`settle`, and
whoever opens the run later (``PipelineController.from_run``, a resume, ``clearnb pipeline
show``) calls :func:`recover`, which settles the run if the process that ran it is gone.
So no step is shown running for ever.

A run records which process controls it (:func:`controller_identity`: host, pid and the
process's start time, so that a reused pid is not taken for the controller). Whether that
process still runs can only be told on the same host; a run controlled from another host
is settled once its Task has ended (an agent's expired lease ends it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from clearnb.errors import TaskNotFoundError
from clearnb.processes import controller_gone
from clearnb.status import (
    ABORTED,
    COMPLETED,
    PENDING,
    PIPELINE_FINAL,
    RUNNING,
    SKIPPED,
    TASK_ACTIVE,
    TASK_FINAL,
)
from clearnb.status import STEP_FINISHED as FINISHED
from clearnb.store.records import TaskRecord
from clearnb.store.sql import Store

RUNTIME_KEY = "pipeline"
"""The key of a Task's runtime that holds its run document."""
CONTROLLER_KEY = "controller"
"""Key of the run document naming the process that controls the run."""
CONTROLLER_TASK_TYPE = "controller"
"""The ``task_type`` of a pipeline run's Task."""

RUN_DOCUMENT = MappingProxyType(
    {
        "name": "the pipeline's name",
        "project": "the pipeline's project",
        "version": "the pipeline's version, or None",
        "status": "the run's status (clearnb.status.PIPELINE_STATUSES)",
        "started": "when the run started (seconds since the epoch), or None",
        "ended": "when the run ended, or None while it goes on",
        "order": "the step names in the order the pipeline lists them",
        "nodes": "every step's entry by step name (STEP_KEYS)",
        "time_limit": "seconds the run may take (set_pipeline_execution_time_limit), if set",
        CONTROLLER_KEY: "host, pid and start time of the process running it (controller_identity)",
    }
)
"""What each key of a run document means."""
RUN_KEYS: tuple[str, ...] = tuple(RUN_DOCUMENT)
"""Every key a run document may have."""

STEP_DOCUMENT = MappingProxyType(
    {
        "name": "the step's name",
        "parents": "names of the steps it waits for",
        "kind": "notebook or function",
        "source": "the notebook path, base task or function name it runs",
        "parameters": "the overrides as the pipeline gives them, ${...} references kept",
        "resolved": "the overrides with their references resolved, as the step received them",
        "status": "the step's status in the run (clearnb.status.STEP_STATUSES)",
        "executed": "id of the Task that ran it (or whose result a cache hit reused), or None",
        "started": "when it started (seconds since the epoch), or None",
        "ended": "when it ended, or None",
        "retries": "how many times it was run again after failing",
        "error": "why it did not complete: {'reason': ...}, or None",
        "warnings": "what was said of its overrides (one it does not declare, set as given)",
        "progress": "live progress of a running step: cell and cells, or why it waits",
        "queue": "the queue it is sent to, or None to run in the controller's process",
        "cache": "whether a result of an earlier run may be reused",
    }
)
"""What each key of one step's entry in a run document means."""
STEP_KEYS: tuple[str, ...] = tuple(STEP_DOCUMENT)
"""Every key of one step's entry."""


def run_document(record: TaskRecord) -> dict[str, Any] | None:
    """The run document of the Task ``record``; None if it is not a pipeline run (yet)."""
    document = record.runtime.get(RUNTIME_KEY)
    return document if isinstance(document, dict) and document else None


def write_run(store: Store, task_id: str, document: Mapping[str, Any]) -> None:
    """Replace the run document of Task ``task_id`` with ``document``, in one transaction.

    The Task's other runtime keys are kept, also those another writer sets meanwhile. A
    key not in :data:`RUN_KEYS` (or, in a step's entry, not in :data:`STEP_KEYS`) is
    refused with a :class:`ValueError`.
    """
    _check_keys(document)
    store.update_runtime(task_id, RUNTIME_KEY, lambda stored: dict(document))


def update_run(
    store: Store, task_id: str, change: Callable[[dict[str, Any]], None]
) -> dict[str, Any] | None:
    """Change the run document of Task ``task_id`` in place with ``change``, in one
    transaction that no other writer of the Task interleaves with; returns the new
    document, or None (and nothing changes) if the Task has none.

    ``change`` runs inside the transaction: it must not use the store. Keys are checked as
    by :func:`write_run`.
    """

    def apply(stored: Any) -> Any:
        if not isinstance(stored, dict) or not stored:
            return stored
        change(stored)
        _check_keys(stored)
        return stored

    return run_document(store.update_runtime(task_id, RUNTIME_KEY, apply))


def find_runs(
    store: Store,
    *,
    project: str | None = None,
    name: str | None = None,
    limit: int = 50,
    exclude: str | None = None,
) -> list[TaskRecord]:
    """Up to ``limit`` pipeline runs (controller Tasks holding a run document), newest
    first: of ``project`` if given, of the pipeline ``name`` if given, not the Task
    ``exclude``."""
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}.")

    def wanted(record: TaskRecord) -> bool:
        document = run_document(record)
        if document is None or record.id == exclude:
            return False
        return name is None or document.get("name") == name

    # Read newest first, more each time, until enough runs are found or no Task is left.
    page = max(2 * limit, 20)
    while True:
        tasks = store.find_tasks(project=project, task_type=CONTROLLER_TASK_TYPE, limit=page)
        runs = [record for record in tasks if wanted(record)]
        if len(runs) >= limit or len(tasks) < page:
            return runs[:limit]
        page *= 4


def settle(store: Store, task_id: str, reason: str) -> bool:
    """Mark the unfinished steps of the pipeline stored with ``task_id`` as ended.

    A step whose Task completed is marked completed (the controller stopped before it
    could say so); other running or queued steps become ``aborted`` (their Tasks too),
    pending ones ``skipped``; the pipeline becomes ``aborted``. Returns True if anything
    changed.
    """
    document = run_document(store.get_task(task_id))
    if document is None or not _unfinished(document):
        return False
    # The steps' Tasks are read before the document is locked: nothing may use the store
    # inside the transaction that changes it.
    executed = [
        node.get("executed")
        for node in (document.get("nodes") or {}).values()
        if node.get("status") not in FINISHED
    ]
    statuses = {step: _task_status(store, step) for step in executed if isinstance(step, str)}
    settled = False

    def mark_ended(document: dict[str, Any]) -> None:
        nonlocal settled
        if not _unfinished(document):
            return  # the controller finished the run meanwhile
        settled = True
        now = time.time()
        for node in (document.get("nodes") or {}).values():
            if node.get("status") in FINISHED:
                continue
            node["ended"] = node.get("ended") or now
            if statuses.get(node.get("executed")) == COMPLETED:
                node["status"] = COMPLETED
                node["error"] = None
                continue
            node["status"] = SKIPPED if node.get("status") == PENDING else ABORTED
            node["error"] = {"reason": reason}
        document["status"] = ABORTED
        document["ended"] = document.get("ended") or now

    update_run(store, task_id, mark_ended)
    if not settled:
        return False
    now = time.time()
    for step in store.find_tasks(parent=task_id, status=TASK_ACTIVE):
        if step.worker is not None and step.status == RUNNING:
            store.request_abort(step.id, reason)  # its agent stops it and records the end
            continue
        store.update_task(step.id, status=ABORTED, completed=now, error={"reason": reason})
    return True


def recover(store: Store, task_id: str) -> bool:
    """Settle the pipeline run ``task_id`` if it is still shown running although the
    process that controlled it has ended (or its Task has). Returns True if it was settled.
    """
    store.expire_leases()  # a controller killed on another machine has lost its lease
    try:
        record = store.get_task(task_id)
    except TaskNotFoundError:
        return False
    document = run_document(record)
    if document is None or not _unfinished(document):
        return False
    identity = document.get(CONTROLLER_KEY)
    ended = record.status in TASK_FINAL
    if not ended and not controller_gone(identity):
        return False
    if ended or not isinstance(identity, dict):
        reason = f"the pipeline's Task ended {record.status} before its steps did"
        why = (record.error or {}).get("reason")
        reason += f": {why}" if why else ""
    else:
        reason = (
            f"the pipeline controller (process {identity['pid']} on {identity['host']}) "
            "stopped without finishing the run"
        )
    settle(store, task_id, reason)
    if not ended:
        store.update_task(task_id, status=ABORTED, completed=time.time(), error={"reason": reason})
    return True


def _unfinished(document: Mapping[str, Any]) -> bool:
    """Whether ``document`` is a run still shown unfinished (with a status, not final)."""
    return document.get("status") not in (None, *PIPELINE_FINAL)


def _check_keys(document: Mapping[str, Any]) -> None:
    unknown = sorted(set(document) - set(RUN_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown key(s) {', '.join(map(repr, unknown))} in a pipeline run document; "
            f"a run document has: {', '.join(RUN_KEYS)}."
        )
    nodes = document.get("nodes") or {}
    if not isinstance(nodes, Mapping):
        raise ValueError(
            f"The steps of a pipeline run document are a dict by step name, not "
            f"{type(nodes).__name__}."
        )
    for step, entry in nodes.items():
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"The entry of step {step!r} in a pipeline run document is a dict, not "
                f"{type(entry).__name__}."
            )
        unknown = sorted(set(entry) - set(STEP_KEYS))
        if unknown:
            raise ValueError(
                f"Unknown key(s) {', '.join(map(repr, unknown))} in the entry of step "
                f"{step!r} of a pipeline run document; a step's entry has: "
                f"{', '.join(STEP_KEYS)}."
            )


def _task_status(store: Store, task_id: str) -> str | None:
    with contextlib.suppress(TaskNotFoundError):
        return store.get_task(task_id).status
    return None

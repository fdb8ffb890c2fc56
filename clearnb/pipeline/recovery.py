"""Settling the stored state of a pipeline whose controller stopped without saying so.

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
import os
import socket
import time
from typing import Any

from clearnb.errors import TaskNotFoundError
from clearnb.processes import process_alive, start_time
from clearnb.status import (
    ABORTED,
    COMPLETED,
    PENDING,
    PIPELINE_FINAL,
    SKIPPED,
    TASK_ACTIVE,
)
from clearnb.status import STEP_FINISHED as FINISHED
from clearnb.store import Store
from clearnb.store.records import FINAL_STATUSES

CONTROLLER_KEY = "controller"
"""Key of the pipeline state naming the process that runs it."""


def controller_identity() -> dict[str, Any]:
    """The host, pid and start time of this process, recorded with a run it controls."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "since": start_time(pid)}


def controller_gone(identity: Any) -> bool:
    """True when the controller process ``identity`` names is known to have ended: it ran
    on this host and its pid is gone or now belongs to a process started later."""
    if not isinstance(identity, dict) or identity.get("host") != socket.gethostname():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return identity.get("since") != start_time(pid)
    if not process_alive(pid):
        return True
    since, now = identity.get("since"), start_time(pid)
    return since is not None and now is not None and since != now


def settle(store: Store, task_id: str, reason: str) -> bool:
    """Mark the unfinished steps of the pipeline stored with ``task_id`` as ended.

    A step whose Task completed is marked completed (the controller stopped before it
    could say so); other running or queued steps become ``aborted`` (their Tasks too),
    pending ones ``skipped``; the pipeline becomes ``aborted``. Returns True if anything
    changed.
    """
    record = store.get_task(task_id)
    state: dict[str, Any] | None = record.runtime.get("pipeline")
    if not state or state.get("status") in (None, *PIPELINE_FINAL):
        return False
    now = time.time()
    for node in state.get("nodes", {}).values():
        if node.get("status") in FINISHED:
            continue
        executed = _task_status(store, node.get("executed"))
        if executed == "completed":
            node["status"] = COMPLETED
            node["ended"] = node.get("ended") or now
            node["error"] = None
            continue
        node["status"] = SKIPPED if node.get("status") == PENDING else ABORTED
        node["ended"] = node.get("ended") or now
        node["error"] = {"reason": reason}
    state["status"] = ABORTED
    state["ended"] = state.get("ended") or now
    runtime = dict(record.runtime)
    runtime["pipeline"] = state
    store.update_task(task_id, runtime=runtime)
    for step in store.find_tasks(parent=task_id, status=TASK_ACTIVE):
        if step.worker is not None and step.status == "running":
            store.request_abort(step.id, reason)  # its agent stops it and records the end
            continue
        store.update_task(step.id, status="aborted", completed=now, error={"reason": reason})
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
    state = record.runtime.get("pipeline")
    if not isinstance(state, dict) or state.get("status") in (None, *PIPELINE_FINAL):
        return False
    identity = state.get(CONTROLLER_KEY)
    ended = record.status in FINAL_STATUSES
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
        store.update_task(
            task_id, status="aborted", completed=time.time(), error={"reason": reason}
        )
    return True


def _task_status(store: Store, task_id: Any) -> str | None:
    if not isinstance(task_id, str):
        return None
    with contextlib.suppress(TaskNotFoundError):
        return store.get_task(task_id).status
    return None

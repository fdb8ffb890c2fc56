"""Settling the stored state of a pipeline whose controller stopped without saying so.

A controller killed mid-run (its kernel killed, its process gone) cannot mark its steps;
whoever sees it end (the runner of the controller notebook, or a later resume) calls
:func:`settle` so that no step is shown running for ever.
"""

from __future__ import annotations

import time
from typing import Any

from clearnb.pipeline.graph import ABORTED, FINISHED, PENDING, SKIPPED
from clearnb.store import Store

ACTIVE_TASK_STATUSES = ("created", "queued", "running")


def settle(store: Store, task_id: str, reason: str) -> bool:
    """Mark the unfinished steps of the pipeline stored with ``task_id`` as ended.

    Steps that were running or queued become ``aborted`` (their Tasks too), pending ones
    ``skipped``; the pipeline becomes ``aborted``. Returns True if anything changed.
    """
    record = store.get_task(task_id)
    state: dict[str, Any] | None = record.runtime.get("pipeline")
    if not state or state.get("status") in (None, "completed", "failed", "aborted"):
        return False
    now = time.time()
    for node in state.get("nodes", {}).values():
        if node.get("status") in FINISHED:
            continue
        node["status"] = SKIPPED if node.get("status") == PENDING else ABORTED
        node["ended"] = node.get("ended") or now
        node["error"] = {"reason": reason}
    state["status"] = ABORTED
    state["ended"] = state.get("ended") or now
    runtime = dict(record.runtime)
    runtime["pipeline"] = state
    store.update_task(task_id, runtime=runtime)
    for step in store.find_tasks(parent=task_id, status=ACTIVE_TASK_STATUSES):
        store.update_task(step.id, status="aborted", completed=now, error={"reason": reason})
    return True

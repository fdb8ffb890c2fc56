"""A pipeline run's state as its controller task stores it, read for the commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clearnb.status import PIPELINE_FINAL

if TYPE_CHECKING:
    from clearnb.store import Store
    from clearnb.store.records import TaskRecord


def recovered(store: Store, record: TaskRecord) -> TaskRecord:
    """``record``, settled first if it is a pipeline run whose controller process died."""
    state = pipeline_state(record)
    if state.get("status") in (None, *PIPELINE_FINAL):
        return record
    from clearnb.store.pipelines import recover

    return store.get_task(record.id) if recover(store, record.id) else record


def pipeline_state(record: TaskRecord) -> dict[str, Any]:
    """The pipeline state stored in ``record``; empty if it holds none."""
    from clearnb.store.pipelines import run_document

    return dict(run_document(record) or {})


def effective_status(record: TaskRecord, state: Mapping[str, Any]) -> str:
    """The pipeline's status; a pipeline still 'running' in a task that ended has stopped."""
    status = str(state.get("status") or record.status)
    if status not in PIPELINE_FINAL and record.status in PIPELINE_FINAL and state:
        return "failed" if record.status == "failed" else "aborted"
    return status

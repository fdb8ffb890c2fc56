"""The metadata store: tasks, artifacts, scalars, reports, events, queues and models behind
one interface.

``open_store(url)`` opens SQLite (the default, a file under ``CLEARNB_HOME``) or
PostgreSQL through SQLAlchemy Core, creating or migrating the schema on first use.
"""

from __future__ import annotations

from clearnb.store.engine import DEFAULT_LOCK_TIMEOUT
from clearnb.store.records import (
    FINAL_STATUSES,
    TASK_STATUSES,
    ArtifactRecord,
    EventRecord,
    ModelRecord,
    ReportRecord,
    ScalarRecord,
    TaskModelRecord,
    TaskRecord,
    WorkerRecord,
    new_id,
)
from clearnb.store.schema import SCHEMA_VERSION
from clearnb.store.sql import Store, open_store

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "TASK_STATUSES",
    "ArtifactRecord",
    "EventRecord",
    "ModelRecord",
    "ReportRecord",
    "ScalarRecord",
    "Store",
    "TaskModelRecord",
    "TaskRecord",
    "WorkerRecord",
    "new_id",
    "open_store",
]

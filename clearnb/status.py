"""The one status vocabulary: of a task, of a step in a pipeline run, of a pipeline run.

Every other module takes its status words and sets of them from here, so that "finished"
means the same thing to the scheduler, the store, the widget and the command line.
"""

from __future__ import annotations

# -- a Task (one run of a notebook or function, or its draft) -------------------------------
CREATED = "created"
"""A draft: a template, or a clone not yet run."""
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
ABORTED = "aborted"

TASK_STATUSES = (CREATED, QUEUED, RUNNING, COMPLETED, FAILED, ABORTED)
"""Every status a task can have."""
TASK_FINAL = frozenset({COMPLETED, FAILED, ABORTED})
"""Statuses a task does not leave."""
TASK_ACTIVE = (CREATED, QUEUED, RUNNING)
"""Statuses of a task that may still run."""

# -- a step of a pipeline run ---------------------------------------------------------------
PENDING = "pending"
CACHED = "cached"
SKIPPED = "skipped"

STEP_STATUSES = (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, ABORTED, CACHED, SKIPPED)
"""Every status a step can have, in the order a legend lists them."""
STEP_FINISHED = frozenset({COMPLETED, FAILED, ABORTED, CACHED, SKIPPED})
"""Statuses a step does not leave in a run."""
SUCCEEDED = frozenset({COMPLETED, CACHED})
"""Statuses whose outputs children may use."""
UNSUCCESSFUL = frozenset({FAILED, ABORTED})
"""Statuses of a step that ran (or was to run) and did not complete."""

# -- a pipeline run -------------------------------------------------------------------------
PIPELINE_STATUSES = (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, ABORTED)
PIPELINE_FINAL = frozenset({COMPLETED, FAILED, ABORTED})
"""Statuses a pipeline run does not leave."""


def task_status_of_step(status: str) -> str:
    """The Task status that ends a step finished ``status`` (cached work completed)."""
    return COMPLETED if status in SUCCEEDED else status

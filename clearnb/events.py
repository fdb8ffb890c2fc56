"""The one event model: of a notebook run (a task started, cell i of n, it finished), and of
a pipeline run (a step changed status or made progress, the pipeline changed status).

Every transition of every step, in every mode (local, queued, a controller on an agent,
debug, resume, a cache hit), is recorded as one :class:`PipelineEvent`: stored with the
pipeline's Task first, then told to the listeners (callbacks, the widget, the command
line). :func:`to_payload` and :func:`from_payload` are the stored form, so that a process
following a run through the store receives the same events as the one running it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# -- one notebook run -------------------------------------------------------------------
TASK_QUEUED = "task_queued"
TASK_STARTED = "task_started"
CELL_STARTED = "cell_started"
CELL_FINISHED = "cell_finished"
TASK_FINISHED = "task_finished"


@dataclass(frozen=True)
class RunEvent:
    """One status or progress change of a notebook run (persisted with its task)."""

    kind: str
    task_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


EventCallback = Callable[[RunEvent], None]
"""Receives every event of a run, on the thread that runs it; must return quickly."""

# -- a pipeline run ----------------------------------------------------------------------
STEP_STATUS = "step_status"
STEP_PROGRESS = "step_progress"
PIPELINE_STATUS = "pipeline_status"
KINDS = (STEP_STATUS, STEP_PROGRESS, PIPELINE_STATUS)
"""The kinds of event that are stored with the pipeline's Task."""
PIPELINE_STATE = "pipeline_state"
"""The whole state told again on demand (``update_execution_plot``): nothing changed, so
it is told to the listeners but not stored."""


@dataclass(frozen=True)
class PipelineEvent:
    """One change in a pipeline run, as listeners (widget, CLI) receive it."""

    kind: str
    """``step_status``, ``step_progress``, ``pipeline_status`` or ``pipeline_state``."""
    step: str | None
    status: str
    previous: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


Listener = Callable[[PipelineEvent], None]
"""Called on the pipeline's threads; must return quickly and never raise."""


def to_payload(event: PipelineEvent) -> dict[str, Any]:
    """What is stored of ``event`` (its kind and time are stored beside it)."""
    return {
        "step": event.step,
        "status": event.status,
        "previous": event.previous,
        "state": event.payload,
    }


def from_payload(kind: str, payload: dict[str, Any], timestamp: float) -> PipelineEvent | None:
    """The event stored as ``payload``, or None if ``kind`` is not a pipeline event's."""
    if kind not in KINDS:
        return None
    return PipelineEvent(
        kind,
        payload.get("step"),
        str(payload.get("status")),
        payload.get("previous"),
        dict(payload.get("state") or {}),
        timestamp,
    )


class Broadcaster:
    """The listeners of one pipeline; a listener that raises is logged, never fatal."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event from now on."""
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it was not added)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def listeners(self) -> list[Listener]:
        """The listeners, in the order they were added."""
        with self._lock:
            return list(self._listeners)

    def emit(self, event: PipelineEvent) -> None:
        """Tell every listener about ``event``."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("pipeline listener raised")

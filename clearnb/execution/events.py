"""Progress events of one notebook run (task started, cell i of n, task finished)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TASK_QUEUED = "task_queued"
TASK_STARTED = "task_started"
CELL_STARTED = "cell_started"
CELL_FINISHED = "cell_finished"
TASK_FINISHED = "task_finished"


@dataclass(frozen=True)
class RunEvent:
    """One status or progress change of a run."""

    kind: str
    task_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


EventCallback = Callable[[RunEvent], None]
"""Receives every event of a run, on the thread that runs it; must return quickly."""

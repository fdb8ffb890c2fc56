"""Events of a pipeline run: a step changed status, or made progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STEP_STATUS = "step_status"
STEP_PROGRESS = "step_progress"
PIPELINE_STATUS = "pipeline_status"


@dataclass(frozen=True)
class PipelineEvent:
    """One change in a pipeline run, as listeners (widget, CLI) receive it."""

    kind: str
    """``step_status``, ``step_progress`` or ``pipeline_status``."""
    step: str | None
    status: str
    previous: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)


Listener = Callable[[PipelineEvent], None]
"""Called on the pipeline's threads; must return quickly and never raise."""

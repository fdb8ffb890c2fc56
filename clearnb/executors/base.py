"""The executor seam: where one prepared step runs.

The controller prepares a step (its notebook or template, overrides, limits, the run's
Task fields) as a :class:`StepRequest` and hands it to an :class:`Executor`, which runs it
and returns the step's Task once it has ended. The local kernel pool, a queue served by
agents and a Dask cluster are each one implementation; the step code does not know which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from clearnb.events import EventCallback
    from clearnb.execution.runner import RunHandle
    from clearnb.task import Task


@dataclass
class StepRequest:
    """One step, ready to run: what to run, with what, and how its Task is recorded."""

    notebook: str | None
    """The notebook file to run (None when ``template`` names a registered task)."""
    overrides: Mapping[str, Any]
    """``{"Section/name": value}``, references already resolved."""
    template: str | None = None
    """Id of the template task the run copies."""
    project_name: str | None = None
    task_name: str | None = None
    time_limit: float | None = None
    memory_limit: int | None = None
    parent: str | None = None
    """Id of the pipeline's Task."""
    tags: Sequence[str] = ()
    runtime: Mapping[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    on_event: EventCallback | None = None
    """Receives the run's events (queued, started, cell i of n, finished)."""
    handle: RunHandle | None = None
    """Lets the controller abort the run."""
    on_unserved: Callable[[str], None] | None = None
    """Told (with a message) when no worker can take the step yet."""
    strict: bool = True
    """Refuse an override the notebook does not declare (else it is set as given)."""


class Executor(Protocol):
    """Runs prepared steps; ``close`` releases what it holds (kernels, connections)."""

    def execute(self, request: StepRequest) -> Task:
        """Run ``request`` and return its Task once it has ended."""
        ...

    def close(self) -> None:
        """Release what the executor holds; it runs nothing afterwards."""
        ...

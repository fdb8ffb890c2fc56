"""What the parts of the Task API written in their own modules need of a task.

:class:`clearnb.task.Task` is assembled from parts (status changes, configuration objects),
each a class in its own module. They work with a task only through the public facts
declared here, which ``Task`` provides; none of them reaches into another's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clearnb.backend import Backend
    from clearnb.store.records import TaskRecord


class TaskFacts:
    """Base of the parts of :class:`clearnb.task.Task`: the facts of a task they use."""

    if TYPE_CHECKING:  # provided by Task; declared here for the type checker only

        @property
        def id(self) -> str:
            """The task's id."""

        @property
        def name(self) -> str:
            """The task's name."""

        @property
        def record(self) -> TaskRecord:
            """The stored record as last read."""

        @property
        def backend(self) -> Backend:
            """The store and artifact storage the task lives in."""

        def reload(self) -> TaskFacts:
            """Read the task again from the store; returns it."""

        def flush(self, wait: bool = False) -> bool:
            """Write what the task still holds in memory (reports, connected dicts)."""

"""ClearML's task types: what kind of work a task does (recorded with it, shown in lists)."""

from __future__ import annotations

from enum import Enum

__all__ = ["TaskTypes"]


class TaskTypes(str, Enum):
    """The type of a task, as ClearML names them; each member is its own name as text."""

    training = "training"
    testing = "testing"
    inference = "inference"
    data_processing = "data_processing"
    application = "application"
    monitor = "monitor"
    controller = "controller"
    optimizer = "optimizer"
    service = "service"
    qc = "qc"
    custom = "custom"

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)

"""clearnb: pipelines of Jupyter notebooks without a server.

The public API; names are imported on first use so that ``import clearnb`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Task": "clearnb.task",
    "TaskTypes": "clearnb.tasktypes",
    "Artifact": "clearnb.artifacts",
    "InputModel": "clearnb.model",
    "Model": "clearnb.model",
    "OutputModel": "clearnb.model",
    "Logger": "clearnb.logger",
    "StorageManager": "clearnb.storage",
    "NotebookRunner": "clearnb.execution.runner",
    "execute_notebook": "clearnb.execution.runner",
    "Config": "clearnb.config",
    "Dataset": "clearnb.datasets",
    "PipelineController": "clearnb.pipeline.controller",
    "PipelineDecorator": "clearnb.pipeline.decorator",
}

__all__ = [
    "Artifact",
    "Config",
    "Dataset",
    "InputModel",
    "Logger",
    "Model",
    "NotebookRunner",
    "OutputModel",
    "PipelineController",
    "PipelineDecorator",
    "StorageManager",
    "Task",
    "TaskTypes",
    "__version__",
    "execute_notebook",
]

if TYPE_CHECKING:
    from clearnb.artifacts import Artifact
    from clearnb.config import Config
    from clearnb.datasets import Dataset
    from clearnb.execution.runner import NotebookRunner, execute_notebook
    from clearnb.logger import Logger
    from clearnb.model import InputModel, Model, OutputModel
    from clearnb.pipeline.controller import PipelineController
    from clearnb.pipeline.decorator import PipelineDecorator
    from clearnb.storage import StorageManager
    from clearnb.task import Task
    from clearnb.tasktypes import TaskTypes


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clearnb' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

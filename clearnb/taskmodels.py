"""``task.models``: the models a task uses (its inputs) and makes (its outputs), by name.

As ClearML's: two lists of :class:`~clearnb.model.Model`, each also indexable by the name
the task gives the model; an output model the task made but never named is
``"Output Model #n"``.
"""

from __future__ import annotations

from collections import UserDict, UserList
from collections.abc import KeysView, Mapping
from typing import Any

from clearnb.model import Model
from clearnb.store.records import ModelRecord
from clearnb.taskfacts import TaskFacts

__all__ = ["ModelsList", "TaskModels"]


class ModelsList(UserList[Model]):
    """A task's input or output models: a list, also indexable by the names the task
    gives them."""

    def __init__(self, models: Mapping[str, Model]) -> None:
        self._models = dict(models)
        super().__init__(self._models.values())

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            return self._models[item]
        return super().__getitem__(item)

    def get(self, key: str, default: Model | None = None) -> Model | None:
        """The model named ``key``, or ``default``."""
        return self._models.get(key, default)

    def keys(self) -> KeysView[str]:
        """The names of the models."""
        return self._models.keys()


class TaskModels(UserDict[str, ModelsList]):
    """``task.models``: ``{"input": ModelsList, "output": ModelsList}``, also as the
    ``input`` and ``output`` attributes."""

    def __init__(self, task: TaskFacts) -> None:
        store = task.backend.store
        links = store.get_task_models(task.id)
        backend = task.backend

        def model(model_id: str) -> Model:
            found: Model = Model.from_record(store.get_model(model_id), backend)
            return found

        inputs = {link.name: model(link.model_id) for link in links if link.kind == "input"}
        made = sorted(store.find_models(task_id=task.id, include_archived=True), key=_created)
        names = {link.model_id: link.name for link in links if link.kind == "output"}
        ordered = list(dict.fromkeys([m.id for m in made] + list(names)))
        outputs = {
            names.get(model_id, f"Output Model #{index}"): model(model_id)
            for index, model_id in enumerate(ordered)
        }
        super().__init__({"input": ModelsList(inputs), "output": ModelsList(outputs)})

    @property
    def input(self) -> ModelsList:
        """The models the task uses."""
        return self.data["input"]

    @property
    def output(self) -> ModelsList:
        """The models the task made."""
        return self.data["output"]


def _created(record: ModelRecord) -> tuple[float, str]:
    return record.created, record.id

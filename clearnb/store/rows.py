"""Records to table rows and back, and the checks a value passes before it is stored.

JSON columns are text in both databases, so a value holds only what JSON can say; numpy
scalars and arrays, sets and paths are turned into their plain equivalents on the way in.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.engine import Row

from clearnb.store.records import (
    TASK_STATUSES,
    ArtifactRecord,
    ModelRecord,
    TaskModelRecord,
    TaskRecord,
    WorkerRecord,
)

TASK_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))
"""The fields of a task, in the order of :class:`TaskRecord`."""
TASK_JSON_FIELDS = frozenset({"parameters", "tags", "error", "runtime", "configuration"})
"""Task fields stored as JSON text."""
WORKER_FIELDS = tuple(f.name for f in dataclasses.fields(WorkerRecord))
_WORKER_JSON_FIELDS = ("queues", "running")


def dumps(value: Any, what: str) -> str:
    """``value`` as JSON text; a :class:`TypeError` names ``what`` held a non-JSON value."""
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"The {what} must hold only JSON values (str, int, float, bool, None, lists "
            f"and dicts with str keys): {exc}"
        ) from exc


def encode_task_field(name: str, value: Any) -> Any:
    """The column value of task field ``name``."""
    if name in TASK_JSON_FIELDS:
        return None if value is None else dumps(value, f"task {name}")
    return value


def encode_task_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The column values of task ``fields`` to change, checked: a :class:`ValueError`
    names an unknown field, the id (which cannot change), a bad status or parameters."""
    unknown = sorted(set(fields) - set(TASK_FIELDS))
    if unknown:
        raise ValueError(
            f"Unknown task field(s) {', '.join(unknown)}; "
            f"a task has: {', '.join(f for f in TASK_FIELDS if f != 'id')}."
        )
    if "id" in fields:
        raise ValueError("The id of a task cannot change; create a new task instead.")
    if "status" in fields:
        check_status(fields["status"])
    if "parameters" in fields:
        check_parameters(fields["parameters"])
    return {name: encode_task_field(name, value) for name, value in fields.items()}


def task_to_row(record: TaskRecord) -> dict[str, Any]:
    """The ``tasks`` row of ``record``."""
    return {name: encode_task_field(name, getattr(record, name)) for name in TASK_FIELDS}


def row_to_task(row: Row[Any]) -> TaskRecord:
    """The task a ``tasks`` row holds."""
    values = dict(row._mapping)
    for name in TASK_JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["configuration"] = values["configuration"] or {}  # NULL in a migrated store
    return TaskRecord(**{name: values[name] for name in TASK_FIELDS})


def artifact_to_row(record: ArtifactRecord) -> dict[str, Any]:
    """The ``artifacts`` row of ``record``."""
    row = dataclasses.asdict(record)
    row["metadata"] = dumps(record.metadata, "artifact metadata")
    return row


def row_to_artifact(row: Row[Any]) -> ArtifactRecord:
    """The artifact an ``artifacts`` row holds."""
    values = row._mapping
    return ArtifactRecord(
        task_id=values["task_id"],
        name=values["name"],
        url=values["url"],
        codec=values["codec"],
        type=values["type"],
        hash=values["hash"],
        size=int(values["size"]),
        preview=values["preview"],
        metadata=json.loads(values["metadata"]),
        created=float(values["created"]),
    )


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelRecord))
"""The fields of a model, in the order of :class:`ModelRecord`."""
MODEL_JSON_FIELDS = frozenset({"tags", "system_tags", "labels", "metadata"})
"""Model fields stored as JSON text."""


def encode_model_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The column values of model ``fields`` to change, checked: a :class:`ValueError`
    names an unknown field or the id (which cannot change)."""
    unknown = sorted(set(fields) - set(MODEL_FIELDS))
    if unknown:
        raise ValueError(
            f"Unknown model field(s) {', '.join(unknown)}; "
            f"a model has: {', '.join(f for f in MODEL_FIELDS if f != 'id')}."
        )
    if "id" in fields:
        raise ValueError("The id of a model cannot change; create a new model instead.")
    return {
        name: dumps(value, f"model {name}") if name in MODEL_JSON_FIELDS else value
        for name, value in fields.items()
    }


def model_to_row(record: ModelRecord) -> dict[str, Any]:
    """The ``models`` row of ``record``."""
    values = {name: getattr(record, name) for name in MODEL_FIELDS}
    del values["id"]
    return {"id": record.id, **encode_model_fields(values)}


def row_to_model(row: Row[Any]) -> ModelRecord:
    """The model a ``models`` row holds."""
    values = dict(row._mapping)
    for name in MODEL_JSON_FIELDS:
        values[name] = json.loads(values[name])
    values["size"] = int(values["size"])
    values["published"] = bool(values["published"])
    if values["iteration"] is not None:
        values["iteration"] = int(values["iteration"])
    return ModelRecord(**{name: values[name] for name in MODEL_FIELDS})


def row_to_task_model(row: Row[Any]) -> TaskModelRecord:
    """The link a ``task_models`` row holds."""
    values = row._mapping
    return TaskModelRecord(
        task_id=values["task_id"],
        kind=values["kind"],
        name=values["name"],
        model_id=values["model_id"],
        created=float(values["created"]),
    )


def worker_to_row(record: WorkerRecord) -> dict[str, Any]:
    """The ``workers`` row of ``record``."""
    return {
        name: dumps(value, "worker field") if name in _WORKER_JSON_FIELDS else value
        for name, value in dataclasses.asdict(record).items()
    }


def row_to_worker(row: Row[Any]) -> WorkerRecord:
    """The agent a ``workers`` row describes."""
    values = dict(row._mapping)
    for name in _WORKER_JSON_FIELDS:
        values[name] = json.loads(values[name])
    return WorkerRecord(**{name: values[name] for name in WORKER_FIELDS})


def check_status(status: Any) -> None:
    """Refuse (:class:`ValueError`) a task status that is not one of :data:`TASK_STATUSES`."""
    if status not in TASK_STATUSES:
        raise ValueError(
            f"Unknown task status {status!r}; a status is one of: {', '.join(TASK_STATUSES)}."
        )


def status_list(status: str | Iterable[str] | None) -> list[str] | None:
    """One status or several as a checked list; ``None`` for no filter."""
    if status is None:
        return None
    statuses = [status] if isinstance(status, str) else list(status)
    for value in statuses:
        check_status(value)
    return statuses


def check_parameters(parameters: Any) -> None:
    """Refuse (:class:`ValueError`) parameters that are not ``{section: {name: value}}``."""
    if not isinstance(parameters, Mapping):
        raise ValueError(
            "Task parameters are a dict of sections, e.g. {'General': {'x': 1}}; "
            f"got {type(parameters).__name__}."
        )
    for section, values in parameters.items():
        if not isinstance(section, str) or not isinstance(values, Mapping):
            raise ValueError(
                f"Parameter section {section!r} must be a str mapped to a dict of values, "
                f"e.g. {{'General': {{'x': 1}}}}; got {type(values).__name__}."
            )


def _json_default(value: Any) -> Any:
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not JSON")

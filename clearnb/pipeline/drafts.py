"""Pipelines stored to run later: drafts, their clones, and finding them again.

A controller Task that holds a pipeline's definition (portable: function steps carry their
source) in its runtime under ``definition`` can be run by any agent serving the queue it
is put in (``PipelineController.enqueue``, ``clearnb task enqueue``). ``create_draft()``
stores one without running it (status ``created``), ``start(queue=...)`` stores one and
enqueues it; :func:`find` finds a pipeline by project, name, version and tags, as
ClearML's ``PipelineController.get`` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clearnb.errors import PipelineError, TaskNotFoundError
from clearnb.pipeline import serialize
from clearnb.pipeline.sources import storable
from clearnb.pipeline.spec import PipelineSpec, steps_with_callbacks
from clearnb.store import Store
from clearnb.store import pipelines as runs
from clearnb.store.records import TaskRecord

DEFINITION_KEY = "definition"
"""Key of a controller Task's runtime that holds the pipeline's definition."""
SHALLOW_SEARCH = 500
"""How many controller Tasks ``shallow_search`` looks at (the newest)."""


def controller_record(
    spec: PipelineSpec,
    *,
    force: bool,
    callbacks: Sequence[Callable[..., Any] | None],
    tags: list[str],
    runtime: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> TaskRecord:
    """A controller Task (not yet stored) holding ``spec``, for an agent to run; ``name``
    is its Task's (the pipeline's by default).

    Callbacks run in the process that defines them, so a pipeline with any is refused.
    """
    local = steps_with_callbacks(spec.steps.values())
    if any(callbacks) or local:
        raise PipelineError(
            "callbacks run in the process that defines them and cannot travel to an "
            f"agent (steps with callbacks: {', '.join(local) or '-'}); drop them, or run "
            "the pipeline here with start() without a queue"
        )
    definition = serialize.to_dict(spec, portable=True)
    definition["force"] = force
    return TaskRecord(
        project=spec.project,
        name=name or spec.name,
        task_type=runs.CONTROLLER_TASK_TYPE,
        parameters=spec.parameter_sections(storable),
        tags=tags,
        runtime={**(runtime or {}), DEFINITION_KEY: definition},
    )


def definition_of(record: TaskRecord) -> dict[str, Any] | None:
    """The pipeline definition a controller Task holds, or None."""
    definition = record.runtime.get(DEFINITION_KEY)
    return definition if isinstance(definition, dict) else None


def version_of(record: TaskRecord) -> str | None:
    """The version of the pipeline stored with ``record`` (its definition or its run)."""
    held = definition_of(record) or runs.run_document(record) or {}
    version = held.get("version")
    return str(version) if version is not None else None


def pipeline_name(record: TaskRecord) -> str:
    """The name of the pipeline of ``record`` (its Task may carry a run number)."""
    held = definition_of(record) or runs.run_document(record) or {}
    return str(held.get("name") or record.name)


def _semantic(version: str | None) -> tuple[int, ...] | None:
    if version is None or not re.fullmatch(r"\d+(\.\d+)*", version.strip()):
        return None
    return tuple(int(part) for part in version.strip().split("."))


def find(
    store: Store,
    *,
    project: str | None,
    name: str | None,
    version: str | None,
    tags: Sequence[str] | None,
    shallow: bool,
) -> TaskRecord:
    """The pipeline of ``project`` and ``name`` (its Task's name may carry a run number):
    of ``version`` if given (the newest such), else the one of the highest semantic
    version, else the newest; only among the newest controllers with ``shallow``."""
    numbered = re.compile(rf"^{re.escape(name)}( #\d+)?$") if name else None
    found = [
        record
        for record in store.find_tasks(
            project=project,
            task_type=runs.CONTROLLER_TASK_TYPE,
            tags=list(tags) if tags else None,
            limit=SHALLOW_SEARCH if shallow else None,
        )
        if (definition_of(record) is not None or runs.run_document(record) is not None)
        and (numbered is None or numbered.match(record.name) or pipeline_name(record) == name)
    ]
    if version is not None:
        found = [record for record in found if version_of(record) == version]
    if not found:
        wanted = ", ".join(
            f"{key}={value!r}"
            for key, value in (("project", project), ("name", name), ("version", version))
            if value is not None
        )
        raise TaskNotFoundError(
            f"no pipeline with {wanted or 'any name'}; list them with `clearnb pipeline ls`",
            project=project,
            name=name,
            version=version,
        )
    versioned = [(_semantic(version_of(record)), record) for record in found]
    best = max((pair for pair in versioned if pair[0] is not None), default=None)
    return best[1] if best is not None and version is None else found[0]


def clone_record(
    source: TaskRecord,
    *,
    name: str | None,
    comment: str | None,
    parent: str | None,
    project: str | None,
    version: str | None,
) -> TaskRecord:
    """A draft (not yet stored) of the pipeline stored with ``source``, renamed, moved or
    versioned as asked; its parent is ``parent``, else the source's parent, else the source.
    """
    definition = definition_of(source)
    if definition is None:
        raise PipelineError(
            f"task {source.id} holds no pipeline definition to clone (a pipeline run here "
            "with start() keeps only its run); store one with create_draft() or "
            "start(queue=...)"
        )
    copied = json.loads(json.dumps(definition))
    copied.update(
        {
            key: value
            for key, value in (("name", name), ("project", project), ("version", version))
            if value is not None
        }
    )
    copied["force"] = False
    runtime = {
        key: value
        for key, value in source.runtime.items()
        if key not in (runs.RUNTIME_KEY, "agent", "agent_queue")
    }
    return TaskRecord(
        project=copied["project"],
        name=copied["name"],
        task_type=runs.CONTROLLER_TASK_TYPE,
        parameters=json.loads(json.dumps(source.parameters)),
        tags=list(source.tags),
        parent=parent or source.parent or source.id,
        comment=comment or f"cloned from {source.id}",
        runtime={**runtime, DEFINITION_KEY: copied},
    )


def stored_pipeline(store: Store, task_id: str) -> TaskRecord:
    """The controller Task ``task_id``, refused if it holds no pipeline at all."""
    record = store.get_task(task_id)
    if definition_of(record) is None and runs.run_document(record) is None:
        raise TaskNotFoundError(
            f"task {task_id} is a {record.task_type} task, not a pipeline; list the "
            "pipelines with `clearnb pipeline ls`",
            task_id=task_id,
        )
    return record

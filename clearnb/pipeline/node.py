"""ClearML's view of a step: its definition and the state of its current run, as a Node.

The definition is a :class:`~clearnb.pipeline.spec.StepSpec` (plain data); the run state
a :class:`StepRun`. A :class:`Node` joins the two under ClearML's field names
(``node.name``, ``node.parameters``, ``node.executed``, ``node.job``, ``node.status``...),
which is what callbacks and ``get_pipeline_dag()`` hand to users.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from clearnb.pipeline.spec import STEP_FIELDS, StepSpec
from clearnb.status import PENDING, TASK_FINAL

if TYPE_CHECKING:
    from clearnb.task import Task


class StepJob:
    """What ClearML calls a node's job: the run of a step, with its Task."""

    def __init__(
        self, task: Task, task_parameter_override: Mapping[str, Any] | None = None
    ) -> None:
        self.task = task
        self.task_parameter_override: dict[str, Any] = dict(task_parameter_override or {})
        """The overrides the step's Task ran with (``{"Section/name": value}``)."""

    def task_id(self) -> str:
        """Id of the step's Task."""
        return self.task.id

    def is_completed(self) -> bool:
        """True if the step's Task completed."""
        return self.task.status == "completed"

    def is_failed(self) -> bool:
        """True if the step's Task failed."""
        return self.task.status == "failed"

    def is_aborted(self) -> bool:
        """True if the step's Task was aborted."""
        return self.task.status == "aborted"

    def is_stopped(self) -> bool:
        """True if the step's Task ended, whichever way."""
        return self.task.status in TASK_FINAL


@dataclass
class StepRun:
    """The state of one step in the current run."""

    status: str = PENDING
    executed: str | None = None
    """Id of the Task that ran (or, when cached, earlier ran) this step."""
    job: StepJob | None = None
    job_started: float | None = None
    job_ended: float | None = None
    skip_job: bool = False
    force: bool = False
    """Run even if the cache has a result (set for steps picked to run again)."""
    retries: int = 0
    error: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    """Live progress of a running step: ``cell``, ``cells`` (of the executed notebook)."""
    resolved: dict[str, Any] = field(default_factory=dict)
    """The overrides with references resolved, as the step received them."""
    template_id: str | None = None
    """Id of the template the step runs, once found (by id, or by project and name)."""
    warnings: list[str] = field(default_factory=list)
    """What was said of its overrides (one the step does not declare, set as given)."""


RUN_FIELDS = frozenset(f.name for f in fields(StepRun))


class Node:
    """One step of a pipeline, with ClearML's field names (``executed``, ``job``, ...).

    ``Node(name, parents=[...], notebook=...)`` takes the fields of a
    :class:`~clearnb.pipeline.spec.StepSpec`; ``spec`` and ``run`` are the two halves.
    """

    spec: StepSpec
    run: StepRun

    def __init__(self, name: str = "", *, spec: StepSpec | None = None, **definition: Any) -> None:
        object.__setattr__(self, "spec", spec if spec is not None else StepSpec(name, **definition))
        object.__setattr__(self, "run", StepRun())

    def __getattr__(self, name: str) -> Any:
        # Called only for names that are not the Node's own: the fields of its halves.
        if name in RUN_FIELDS:
            return getattr(self.run, name)
        if name in STEP_FIELDS:
            return getattr(self.spec, name)
        raise AttributeError(f"a pipeline Node has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in RUN_FIELDS:
            setattr(self.run, name, value)
        elif name in STEP_FIELDS:
            setattr(self.spec, name, value)
        else:
            raise AttributeError(f"a pipeline Node has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<Node {self.spec.name} [{self.run.status}]>"

    @property
    def base_task_id(self) -> str | None:
        """Id of the step's template: as given, or as found by project and name for this run."""
        return self.run.template_id or self.spec.base_task_id

    @base_task_id.setter
    def base_task_id(self, value: str | None) -> None:
        self.spec.base_task_id = value

    @property
    def job_type(self) -> str:
        """``function`` or ``notebook``."""
        return self.spec.kind

    @property
    def is_function(self) -> bool:
        """True for a step made from a Python function."""
        return self.spec.is_function

    @property
    def elapsed(self) -> float | None:
        """Seconds the step has run (so far, or in all)."""
        if self.run.job_started is None:
            return None
        return (self.run.job_ended or time.time()) - self.run.job_started

    def state(self) -> dict[str, Any]:
        """What a viewer needs, as JSON-able data (stored with the pipeline's Task)."""
        spec, run = self.spec, self.run
        return {
            "name": spec.name,
            "parents": list(spec.parents),
            "kind": spec.kind,
            "source": spec.notebook
            or spec.base_task_name
            or spec.base_task_id
            or getattr(spec.function, "__name__", None),
            "parameters": {k: plain(v) for k, v in spec.parameters.items()},
            "resolved": {k: plain(v) for k, v in run.resolved.items()},
            "status": run.status,
            "executed": run.executed,
            "started": run.job_started,
            "ended": run.job_ended,
            "retries": run.retries,
            "error": run.error,
            "warnings": list(run.warnings),
            "progress": dict(run.progress),
            "queue": spec.queue,
            "cache": spec.cache_executed_step,
        }

    def reset(self) -> None:
        """Forget the state of an earlier run."""
        object.__setattr__(self, "run", StepRun())


def plain(value: Any) -> Any:
    """``value`` as JSON-able data (anything else by its ``repr``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)

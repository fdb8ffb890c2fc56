"""The pipeline as plain data: steps (nodes), their parents, and validation of the graph.

Execution lives elsewhere (:mod:`clearnb.pipeline.controller`); this module only knows
names, edges and statuses, so that the controller, the plot, the widget and the CLI share
one picture of a pipeline.
"""

from __future__ import annotations

import graphlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearnb.task import Task

from clearnb.status import PENDING


class StepJob:
    """What ClearML calls a node's job: the run of a step, with its Task."""

    def __init__(self, task: Task) -> None:
        self.task = task

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


@dataclass(eq=False)
class Node:
    """One step of a pipeline, with ClearML's field names (``executed``, ``job``, ...).

    A step runs a notebook (``notebook`` or a template named by ``base_task_id`` or
    ``base_task_project``/``base_task_name``) or a Python ``function``.
    """

    name: str
    parents: list[str] = field(default_factory=list)
    base_task_id: str | None = None
    base_task_project: str | None = None
    base_task_name: str | None = None
    notebook: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    """Overrides, ``{"Section/name": value}``; values may hold ``${...}`` references."""
    queue: str | None = None
    timeout: float | None = None
    """Time limit of one attempt, in seconds."""
    memory_limit: int | None = None
    """Bytes the step's kernel and the processes it starts may hold; then it is stopped."""
    cache_executed_step: bool = False
    continue_on_fail: bool = False
    continue_on_abort: bool = False
    skip_children_on_fail: bool = True
    skip_children_on_abort: bool = True
    retry_on_failure: int | Callable[[Any, Node, int], bool] | None = None
    pre_execute_callback: Callable[..., Any] | None = None
    post_execute_callback: Callable[..., Any] | None = None
    status_change_callback: Callable[..., Any] | None = None
    monitor_metrics: list[Any] = field(default_factory=list)
    monitor_artifacts: list[Any] = field(default_factory=list)
    monitor_models: list[Any] = field(default_factory=list)
    function: Callable[..., Any] | None = None
    function_kwargs: dict[str, Any] = field(default_factory=dict)
    function_return: list[str] = field(default_factory=list)
    helper_functions: list[Callable[..., Any]] = field(default_factory=list)
    task_type: str | None = None
    tags: list[str] = field(default_factory=list)
    packages: list[str] | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    """Arguments accepted for compatibility and recorded only (docker, repo, ...)."""
    # -- state of the current run ------------------------------------------------------------
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

    @property
    def job_type(self) -> str:
        """``function`` or ``notebook``."""
        return "function" if self.function is not None else "notebook"

    @property
    def is_function(self) -> bool:
        """True for a step made from a Python function."""
        return self.function is not None

    @property
    def elapsed(self) -> float | None:
        """Seconds the step has run (so far, or in all)."""
        if self.job_started is None:
            return None
        return (self.job_ended or time.time()) - self.job_started

    def state(self) -> dict[str, Any]:
        """What a viewer needs, as JSON-able data (stored with the pipeline's Task)."""
        return {
            "name": self.name,
            "parents": list(self.parents),
            "kind": self.job_type,
            "source": self.notebook
            or self.base_task_name
            or self.base_task_id
            or getattr(self.function, "__name__", None),
            "parameters": {k: _plain(v) for k, v in self.parameters.items()},
            "resolved": {k: _plain(v) for k, v in self.resolved.items()},
            "status": self.status,
            "executed": self.executed,
            "started": self.job_started,
            "ended": self.job_ended,
            "retries": self.retries,
            "error": self.error,
            "progress": dict(self.progress),
            "queue": self.queue,
            "cache": self.cache_executed_step,
        }

    def reset(self) -> None:
        """Forget the state of an earlier run."""
        self.status = PENDING
        self.executed = None
        self.job = None
        self.job_started = self.job_ended = None
        self.skip_job = False
        self.force = False
        self.retries = 0
        self.error = None
        self.progress = {}
        self.resolved = {}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def topological_order(nodes: Mapping[str, Node]) -> list[str]:
    """Step names, parents before children (ties in insertion order)."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, node in nodes.items():
        sorter.add(name, *[p for p in node.parents if p in nodes])
    return list(sorter.static_order())


def find_cycle(nodes: Mapping[str, Node]) -> list[str] | None:
    """A cycle of steps (first step repeated at the end), or None."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, node in nodes.items():
        sorter.add(name, *[p for p in node.parents if p in nodes])
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return list(reversed(cycle))
    return None


def descendants(nodes: Mapping[str, Node], name: str) -> list[str]:
    """Every step below ``name`` (children, their children, ...)."""
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes.values():
        for parent in node.parents:
            if parent in children:
                children[parent].append(node.name)
    found: list[str] = []
    stack = list(children.get(name, []))
    while stack:
        current = stack.pop()
        if current not in found:
            found.append(current)
            stack.extend(children.get(current, []))
    return found


def layers(parents: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Steps grouped by depth (longest path from a root), for drawing left to right.

    ``parents`` maps each step name to its parents' names (unknown names are ignored).
    """
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, ups in parents.items():
        sorter.add(name, *[p for p in ups if p in parents])
    depth: dict[str, int] = {}
    for name in sorter.static_order():
        known = [p for p in parents[name] if p in depth]
        depth[name] = 1 + max((depth[p] for p in known), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in parents:
        grouped[depth[name]].append(name)
    return grouped


def step_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a step (it could not be referenced or stored), or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a str"
    if not name.strip():
        return "is empty"
    if name != name.strip():
        return "starts or ends with a space"
    if name == "pipeline":
        return "is kept for the pipeline's own parameters (${pipeline.<arg>})"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "holds a control character (such as NUL or a line break)"
    for char in (".", "$", "{", "}", "/", "\\"):
        if char in name:
            return f"holds {char!r}, which references (${{<step>.id}}) or file names cannot carry"
    return None


def structure_problems(nodes: Iterable[Node], duplicates: Sequence[str] = ()) -> list[str]:
    """Problems of the graph itself: bad or duplicate names, unknown parents, cycles."""
    listed = list(nodes)
    by_name = {node.name: node for node in listed}
    problems: list[str] = []
    for node in listed:
        problem = step_name_problem(node.name)
        if problem is not None:
            problems.append(
                f"step name {node.name!r} {problem}; name steps with letters, digits, '_' "
                "and '-', e.g. 'stage_data'"
            )
    problems += [
        f"step {name!r} is added more than once; give each step its own name" for name in duplicates
    ]
    for node in by_name.values():
        for parent in node.parents:
            if parent not in by_name:
                known = ", ".join(by_name) or "(none)"
                problems.append(
                    f"step {node.name!r} has an unknown parent {parent!r}; add a step of that "
                    f"name or fix the parent's name (the steps are: {known})"
                )
    cycle = find_cycle(by_name)
    if cycle:
        problems.append(
            "the steps form a cycle: " + " -> ".join(cycle) + "; remove one of these parents"
        )
    return problems

"""The pipeline's definition as plain data: its steps, its parameters and its options.

Each step option is declared once, in :data:`STEP_OPTIONS` (its keyword, the field of
:class:`StepSpec` it sets, how its value is converted, whether the pipeline file carries
it, and its help). ``add_step``, ``add_function_step``, ``PipelineDecorator.component``,
the pipeline file format and ``to_code`` all work from that declaration, and a test checks
that the public signatures name exactly the declared options.

Nothing here runs anything: the run state of a step lives in :mod:`clearnb.pipeline.node`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from clearnb import compat
from clearnb.errors import ClearnbError, PipelineError
from clearnb.execution.limits import parse_count, parse_memory_limit, parse_seconds
from clearnb.executors.choice import ExecutorChoice
from clearnb.notebook.parameters import plain
from clearnb.pipeline import references

NOTEBOOK = "notebook"
FUNCTION = "function"
RECORDED = "recorded"
"""The field of options accepted for compatibility and recorded with the step only."""


@dataclass
class StepSpec:
    """One step as defined: a notebook (a file, or a template) or a Python function."""

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
    retry_on_failure: int | Callable[..., bool] | None = None
    pre_execute_callback: Callable[..., Any] | None = None
    post_execute_callback: Callable[..., Any] | None = None
    status_change_callback: Callable[..., Any] | None = None
    monitor_metrics: list[Any] = field(default_factory=list)
    monitor_artifacts: list[Any] = field(default_factory=list)
    monitor_models: list[Any] = field(default_factory=list)
    configuration_overrides: dict[str, Any] = field(default_factory=dict)
    """Configuration objects the step's Task holds, ``{name: dict or text}``."""
    base_task_factory: Callable[[Any], Any] | None = None
    """``factory(node) -> Task``: the step's template, made when the step is to run."""
    function: Callable[..., Any] | None = None
    function_kwargs: dict[str, Any] = field(default_factory=dict)
    function_return: list[str] = field(default_factory=list)
    helper_functions: list[Callable[..., Any]] = field(default_factory=list)
    task_type: str | None = None
    tags: list[str] = field(default_factory=list)
    packages: list[str] | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    """Arguments accepted for compatibility and recorded only (docker, repo, ...)."""

    @property
    def kind(self) -> str:
        """``function`` or ``notebook``."""
        return FUNCTION if self.function is not None else NOTEBOOK

    @property
    def is_function(self) -> bool:
        """True for a step made from a Python function."""
        return self.function is not None

    @property
    def has_callbacks(self) -> bool:
        """True if the step calls back into the process that defined it (a callback, a
        base task factory)."""
        return bool(
            self.pre_execute_callback
            or self.post_execute_callback
            or self.status_change_callback
            or self.base_task_factory
        )

    def inputs(self) -> dict[str, Any]:
        """What the step receives: its overrides, or a function step's keyword arguments."""
        return self.function_kwargs if self.is_function else self.parameters


STEP_FIELDS = frozenset(f.name for f in fields(StepSpec))


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _listed_or_none(value: Any) -> list[Any] | None:
    return _listed(value) or None


def _absolute(value: Any) -> str | None:
    return str(Path(value).expanduser().absolute()) if value else None


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value or {})


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class StepOption:
    """One keyword a step takes: where it goes and how it travels."""

    name: str
    help: str
    kinds: frozenset[str]
    target: str | None
    """The :class:`StepSpec` field it sets; ``recorded`` records it; None: handled apart."""
    convert: Callable[[Any], Any] = _same
    in_file: bool = True
    """True if the pipeline file (and ``to_code``) carries it."""
    default: Any = None
    component: str | None = None
    """Its keyword in ``PipelineDecorator.component`` (None: the component has none)."""


BOTH = frozenset({NOTEBOOK, FUNCTION})
ONLY_NOTEBOOK = frozenset({NOTEBOOK})
ONLY_FUNCTION = frozenset({FUNCTION})


def _retries(value: Any) -> Any:
    """``retry_on_failure``: None, a callable, or a whole number of retries (0 or more)."""
    if value is None or callable(value):
        return value
    return parse_count(value, "retry_on_failure")


def _option(
    name: str,
    help: str,
    kinds: frozenset[str] = BOTH,
    target: str | None = "",
    convert: Callable[[Any], Any] = _same,
    *,
    in_file: bool = True,
    default: Any = None,
    component: str | None = "",
) -> StepOption:
    return StepOption(
        name=name,
        help=help,
        kinds=kinds,
        target=name if target == "" else target,
        convert=convert,
        in_file=in_file,
        default=default,
        component=name if component == "" else component,
    )


STEP_OPTIONS: tuple[StepOption, ...] = (
    _option("name", "the step's name, unique in the pipeline", component="name"),
    _option("parents", "steps that must finish first", convert=_listed, default=()),
    _option("base_task_id", "id of the template task to copy", ONLY_NOTEBOOK, component=None),
    _option("base_task_project", "project of the template", ONLY_NOTEBOOK, component=None),
    _option("base_task_name", "name of the template", ONLY_NOTEBOOK, component=None),
    _option(
        "notebook", "the notebook file to run", ONLY_NOTEBOOK, convert=_absolute, component=None
    ),
    _option(
        "parameter_override",
        'overrides, {"Section/name": value}, values may hold ${...} references',
        ONLY_NOTEBOOK,
        target="parameters",
        convert=lambda value: plain(_mapping(value)),
        default={},
        component=None,
    ),
    _option("function", "the Python function the step calls", ONLY_FUNCTION, component=None),
    _option(
        "function_kwargs",
        "the function's arguments, literals or ${step.name} references",
        ONLY_FUNCTION,
        convert=_mapping,
        default={},
        component=None,
    ),
    _option(
        "function_return",
        "names of the artifacts the return value(s) are stored as",
        ONLY_FUNCTION,
        convert=_listed,
        default=(),
        component="return_values",
    ),
    _option(
        "helper_functions",
        "functions the step's function calls, sent with it",
        ONLY_FUNCTION,
        convert=_listed,
        in_file=False,
        default=(),
    ),
    _option("execution_queue", "queue whose agents run the step", target="queue"),
    _option("time_limit", "seconds one attempt may take", target="timeout", convert=parse_seconds),
    _option(
        "memory_limit",
        "bytes (or '500MB') the step's kernel and its processes may hold",
        convert=parse_memory_limit,
    ),
    _option(
        "cache_executed_step",
        "reuse an earlier run with the same code, parameters and inputs",
        convert=bool,
        default=False,
        component="cache",
    ),
    _option(
        "continue_on_fail", "the pipeline goes on if this step fails", target=None, default=False
    ),
    _option(
        "continue_behaviour",
        "continue_on_fail, continue_on_abort, skip_children_on_fail, skip_children_on_abort",
        target=None,
    ),
    _option(
        "retry_on_failure",
        "retries, or callable(pipeline, node, retries) -> bool",
        convert=_retries,
    ),
    _option(
        "pre_execute_callback",
        "callable(pipeline, node, parameters) before the step; False skips it",
        in_file=False,
    ),
    _option("post_execute_callback", "callable(pipeline, node) after the step", in_file=False),
    _option(
        "status_change_callback",
        "callable(pipeline, node, previous_status) at each status change",
        in_file=False,
    ),
    _option("monitor_metrics", "scalars copied to the pipeline's Task", convert=_listed),
    _option("monitor_artifacts", "artifacts copied to the pipeline's Task", convert=_listed),
    _option("monitor_models", "output models shown on the pipeline's Task", convert=_listed),
    _option("task_type", "ClearML's task type (recorded)", ONLY_FUNCTION),
    _option("tags", "tags of the step's Task", ONLY_FUNCTION, convert=_listed),
    _option(
        "packages", "packages the step needs (recorded)", ONLY_FUNCTION, convert=_listed_or_none
    ),
    # -- accepted for compatibility and recorded with the step ----------------------------
    _option(
        "configuration_overrides",
        "configuration objects set on the step's Task, {name: dict or text}",
        ONLY_NOTEBOOK,
        convert=_mapping,
        default={},
        component=None,
    ),
    _option("task_overrides", "recorded", ONLY_NOTEBOOK, RECORDED, _mapping, component=None),
    _option("clone_base_task", "recorded", ONLY_NOTEBOOK, RECORDED, default=True, component=None),
    _option(
        "base_task_factory",
        "callable(node) -> Task: the template of the step, made when it is to run",
        ONLY_NOTEBOOK,
        in_file=False,
        component=None,
    ),
    _option(
        "recursively_parse_parameters",
        "recorded (references inside lists and dicts are always resolved here)",
        ONLY_NOTEBOOK,
        RECORDED,
        default=False,
        component=None,
    ),
    _option("output_uri", "recorded", BOTH, RECORDED),
    _option("project_name", "recorded", ONLY_FUNCTION, RECORDED, component=None),
    _option("task_name", "recorded", ONLY_FUNCTION, RECORDED, component=None),
    _option("auto_connect_frameworks", "recorded", ONLY_FUNCTION, RECORDED),
    _option("auto_connect_arg_parser", "recorded", ONLY_FUNCTION, RECORDED),
    _option("repo", "recorded", ONLY_FUNCTION, RECORDED),
    _option("repo_branch", "recorded", ONLY_FUNCTION, RECORDED),
    _option("repo_commit", "recorded", ONLY_FUNCTION, RECORDED),
    _option("docker", "recorded", ONLY_FUNCTION, RECORDED),
    _option("docker_args", "recorded", ONLY_FUNCTION, RECORDED),
    _option("docker_bash_setup_script", "recorded", ONLY_FUNCTION, RECORDED),
    _option("draft", "recorded", ONLY_FUNCTION, RECORDED, default=False),
    _option("working_dir", "recorded", ONLY_FUNCTION, RECORDED),
)
OPTIONS_BY_NAME = {option.name: option for option in STEP_OPTIONS}


def options_of(kind: str) -> list[StepOption]:
    """The options a step of ``kind`` (``notebook`` or ``function``) takes."""
    return [option for option in STEP_OPTIONS if kind in option.kinds]


def file_keys(kind: str) -> set[str]:
    """The keys a step of ``kind`` may have in a pipeline file."""
    keys = {option.name for option in options_of(kind) if option.in_file}
    return keys | {"function_source"} if kind == FUNCTION else keys


def component_options() -> dict[str, StepOption]:
    """The options of ``PipelineDecorator.component``, by its keyword for each."""
    return {
        option.component: option
        for option in options_of(FUNCTION)
        if option.component is not None and option.component != "name"
    }


def build_step(kind: str, arguments: Mapping[str, Any]) -> StepSpec:
    """A step of ``kind`` from the keywords of ``add_step`` / ``add_function_step``.

    Every keyword must be a declared option of that kind (a programming error otherwise:
    the public methods take only declared ones).
    """
    allowed = {option.name for option in options_of(kind)}
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise PipelineError(
            f"a {kind} step takes no option {', '.join(map(repr, unknown))}; it takes: "
            + ", ".join(sorted(allowed))
        )
    values: dict[str, Any] = {}
    recorded: dict[str, Any] = {}
    for option in options_of(kind):
        if option.target is None or option.name not in arguments:
            continue
        value = option.convert(arguments[option.name])
        if option.target == RECORDED:
            if value is not None and value != option.default:
                recorded[option.name] = value
        else:
            values[option.target] = value
    step = StepSpec(**values, recorded=recorded)
    apply_continue(
        step,
        bool(arguments.get("continue_on_fail", False)),
        arguments.get("continue_behaviour"),
    )
    return step


def apply_continue(
    step: StepSpec, continue_on_fail: bool, behaviour: Mapping[str, bool] | None
) -> None:
    """Set what a failure or abort of ``step`` does to the pipeline and to its children."""
    chosen = dict(behaviour or {})
    step.continue_on_fail = bool(chosen.get("continue_on_fail", continue_on_fail))
    step.continue_on_abort = bool(chosen.get("continue_on_abort", False))
    step.skip_children_on_fail = bool(
        chosen.get("skip_children_on_fail", not step.continue_on_fail)
    )
    step.skip_children_on_abort = bool(
        chosen.get("skip_children_on_abort", not step.continue_on_abort)
    )


def step_arguments(step: StepSpec, *, in_file_only: bool = True) -> dict[str, Any]:
    """The keywords that make ``step`` again (those that differ from their default).

    With ``in_file_only``, only what the pipeline file carries; a callable retry policy
    cannot travel and is left out.
    """
    arguments: dict[str, Any] = {"name": step.name}
    for option in options_of(step.kind):
        if option.name == "name" or (in_file_only and not option.in_file):
            continue
        if option.target == RECORDED:
            value = step.recorded.get(option.name)
        elif option.target is None:
            continue
        else:
            value = getattr(step, option.target)
        if option.name == "function" or value is None or callable(value):
            continue
        if value == option.default or (isinstance(value, list | dict) and not value):
            continue
        arguments[option.name] = list(value) if isinstance(value, tuple) else value
    if step.continue_on_fail:
        arguments["continue_on_fail"] = True
    defaults = {
        "continue_on_fail": step.continue_on_fail,
        "continue_on_abort": False,
        "skip_children_on_fail": not step.continue_on_fail,
        "skip_children_on_abort": True,
    }
    chosen = {
        "continue_on_abort": step.continue_on_abort,
        "skip_children_on_fail": step.skip_children_on_fail,
        "skip_children_on_abort": step.skip_children_on_abort,
    }
    behaviour = {key: value for key, value in chosen.items() if value != defaults[key]}
    if behaviour:
        arguments["continue_behaviour"] = behaviour
    return arguments


def has_reference(value: Any) -> bool:
    """True if ``value`` holds a ``${...}`` reference (or something that tries to)."""
    try:
        return bool(references.find(value))
    except ClearnbError:
        return True


def referenced_steps(step: StepSpec) -> list[str]:
    """The steps ``step``'s inputs reference (bad references are left to validation)."""
    found: list[str] = []
    for value in step.inputs().values():
        try:
            refs = references.find(value)
        except ClearnbError:
            continue
        found += [ref.step for ref in refs if ref.step != "pipeline" and ref.step not in found]
    return found


@dataclass(frozen=True)
class Serialization:
    """The pipeline's own functions for the values its function steps pass and return
    (ClearML's ``artifact_serialization_function`` and ``artifact_deserialization_function``):
    those values are stored as the bytes ``serialize`` makes, and read with ``deserialize``."""

    serialize: Callable[[Any], bytes | bytearray] | None = None
    deserialize: Callable[[bytes], Any] | None = None

    def pair(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        """``(serialize, deserialize)``."""
        return self.serialize, self.deserialize


@dataclass
class PipelineSpec:
    """A pipeline as defined: its steps in the order added, and its parameters."""

    name: str
    project: str
    version: str | None = None
    steps: dict[str, StepSpec] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)
    """Section of each parameter stored elsewhere than ``Args`` (the decorator's args_map)."""
    duplicates: list[str] = field(default_factory=list)
    """Names added more than once (reported by validation)."""
    abort_on_failure: bool = False
    default_execution_queue: str | None = None
    max_workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    strict: bool = False
    """Refuse an override of a parameter a step does not declare (ClearML sets it, warned)."""
    time_limit: float | None = None
    """Seconds the whole run may take; then it is stopped and fails (None: no limit)."""
    serialization: Serialization = field(default_factory=Serialization)
    executor: ExecutorChoice | None = None
    """Where steps run (None: here, and on agents for steps with a queue); see
    :mod:`clearnb.executors.choice`."""

    def add_parameter(self, name: str, default: Any = None, description: str | None = None) -> None:
        """Add (or change) a pipeline argument (numpy values kept as their Python values)."""
        self.parameters[name] = plain(default)
        if description:
            self.descriptions[name] = description

    def add(self, step: StepSpec) -> bool:
        """Add ``step``, its referenced steps becoming parents; False if the name is taken."""
        if step.name in self.steps:
            self.duplicates.append(step.name)
            return False
        for name in referenced_steps(step):
            if name not in step.parents:
                step.parents.append(name)
        self.steps[step.name] = step
        return True

    def replace(self, name: str, step: StepSpec) -> None:
        """Put ``step`` in the place of step ``name``; children follow a new name."""
        if name not in self.steps:
            raise PipelineError(f"no step named {name!r}")
        if step.name != name and step.name in self.steps:
            raise PipelineError(f"a step named {step.name!r} exists already")
        for referenced in referenced_steps(step):
            if referenced not in step.parents:
                step.parents.append(referenced)
        self.steps = {
            (step.name if key == name else key): (step if key == name else value)
            for key, value in self.steps.items()
        }
        if step.name != name:
            for other in self.steps.values():
                other.parents = [step.name if p == name else p for p in other.parents]

    def remove(self, name: str) -> StepSpec:
        """Take step ``name`` out (and out of its children's parents)."""
        if name not in self.steps:
            raise PipelineError(f"no step named {name!r}")
        removed = self.steps.pop(name)
        for other in self.steps.values():
            if name in other.parents:
                other.parents.remove(name)
        return removed

    def take(self, other: PipelineSpec) -> None:
        """Become a copy of ``other``'s name, version, steps and parameters."""
        self.name, self.project, self.version = other.name, other.project, other.version
        self.steps = dict(other.steps)
        self.parameters = dict(other.parameters)
        self.descriptions = dict(other.descriptions)
        self.duplicates = list(other.duplicates)
        if other.serialization != Serialization():  # a file without them keeps this one's
            self.serialization = other.serialization

    def edges(self) -> dict[str, list[str]]:
        """``{step: its parents}``, for the graph algorithms."""
        return {name: list(step.parents) for name, step in self.steps.items()}

    def section_of(self, parameter: str) -> str:
        """The section of the pipeline Task's parameters that holds ``parameter``."""
        return self.sections.get(parameter, PIPELINE_SECTION)

    def parameter_sections(self, plain: Callable[[Any], Any]) -> dict[str, dict[str, Any]]:
        """The pipeline's arguments by section, each value made storable by ``plain``."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in self.parameters.items():
            sections.setdefault(self.section_of(key), {})[key] = plain(value)
        return sections


PIPELINE_SECTION = "Args"
"""Section of the pipeline Task's parameters that holds the pipeline arguments."""


def steps_with_callbacks(steps: Iterable[StepSpec]) -> list[str]:
    """Names of the steps that call back into this process."""
    return [step.name for step in steps if step.has_callbacks]


def check_names(arguments: Sequence[str], kind: str) -> list[str]:
    """Declared options of ``kind`` missing from ``arguments``, and extra ones."""
    declared = {option.name for option in options_of(kind)}
    return sorted(declared.symmetric_difference(arguments))


PIPELINE_UNUSED: dict[str, Any] = {
    "docker": None,
    "docker_args": None,
    "docker_bash_setup_script": None,
    "packages": None,
    "repo": None,
    "repo_branch": None,
    "repo_commit": None,
    "working_dir": None,
    "output_uri": None,
    "pool_frequency": 0.2,
    "auto_version_bump": None,
    "always_create_from_code": True,
    "skip_global_imports": False,
    "enable_local_imports": True,
}
"""``PipelineController`` arguments that have no effect here, with ClearML's defaults: one
given otherwise is recorded with the run's Task and named in a CompatibilityWarning."""
UNUSED_WHY = (
    "clearnb has no ClearML server, containers or repository checkouts: steps run in this "
    "Python environment, followed by events rather than polled"
)
"""Why the arguments of :data:`PIPELINE_UNUSED` and the recorded step options do nothing."""


def unused_pipeline_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of :data:`PIPELINE_UNUSED` in ``arguments`` given otherwise than
    their default, as they are recorded."""
    given = {name: arguments.get(name) for name in PIPELINE_UNUSED}
    return compat.unused_arguments(given, PIPELINE_UNUSED)


NO_EFFECT_FIELDS = ("task_type", "packages")
"""Step options kept on the step (ClearML's Node shows them) that do nothing here."""
ALWAYS_SO = frozenset({"recursively_parse_parameters"})
"""Recorded step options whose ClearML meaning clearnb always gives (no warning)."""


def unused_step_options(kind: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a step of ``kind`` in ``arguments`` (``add_step``'s keywords) that
    only record: given otherwise than their default, as they are recorded."""
    given: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for option in options_of(kind):
        if option.name in ALWAYS_SO:
            continue
        if option.target == RECORDED or option.name in NO_EFFECT_FIELDS:
            value = arguments.get(option.name)
            if value is None or value == option.default or value in ([], {}, ()):
                continue
            given[option.name] = value
            defaults[option.name] = option.default
    return compat.unused_arguments(given, defaults)

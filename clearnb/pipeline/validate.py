"""Every problem of a pipeline found before anything runs, collected into one error.

The graph (names, parents, cycles), each step's references (to a pipeline parameter, to a
step, to what that step returns, stores or declares), a function step's unbound names,
a notebook step's notebook, kernel and parameters. :func:`validate` raises one
:class:`~clearnb.errors.PipelineError` listing them all.

An override of a parameter a step does not declare is not a problem (ClearML sets it on the
step's task) unless the pipeline is strict: :func:`parameter_warnings` says what each step
gets that way, and :func:`validate` warns about it so that a typo stays visible.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clearnb.artifacts.storage import check_user_artifact_name, validate_artifact_name
from clearnb.errors import ClearnbError, ParameterWarning, PipelineError
from clearnb.notebook.files import check_kernel
from clearnb.notebook.parameters import GENERAL, split_key
from clearnb.notebook.scripts import is_script
from clearnb.pipeline import functions, graph, references
from clearnb.pipeline.references import Reference
from clearnb.pipeline.sources import Sources, made_when_run, missing_template, signature_defaults
from clearnb.pipeline.spec import PipelineSpec, StepSpec, has_reference

log = logging.getLogger(__name__)

QueueOf = Callable[[StepSpec], "str | None"]
"""The queue a step is sent to (None: it runs here, so its kernel must be installed here)."""


def validate(spec: PipelineSpec, sources: Sources, queue_of: QueueOf) -> None:
    """Raise one :class:`PipelineError` listing every problem of ``spec``; then warn
    (:class:`ParameterWarning`, also logged) of each override no step declares."""
    found = problems(spec, sources, queue_of)
    if found:
        raise PipelineError.collect(found, "problem")
    for step in spec.steps.values():
        warn_undeclared(spec, step, sources)


def warn_undeclared(spec: PipelineSpec, step: StepSpec, sources: Sources) -> None:
    """Warn (and log) of each override of ``step`` that names no declared parameter."""
    for message in parameter_warnings(spec, step, sources):
        log.warning("%s", message)
        warnings.warn(message, ParameterWarning, stacklevel=4)


def parameter_warnings(spec: PipelineSpec, step: StepSpec, sources: Sources) -> list[str]:
    """What is said of each override of ``step`` that names no parameter it declares (none
    when ``spec`` is strict: then each is a problem)."""
    if spec.strict or step.is_function or missing_template(step) or not step.parameters:
        return []
    try:
        path, declared, _ = sources.declared(step)
    except ClearnbError:
        return []  # the step's problems say why
    return [
        f"step {step.name!r} ({Path(path).name}) does not declare a parameter {key!r}; it "
        f"declares: {', '.join(known) or '(none)'}. It is set on the step's task and "
        "injected as given (PipelineController(..., strict=True) refuses it)"
        for key, known in declared.undeclared(step.parameters).items()
    ]


def problems(spec: PipelineSpec, sources: Sources, queue_of: QueueOf) -> list[str]:
    """Every problem of ``spec``, one sentence each (empty if none)."""
    found = graph.structure_problems(spec.edges(), spec.duplicates)
    found += serialization_problems(spec)
    for step in spec.steps.values():
        found.extend(step_problems(spec, step, sources, queue_of))
    return found


def new_step_problems(
    spec: PipelineSpec, step: StepSpec, sources: Sources, queue_of: QueueOf
) -> list[str]:
    """The problems of ``step``, about to join ``spec`` (its parents must exist already)."""
    found = step_problems(spec, step, sources, queue_of)
    found += [
        f"step {step.name!r} has an unknown parent {parent!r}"
        for parent in step.parents
        if parent not in spec.steps
    ]
    return found


def check_step(spec: PipelineSpec, name: str, sources: Sources, queue_of: QueueOf) -> list[str]:
    """The problems of step ``name`` of ``spec`` against the other steps."""
    if name not in spec.steps:
        raise PipelineError(f"no step named {name!r}")
    others = PipelineSpec(spec.name, spec.project, parameters=spec.parameters, strict=spec.strict)
    others.steps = {key: value for key, value in spec.steps.items() if key != name}
    return new_step_problems(others, spec.steps[name], sources, queue_of)


def step_problems(
    spec: PipelineSpec, step: StepSpec, sources: Sources, queue_of: QueueOf
) -> list[str]:
    """The problems of one step of ``spec``."""
    found: list[str] = []
    refs: list[Reference] = []
    for key, value in step.inputs().items():
        try:
            refs.extend(references.find(value))
        except ClearnbError as exc:
            found.append(f"step {step.name!r}, {key}: {exc}")
    for ref in refs:
        found.extend(_reference_problems(spec, step, ref, sources))
    for item in step.monitor_artifacts:
        target = item if isinstance(item, str) else tuple(item)[-1]
        try:
            check_user_artifact_name(target)
        except ClearnbError as exc:
            found.append(
                f"step {step.name!r}: monitor_artifacts copies an artifact to the pipeline's "
                f"Task under its name there, and {exc}"
            )
    if step.is_function:
        return found + _function_problems(step)
    if missing_template(step):
        found.append(
            f"step {step.name!r} names no notebook: pass notebook='path.ipynb', "
            "base_task_id=..., or base_task_project=... and base_task_name=..."
        )
        return found
    if made_when_run(step):
        return found  # its notebook is made when it is to run
    try:
        path, declared, nb = sources.declared(step)
    except ClearnbError as exc:
        found.append(f"step {step.name!r}: {exc}")
        return found
    label = f"step {step.name!r} ({Path(path).name})"
    if queue_of(step) is None:  # a queued step's kernel is the agent's business
        try:
            check_kernel(nb, label)
        except ClearnbError as exc:
            found.append(str(exc))
    known_now = _known_before_running(spec, step.parameters)
    try:
        resolved = declared.resolve(known_now, label, strict=spec.strict)
        declared.injected(resolved, connected=is_script(path))
    except ClearnbError as exc:
        found.extend(exc.fields.get("problems", [str(exc)]))
    for key, value in step.parameters.items():
        if not has_reference(value) or not spec.strict:
            continue
        section, name = split_key(key)
        known = declared.sections.get(section)
        if known is not None and name not in known:
            listed = ", ".join(sorted(known)) or "(none)"
            found.append(f"{label} does not declare a parameter {key!r}; it declares: {listed}")
    return found


def _known_before_running(spec: PipelineSpec, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The step's parameter values that are known before any step runs: plain values, and
    those that reference only the pipeline's own parameters, substituted."""
    known: dict[str, Any] = {}
    for key, value in parameters.items():
        try:
            found = references.find(value)
        except ClearnbError:
            continue  # reported with the step's references
        if all(ref.step == "pipeline" and ref.name in spec.parameters for ref in found):
            known[key] = references.substitute(value, lambda ref: spec.parameters[ref.name])
    return known


def serialization_problems(spec: PipelineSpec) -> list[str]:
    """What keeps the pipeline's (de)serialization functions from reaching the notebooks
    of its function steps."""
    found: list[str] = []
    roles = (functions.SERIALIZE, functions.DESERIALIZE)
    for role, function in zip(roles, spec.serialization.pair(), strict=True):
        if function is None:
            continue
        try:
            defined, _, _ = functions.serializer_parts(function, role)
            unbound = functions.unbound_names(defined[0]) if defined else []
        except ClearnbError as exc:
            found.append(str(exc))
            continue
        if unbound:
            found.append(
                f"the pipeline's artifact_{role}ation_function {function.__name__} uses "
                f"{', '.join(map(repr, unbound))}, which it neither imports nor receives: "
                "import inside the function, as it runs in each step's notebook"
            )
    return found


def _function_problems(step: StepSpec) -> list[str]:
    assert step.function is not None
    try:
        unbound = functions.unbound_names(step.function, step.helper_functions)
    except ClearnbError as exc:
        return [f"step {step.name!r}: {exc}"]
    found: list[str] = []
    if unbound:
        names = ", ".join(repr(n) for n in unbound)
        found.append(
            f"step {step.name!r} ({step.function.__name__}) uses {names}, which it "
            "neither imports nor receives: import inside the function, pass it as an "
            "argument, or list the function in helper_functions"
        )
    for returned in step.function_return:
        try:
            check_user_artifact_name(returned)
        except ClearnbError as exc:
            found.append(
                f"step {step.name!r}: function_return names the artifact each value is "
                f"stored as, and {exc}"
            )
    return found


def _reference_problems(
    spec: PipelineSpec, step: StepSpec, ref: Reference, sources: Sources
) -> list[str]:
    if ref.step == "pipeline":
        if ref.name not in spec.parameters:
            known = ", ".join(spec.parameters) or "(none)"
            return [
                f"step {step.name!r} references {ref.text}, but the pipeline has no "
                f"parameter {ref.name!r} (add_parameter); it has: {known}"
            ]
        return []
    if ref.step not in spec.steps:
        known = ", ".join(spec.steps) or "(none)"
        return [
            f"step {step.name!r} references {ref.text}, but there is no step "
            f"{ref.step!r}; the steps are: {known}"
        ]
    other = spec.steps[ref.step]
    if ref.kind == "return":
        if not other.is_function:
            return [
                f"step {step.name!r} references {ref.text}: {ref.step!r} is a notebook "
                "step; use ${" + ref.step + ".artifacts.<name>.url} or ${" + ref.step + ".id}"
            ]
        if ref.name not in other.function_return:
            returns = ", ".join(other.function_return) or "(none)"
            return [
                f"step {step.name!r} references {ref.text}, but {ref.step!r} returns: "
                f"{returns}; reference one of those, or add {ref.name!r} to its "
                "function_return"
            ]
    if ref.kind == "artifact":
        try:
            validate_artifact_name(ref.name)
        except ClearnbError as exc:
            return [f"step {step.name!r} references {ref.text}, which no step can store: {exc}"]
    if ref.kind == "step_parameter":
        return _step_parameter_problems(step, ref, other, sources)
    return []


def _step_parameter_problems(
    step: StepSpec, ref: Reference, other: StepSpec, sources: Sources
) -> list[str]:
    """A ``${step.parameters.Section/name}`` naming what ``other`` does not declare."""
    section, name = split_key(ref.name)
    if other.is_function:
        assert other.function is not None
        kwargs = set(signature_defaults(other.function)) | set(other.function_kwargs)
        sections = {functions.KWARGS_SECTION: kwargs}
        label = f"{other.function.__name__}()"
    else:
        try:
            path, declared, _ = sources.declared(other)
        except ClearnbError:
            return []  # the other step's own problems say why
        sections = {key: set(found) for key, found in declared.sections.items() if found}
        label = Path(path).name
    known = sections.get(section)
    if known is None and section != GENERAL:
        return []  # a section a notebook may connect at run time
    if known is not None and name in known:
        return []
    listed = ", ".join(
        f"{key}/{found}" for key in sorted(sections) for found in sorted(sections[key])
    )
    return [
        f"step {step.name!r} references {ref.text}, but step {ref.step!r} ({label}) has no "
        f"parameter {section}/{name}; its parameters are: {listed or '(none)'}"
    ]

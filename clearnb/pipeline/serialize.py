"""The pipeline file format: its keys declared once, reading, writing, and code export.

A pipeline file is JSON: ``{"clearnb_pipeline": 1, "name": ..., "project": ..., "steps":
[...]}``. The keys of a step are those options of :data:`clearnb.pipeline.spec.STEP_OPTIONS`
the file carries (``in_file``), so adding an option to a step is one declaration and never
silently makes a new file key. Function steps name their function as ``module:qualname``
and, in the portable form an agent receives, carry its source.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clearnb.errors import ClearnbError, PipelineError
from clearnb.executors.choice import executor_choice
from clearnb.notebook.parameters import plain
from clearnb.pipeline import functions
from clearnb.pipeline.spec import (
    FUNCTION,
    NOTEBOOK,
    PipelineSpec,
    Serialization,
    StepSpec,
    build_step,
    file_keys,
    step_arguments,
)

FORMAT = 1
FORMAT_KEY = "clearnb_pipeline"
PIPELINE_KEYS: dict[str, str] = {
    FORMAT_KEY: "the format of the file (1)",
    "name": "the pipeline's name",
    "project": "its project",
    "version": "its version",
    "parameters": "its arguments and their defaults",
    "descriptions": "a description of each argument",
    "abort_on_failure": "stop every step when one fails",
    "default_execution_queue": "the queue of steps that name none",
    "max_workers": "at most this many steps run at once",
    "strict": "refuse an override of a parameter a step does not declare",
    "time_limit": "seconds the whole run may take (set_pipeline_execution_time_limit)",
    "serialization": "the functions that store and read function steps' values, by role",
    "executor": "where steps run: local, dask (worker processes here) or dask://HOST:PORT",
    "steps": "the steps, in the order they were added",
    "force": "run cached steps again (set for a run sent to a queue)",
}
"""Every key a pipeline file may have, with what it means."""
ROLES = (functions.SERIALIZE, functions.DESERIALIZE)
"""The keys of ``serialization``: the function that stores values, the one that reads them."""


def to_dict(spec: PipelineSpec, *, portable: bool = False) -> dict[str, Any]:
    """The definition as plain data (what a pipeline file holds).

    ``portable`` also carries the source of function steps, so that another process (an
    agent) can run them without importing the module that defined them.
    """
    return {
        FORMAT_KEY: FORMAT,
        "name": spec.name,
        "project": spec.project,
        "version": spec.version,
        "parameters": dict(spec.parameters),
        "descriptions": dict(spec.descriptions),
        "abort_on_failure": spec.abort_on_failure,
        "default_execution_queue": spec.default_execution_queue,
        "max_workers": spec.max_workers,
        "strict": spec.strict,
        **({"time_limit": spec.time_limit} if spec.time_limit else {}),
        **({"executor": spec.executor.url} if spec.executor else {}),
        **serialization_entry(spec.serialization, portable=portable),
        "steps": [step_entry(step, portable=portable) for step in spec.steps.values()],
    }


def serialization_entry(serialization: Serialization, *, portable: bool) -> dict[str, Any]:
    """The pipeline's (de)serialization functions as the file holds them: each by
    ``module:qualname`` and, in the portable form, a ``def`` with its source."""
    roles: dict[str, Any] = {}
    for role, function in zip(ROLES, serialization.pair(), strict=True):
        if function is None:
            continue
        held: dict[str, Any] = {"function": f"{function.__module__}:{function.__qualname__}"}
        if portable and inspect.isfunction(function):
            held["source"] = functions.portable_source(function)
        roles[role] = held
    return {"serialization": roles} if roles else {}


def serialization_of(data: Mapping[str, Any], functions_folder: Path) -> Serialization:
    """The (de)serialization functions a pipeline file names (loaded, or imported here)."""
    found: dict[str, Any] = {}
    for role, held in (data.get("serialization") or {}).items():
        if "source" in held:
            found[role] = functions.load_portable(held["source"], functions_folder)[0]
        else:
            found[role] = load_function(f"artifact_{role}ation_function", held["function"])
    return Serialization(found.get(ROLES[0]), found.get(ROLES[1]))


def step_entry(step: StepSpec, *, portable: bool = False) -> dict[str, Any]:
    """One step as the file holds it."""
    entry = step_arguments(step)
    if step.is_function:
        function = step.function
        assert function is not None
        entry = {
            "name": step.name,
            "function": f"{function.__module__}:{function.__qualname__}",
            **{k: v for k, v in entry.items() if k != "name"},
        }
        if portable:
            entry["function_source"] = functions.portable_source(function, step.helper_functions)
    return entry


def save(spec: PipelineSpec, path: str | os.PathLike[str]) -> Path:
    """Write ``spec`` to a JSON file (atomically: a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(to_dict(spec), indent=2) + "\n", encoding="utf-8")
    temporary.replace(target)
    return target


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked contents of a pipeline file; every problem in one error."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(f"no pipeline file at {source}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise PipelineError(
            f"{source} is not a pipeline file (not JSON: {exc}); write one with pipe.save()"
        ) from exc
    if not isinstance(data, dict) or FORMAT_KEY not in data:
        held = f"JSON {type(data).__name__}" if not isinstance(data, dict) else "JSON object"
        raise PipelineError(
            f"{source} is not a clearnb pipeline file (a {held} without "
            f"'{FORMAT_KEY}': 1 in it); write one with pipe.save()"
        )
    if data[FORMAT_KEY] != FORMAT:
        raise PipelineError(
            f"{source} is a clearnb pipeline file of format {data[FORMAT_KEY]!r}, "
            f"which this clearnb does not read (it reads format {FORMAT}); upgrade clearnb, or "
            "write the file again with pipe.save()"
        )
    problems = definition_problems(data)
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        plural = "s" if len(problems) != 1 else ""
        raise PipelineError(
            f"{source} is not a valid pipeline file ({len(problems)} problem{plural}):\n"
            f"{lines}\nFix the file, or write it again with pipe.save().",
            problems=problems,
        )
    return data


def definition_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the contents of a pipeline file (an empty list if nothing)."""
    problems: list[str] = []
    unknown = sorted(set(data) - set(PIPELINE_KEYS))
    if unknown:
        problems.append(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"a pipeline file has: {', '.join(sorted(PIPELINE_KEYS))}"
        )
    for key in ("name", "project"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(f"{key!r} is missing or not a non-empty string")
    for key in ("parameters", "descriptions"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            problems.append(f'{key!r} must be an object ({{"name": value}})')
    roles = data.get("serialization")
    if roles is not None and not (
        isinstance(roles, dict)
        and set(roles) <= set(ROLES)
        and all(isinstance(held, dict) and "function" in held for held in roles.values())
    ):
        problems.append(
            "'serialization' must be an object of 'serialize' and 'deserialize', each "
            '{"function": "module:name"}'
        )
    limit = data.get("time_limit")
    if limit is not None and (not isinstance(limit, int | float) or isinstance(limit, bool)):
        problems.append("'time_limit' must be a number of seconds")
    if data.get("executor") is not None:
        try:
            executor_choice(str(data["executor"]))
        except ClearnbError as exc:
            problems.append(f"'executor': {exc}")
    steps = data.get("steps")
    if not isinstance(steps, list):
        problems.append(
            "'steps' is missing; add \"steps\": [...] with one object per step"
            if steps is None
            else f"'steps' must be a list of step objects, not a {type(steps).__name__}"
        )
        return problems
    for number, step in enumerate(steps, 1):
        problems.extend(_step_problems(number, step))
    return problems


def _step_problems(number: int, step: Any) -> list[str]:
    if not isinstance(step, dict):
        return [f"step #{number} is a {type(step).__name__}, not an object"]
    problems: list[str] = []
    name = step.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"step #{number} has no 'name' (a non-empty string)")
        label = f"step #{number}"
    else:
        label = f"step {name!r}"
    allowed = file_keys(FUNCTION if "function" in step else NOTEBOOK)
    extra = sorted(set(step) - allowed)
    if extra:
        problems.append(
            f"{label} has unknown key{'s' if len(extra) > 1 else ''} "
            f"{', '.join(map(repr, extra))}; a step may have: {', '.join(sorted(allowed))}"
        )
    shapes: tuple[tuple[str, type, str], ...] = (
        ("parents", list, "a list of step names"),
        ("parameter_override", dict, 'an object ({"Section/name": value})'),
        ("function_kwargs", dict, 'an object ({"argument": value})'),
        ("function_return", list, "a list of names"),
        ("function", str, "'module:function'"),
    )
    for key, kind, shown in shapes:
        if key in step and not isinstance(step[key], kind):
            problems.append(f"{label}: {key!r} must be {shown}")
    for key in ("parents", "function_return"):
        if isinstance(step.get(key), list) and not all(isinstance(v, str) for v in step[key]):
            problems.append(f"{label}: {key!r} must hold only strings")
    return problems


def from_dict(data: Mapping[str, Any], functions_folder: Path) -> PipelineSpec:
    """The definition held by ``data`` (as :func:`to_dict` writes it)."""
    spec = PipelineSpec(
        name=data["name"],
        project=data["project"],
        version=data.get("version"),
        abort_on_failure=bool(data.get("abort_on_failure", False)),
        default_execution_queue=data.get("default_execution_queue"),
        strict=bool(data.get("strict", False)),
    )
    if data.get("max_workers"):
        spec.max_workers = max(1, int(data["max_workers"]))
    if data.get("time_limit"):
        spec.time_limit = float(data["time_limit"])
    if data.get("executor"):
        spec.executor = executor_choice(str(data["executor"]))
    spec.serialization = serialization_of(data, functions_folder)
    descriptions = data.get("descriptions") or {}
    for key, value in (data.get("parameters") or {}).items():
        spec.add_parameter(key, value, descriptions.get(key))
    for entry in data.get("steps") or []:
        arguments = dict(entry)
        if "function" in arguments:
            reference = arguments.pop("function")
            portable = arguments.pop("function_source", None)
            if portable is not None:
                function, helpers = functions.load_portable(portable, functions_folder)
                arguments["helper_functions"] = helpers
            else:
                function = load_function(arguments.get("name"), reference)
            spec.add(build_step(FUNCTION, {**arguments, "function": function}))
        else:
            spec.add(build_step(NOTEBOOK, arguments))
    return spec


def load_function(step: Any, reference: str) -> Any:
    """The function ``module:qualname`` names (imported here)."""
    module, _, qualname = reference.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PipelineError(
            f"step {step!r}: the function {module}:{qualname} cannot "
            f"be loaded ({type(exc).__name__}: {exc}); make its module "
            "importable here (run from its folder or install it), or save the "
            "pipeline with its code (to_dict(portable=True))"
        ) from exc
    return found


def python_literal(value: Any) -> str:
    """``value`` as Python source that evaluates back to it: numpy values as their Python
    values, NaN and infinities as ``float('nan')`` and ``float('inf')``."""
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, list | tuple):
        items = [python_literal(item) for item in value]
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
            + "}"
        )
    return repr(value)


def to_code(spec: PipelineSpec) -> str:
    """Python code that builds ``spec`` (to paste into a notebook)."""
    lines = [
        "from clearnb import PipelineController",
        "",
        f"pipe = PipelineController(name={spec.name!r}, project={spec.project!r}"
        + (f", version={spec.version!r}" if spec.version else "")
        + (", abort_on_failure=True" if spec.abort_on_failure else "")
        + (", strict=True" if spec.strict else "")
        + (f", executor={spec.executor.url!r}" if spec.executor else "")
        + ")",
    ]
    if spec.time_limit:
        lines.append(f"pipe.set_pipeline_execution_time_limit({spec.time_limit / 60:g})")
    for role, held in (
        serialization_entry(spec.serialization, portable=False).get("serialization", {}).items()
    ):
        lines.append(f"# artifact_{role}ation_function: {held['function']}")
    for key, value in spec.parameters.items():
        description = spec.descriptions.get(key)
        lines.append(
            f"pipe.add_parameter({key!r}, {python_literal(value)}"
            + (f", {description!r}" if description else "")
            + ")"
        )
    for step in spec.steps.values():
        entry = step_entry(step)
        if step.is_function:
            lines.append(f"# {step.name}: function step {entry['function']}")
            continue
        arguments = ", ".join(f"{key}={python_literal(value)}" for key, value in entry.items())
        lines.append(f"pipe.add_step({arguments})")
    lines += ["pipe.start()", "pipe.wait()", "pipe.stop()"]
    return "\n".join(lines) + "\n"

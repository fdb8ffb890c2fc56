"""``${...}`` references in step overrides, as ClearML writes them.

=====================================================  ==========================================
reference                                              resolves to
=====================================================  ==========================================
``${pipeline.<arg>}``                                  a pipeline parameter
``${<step>.id}``                                       the id of the step's Task
``${<step>.parameters.<Section>/<name>}``              a parameter the step ran with
``${<step>.artifacts.<name>.url|hash|size|type}``      a fact of one of the step's artifacts
``${<step>.artifacts.<name>}``                         the artifact's url
``${<step>.<return_name>}``                            a function step's return value
=====================================================  ==========================================

A value that is exactly one reference takes the referenced value as it is (a size stays an
int); references inside longer text are replaced by their text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clearnb.errors import InvalidReferenceError

PATTERN = re.compile(r"\$\{([^}]*)\}")
ARTIFACT_FIELDS = ("url", "hash", "size", "type", "preview")


@dataclass(frozen=True)
class Reference:
    """One parsed ``${...}`` reference."""

    text: str
    """The whole reference as written, ``${...}`` included."""
    step: str
    """``pipeline`` or a step name."""
    kind: str
    """``parameter`` (of the pipeline), ``id``, ``step_parameter``, ``artifact`` or ``return``."""
    name: str = ""
    """Parameter, artifact or return value name."""
    field: str = ""
    """For artifacts: ``url``, ``hash``, ``size``, ``type`` or ``preview``."""


def parse(text: str) -> Reference:
    """Parse one ``${...}`` reference (with or without the ``${ }``)."""
    inner = text[2:-1] if text.startswith("${") and text.endswith("}") else text
    whole = "${" + inner + "}"
    parts = inner.strip().split(".")
    if len(parts) < 2 or not all(parts[:2]):
        raise InvalidReferenceError(
            f"{whole} is not a reference; write ${{pipeline.<arg>}}, ${{<step>.id}}, "
            "${<step>.parameters.<Section>/<name>} or ${<step>.artifacts.<name>.url}"
        )
    step = parts[0]
    if step == "pipeline":
        return Reference(whole, step, "parameter", ".".join(parts[1:]))
    if parts[1] == "id" and len(parts) == 2:
        return Reference(whole, step, "id")
    if parts[1] == "parameters":
        name = ".".join(parts[2:])
        if not name:
            raise InvalidReferenceError(
                f"{whole} names no parameter; write ${{{step}.parameters.General/x}}"
            )
        return Reference(whole, step, "step_parameter", name)
    if parts[1] == "artifacts":
        if len(parts) < 3 or not parts[2]:
            raise InvalidReferenceError(
                f"{whole} names no artifact; write ${{{step}.artifacts.<name>.url}}"
            )
        field = parts[3] if len(parts) > 3 else "url"
        if len(parts) > 4 or field not in ARTIFACT_FIELDS:
            fields = ", ".join(ARTIFACT_FIELDS)
            raise InvalidReferenceError(f"{whole}: an artifact reference ends with one of {fields}")
        return Reference(whole, step, "artifact", parts[2], field)
    if len(parts) == 2:
        return Reference(whole, step, "return", parts[1])
    raise InvalidReferenceError(f"{whole} is not a reference clearnb understands")


def find(value: Any) -> list[Reference]:
    """Every reference in ``value`` (strings, and strings inside lists and dicts)."""
    found: list[Reference] = []
    if isinstance(value, str):
        found.extend(parse(match.group(0)) for match in PATTERN.finditer(value))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(find(item))
    elif isinstance(value, Mapping):
        for item in value.values():
            found.extend(find(item))
    return found


def substitute(value: Any, lookup: Callable[[Reference], Any]) -> Any:
    """``value`` with every reference replaced by ``lookup(reference)``."""
    if isinstance(value, str):
        whole = PATTERN.fullmatch(value)
        if whole:
            return lookup(parse(value))
        return PATTERN.sub(lambda m: str(lookup(parse(m.group(0)))), value)
    if isinstance(value, list):
        return [substitute(item, lookup) for item in value]
    if isinstance(value, tuple):
        return tuple(substitute(item, lookup) for item in value)
    if isinstance(value, Mapping):
        return {key: substitute(item, lookup) for key, item in value.items()}
    return value

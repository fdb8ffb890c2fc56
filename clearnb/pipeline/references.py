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

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clearnb.errors import InvalidReferenceError

PATTERN = re.compile(r"\$\{([^}]*)\}")
ARTIFACT_FIELDS = ("url", "hash", "size", "type", "preview")
FORMS = (
    "${pipeline.<arg>}, ${<step>.id}, ${<step>.parameters.<Section>/<name>}, "
    "${<step>.artifacts.<name>[.url|.hash|.size|.type|.preview]} or ${<step>.<return_name>}"
)
"""The forms a reference can take, as error messages list them."""
_FORBIDDEN = ("$", "{", "}")


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


def _refuse(whole: str, problem: str, hint: str = "") -> InvalidReferenceError:
    advice = hint or f"Write one of {FORMS}"
    return InvalidReferenceError(
        f"{whole} is not a valid reference: {problem}. {advice}",
        reference=whole,
        problem=problem,
    )


def parse(text: str) -> Reference:
    """Parse one ``${...}`` reference (with or without the ``${ }``).

    Raises :class:`~clearnb.errors.InvalidReferenceError` saying what is wrong and how to
    write it instead.
    """
    if not isinstance(text, str):
        raise InvalidReferenceError(
            f"a reference is text such as '${{step.id}}', not {type(text).__name__} "
            f"{text!r}. Write one of {FORMS}",
            reference=repr(text),
        )
    if text.startswith("${"):
        if not text.endswith("}") or len(text) < 3:
            example = text + "}" if len(text) > 2 else "${step.id}"
            raise _refuse(
                text, "'${' is opened but never closed with '}'", f"Add the closing '}}': {example}"
            )
        inner, whole = text[2:-1], text
    else:
        inner, whole = text, "${" + text + "}"
    if any(char in inner for char in _FORBIDDEN):
        raise _refuse(
            whole,
            "it holds '$', '{' or '}' inside (references cannot be nested)",
            f"Write one reference per '${{...}}', each one of {FORMS}",
        )
    stripped = inner.strip()
    if not stripped:
        raise _refuse(whole, "it is empty")
    parts = [part.strip() for part in stripped.split(".")]
    if "" in parts:
        raise _refuse(whole, "one of its dot-separated parts is empty (a '.' too many or too few)")
    step = parts[0]
    if len(parts) == 1:
        raise _refuse(
            whole,
            f"it names only {step!r}, not what to take from it",
            f"Write e.g. ${{{step}.id}}, or one of {FORMS}",
        )
    if step == "pipeline":
        return Reference(whole, step, "parameter", ".".join(parts[1:]))
    if parts[1] == "id":
        if len(parts) > 2:
            raise _refuse(whole, "nothing can follow '.id'", f"Write ${{{step}.id}}")
        return Reference(whole, step, "id")
    if parts[1] == "parameters":
        if len(parts) == 2:
            raise _refuse(
                whole, "it names no parameter", f"Write ${{{step}.parameters.General/<name>}}"
            )
        return Reference(whole, step, "step_parameter", ".".join(parts[2:]))
    if parts[1] == "artifacts":
        if len(parts) == 2:
            raise _refuse(whole, "it names no artifact", f"Write ${{{step}.artifacts.<name>}}")
        field = parts[3] if len(parts) > 3 else "url"
        if len(parts) > 4 or field not in ARTIFACT_FIELDS:
            fields = ", ".join(ARTIFACT_FIELDS)
            raise _refuse(
                whole,
                f"after the artifact's name only one of {fields} may follow (and an artifact "
                "whose name holds a '.' cannot be referenced)",
                f"Write ${{{parts[0]}.artifacts.{parts[2]}}} or "
                f"${{{parts[0]}.artifacts.{parts[2]}.hash}}",
            )
        return Reference(whole, step, "artifact", parts[2], field)
    if len(parts) == 2:
        return Reference(whole, step, "return", parts[1])
    raise _refuse(
        whole,
        f"{'.'.join(parts[1:])!r} is neither 'id', 'parameters.<Section>/<name>', "
        "'artifacts.<name>[.<field>]' nor the name of a return value",
    )


def format_reference(reference: Reference) -> str:
    """The canonical text of ``reference`` (:func:`parse` reads it back)."""
    step, kind, name = reference.step, reference.kind, reference.name
    if kind == "parameter":
        return f"${{pipeline.{name}}}"
    if kind == "id":
        return f"${{{step}.id}}"
    if kind == "step_parameter":
        return f"${{{step}.parameters.{name}}}"
    if kind == "artifact":
        return f"${{{step}.artifacts.{name}.{reference.field or 'url'}}}"
    if kind == "return":
        return f"${{{step}.{name}}}"
    raise InvalidReferenceError(
        f"unknown reference kind {kind!r}; use parameter, id, step_parameter, artifact or return",
        reference=reference,
    )


def _scan(text: str) -> list[tuple[re.Match[str], Reference]]:
    """Every reference in ``text`` with its match; an unclosed ``${`` is an error."""
    found: list[tuple[re.Match[str], Reference]] = []
    position = 0
    for match in PATTERN.finditer(text):
        _check_gap(text, position, match.start())
        found.append((match, parse(match.group(0))))
        position = match.end()
    _check_gap(text, position, len(text))
    return found


def _check_gap(text: str, start: int, end: int) -> None:
    opened = text.find("${", start, end)
    if opened >= 0:
        shown = text[opened : opened + 40]
        raise InvalidReferenceError(
            f"{text!r} opens a reference with '${{' that is never closed (at {shown!r}). "
            "Add the closing '}' (e.g. ${step.id}); a value cannot hold a '${' of its own",
            reference=text,
            problem="unclosed",
        )


def find(value: Any) -> list[Reference]:
    """Every reference in ``value`` (strings, and strings inside lists and dicts)."""
    found: list[Reference] = []
    if isinstance(value, str):
        found.extend(reference for _, reference in _scan(value))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(find(item))
    elif isinstance(value, Mapping):
        for item in value.values():
            found.extend(find(item))
    return found


def substitute(value: Any, lookup: Callable[[Reference], Any]) -> Any:
    """``value`` with every reference replaced by ``lookup(reference)``.

    A string that is exactly one reference becomes the looked-up value itself, of its
    own type; references inside longer text are replaced by their text.
    """
    if isinstance(value, str):
        matches = _scan(value)
        if len(matches) == 1 and matches[0][0].group(0) == value:
            return lookup(matches[0][1])
        pieces: list[str] = []
        position = 0
        for match, reference in matches:
            pieces.append(value[position : match.start()])
            pieces.append(str(lookup(reference)))
            position = match.end()
        pieces.append(value[position:])
        return "".join(pieces)
    if isinstance(value, list):
        return [substitute(item, lookup) for item in value]
    if isinstance(value, tuple):
        return tuple(substitute(item, lookup) for item in value)
    if isinstance(value, Mapping):
        return {key: substitute(item, lookup) for key, item in value.items()}
    return value


def substitute_literal(text: str, lookup: Callable[[Reference], Any]) -> Any:
    """A list or dict written as text with references in it (``"[${a.id}, ${b.id}]"``),
    parsed with each reference's value in its place, quoted or not (ClearML parses such
    text as YAML). The text is parsed as literals only, never run; text that is no such
    literal is substituted as :func:`substitute` does."""
    matches = _scan(text)
    if not matches or text.strip()[:1] not in ("[", "{", "("):
        return substitute(text, lookup)
    values: dict[str, Any] = {}
    pieces: list[str] = []
    position = 0
    for index, (match, reference) in enumerate(matches):
        token = f"__clearnb_reference_{index}__"
        values[token] = lookup(reference)
        pieces += [text[position : match.start()], token]
        position = match.end()
    pieces.append(text[position:])
    try:
        return _literal(ast.parse("".join(pieces).strip(), mode="eval").body, values)
    except (SyntaxError, ValueError, RecursionError):
        return substitute(text, lookup)


def _literal(node: ast.expr, values: Mapping[str, Any]) -> Any:
    """The value of a literal ``node`` whose placeholders (bare or quoted) stand for
    ``values``; ValueError for anything but literals."""
    if isinstance(node, ast.Name) and node.id in values:
        return values[node.id]
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            if node.value in values:
                return values[node.value]
            text = node.value
            for token, value in values.items():
                text = text.replace(token, str(value))
            return text
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal(item, values) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {
            _literal(key, values): _literal(value, values)
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None
        }
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _literal(node.operand, values)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    raise ValueError("not a literal")

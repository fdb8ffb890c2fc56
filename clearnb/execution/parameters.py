"""Parameters of a notebook: what its ``parameters`` cell declares, and typed overrides.

Overrides are addressed as ``"Section/name"``; a name without a section belongs to
``General``, the section papermill injects into the ``parameters`` cell. Values are
converted to the type of the cell's default (``"0.25"`` becomes ``0.25`` for a float
default) and every problem is reported at once, before any kernel starts.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbformat import NotebookNode

from clearnb.errors import ParameterError
from clearnb.execution.notebooks import PARAMETERS_TAG, find_tagged_cell

GENERAL = "General"
_NO_DEFAULT = object()


@dataclass(frozen=True)
class DeclaredParameter:
    """A variable assigned in the notebook's ``parameters`` cell."""

    name: str
    default: Any
    """The default as a Python value (``None`` if it is not a literal)."""
    source: str
    """The default as written in the cell."""
    annotation: str = ""
    literal: bool = True
    """False when the default is an expression that cannot be evaluated safely."""

    @property
    def type_name(self) -> str:
        """The type overrides are converted to (``any`` when the default does not tell)."""
        if self.annotation:
            return self.annotation
        if not self.literal or self.default is None:
            return "any"
        return type(self.default).__name__


def declared_parameters(nb: NotebookNode) -> dict[str, DeclaredParameter] | None:
    """The parameters the notebook's ``parameters`` cell declares, or None without such a cell."""
    index = find_tagged_cell(nb, PARAMETERS_TAG)
    if index < 0:
        return None
    source = nb.cells[index].get("source", "")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(
            f"The parameters cell does not parse as Python ({exc.msg}, line {exc.lineno}); "
            "fix the cell so that it only assigns default values."
        ) from exc
    found: dict[str, DeclaredParameter] = {}
    for node in tree.body:
        targets: list[ast.expr]
        annotation = ""
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
            annotation = _annotation_type(node.annotation)
        else:
            continue
        text = ast.get_source_segment(source, value) or ""
        try:
            default, literal = ast.literal_eval(value), True
        except (ValueError, SyntaxError, TypeError):
            default, literal = None, False
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = DeclaredParameter(target.id, default, text, annotation, literal)
    return found


def _annotation_type(node: ast.expr) -> str:
    if isinstance(node, ast.Name) and node.id in {"int", "float", "str", "bool", "list", "dict"}:
        return node.id
    return ""


def split_key(key: str) -> tuple[str, str]:
    """``"Section/name"`` to ``("Section", "name")``; a bare name is in ``General``."""
    if "/" in key:
        section, _, name = key.partition("/")
        return section, name
    return GENERAL, key


def group_by_section(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat ``{"Section/name": value}`` overrides grouped as ``{"Section": {"name": value}}``."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, name = split_key(str(key))
        if not section or not name:
            raise ParameterError(
                f"Parameter key {key!r} is malformed; write 'name' or 'Section/name', "
                "e.g. 'General/test_size'."
            )
        grouped.setdefault(section, {})[name] = value
    return grouped


def coerce(value: Any, declared: DeclaredParameter) -> Any:
    """Convert ``value`` to the type of ``declared``'s default; raise ValueError if it cannot."""
    kind = declared.type_name
    if kind == "any":
        return parse_text(value) if isinstance(value, str) else value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise ValueError("expected true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("expected a whole number, got a bool")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError("expected a whole number")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number, got a bool")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError("expected a number")
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float | bool):
            return str(value)
        raise ValueError("expected a string")
    if kind in ("list", "tuple", "dict"):
        wanted = {"list": list, "tuple": tuple, "dict": dict}[kind]
        if isinstance(value, str):
            value = parse_text(value)
        if isinstance(value, list | tuple) and wanted in (list, tuple):
            return wanted(value)
        if isinstance(value, wanted):
            return value
        raise ValueError(f"expected a {kind}")
    return value


_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def parse_text(text: str) -> Any:
    """Best-effort typed value of a command-line string: number, bool, None, JSON, else text."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(stripped)
        except ValueError:
            pass
    if stripped[:1] in ("[", "{", "("):
        try:
            return json.loads(stripped)
        except ValueError:
            try:
                return ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                pass
    return text


def resolve_overrides(
    nb: NotebookNode, overrides: Mapping[str, Any], notebook_label: str
) -> dict[str, dict[str, Any]]:
    """Validate and type ``overrides`` against the notebook; return them by section.

    ``General`` values must name a variable of the ``parameters`` cell and are converted
    to its default's type. Other sections are passed as given (they reach
    ``task.connect(d, name=section)`` at run time). Every problem is collected into one
    :class:`ValidationError`.
    """
    grouped = group_by_section(overrides)
    general = grouped.get(GENERAL, {})
    if not general:
        return grouped
    declared = declared_parameters(nb)
    problems: list[str] = []
    if declared is None:
        names = ", ".join(sorted(general))
        raise ParameterError(
            f"{notebook_label} has no cell tagged 'parameters', so the General overrides "
            f"({names}) have nowhere to go. Tag the cell that assigns the defaults with "
            "'parameters' (Jupyter: View > Cell toolbar > Tags), or use another section "
            "read with task.connect(d, name='Section').",
            notebook=notebook_label,
            unknown=sorted(general),
        )
    typed: dict[str, Any] = {}
    for name, value in general.items():
        if name not in declared:
            listed = ", ".join(sorted(declared)) or "(none)"
            problems.append(
                f"{notebook_label} does not declare a parameter {name!r}; its parameters "
                f"cell declares: {listed}"
            )
            continue
        try:
            typed[name] = coerce(value, declared[name])
        except (ValueError, TypeError) as exc:
            param = declared[name]
            kind = _with_article(param.type_name)
            problems.append(
                f"parameter {name!r} of {notebook_label} is {kind} (default "
                f"{param.source}); {value!r} cannot be converted ({exc}). Pass {kind}."
            )
    if problems:
        raise ParameterError.collect(problems, "parameter problem")
    grouped[GENERAL] = typed
    return grouped


def _with_article(type_name: str) -> str:
    return f"an {type_name}" if type_name[:1] in "aeiou" else f"a {type_name}"


def defaults_of(nb: NotebookNode) -> dict[str, Any]:
    """Default values of the ``parameters`` cell (literal ones), for recording a template."""
    declared = declared_parameters(nb) or {}
    return {name: p.default for name, p in declared.items() if p.literal}

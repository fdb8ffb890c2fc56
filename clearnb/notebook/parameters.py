"""Parameters of a notebook: what its ``parameters`` cell declares, and typed overrides.

Overrides are addressed as ``"Section/name"``; a name without a section belongs to
``General``, the section papermill injects into the ``parameters`` cell. Values are
converted to the type of the cell's default (``"0.25"`` becomes ``0.25`` for a float
default) and every problem is reported at once, before any kernel starts.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clearnb import pysource
from clearnb.errors import ParameterError
from clearnb.notebook.files import PARAMETERS_TAG, find_tagged_cell

if TYPE_CHECKING:
    from nbformat import NotebookNode

GENERAL = "General"
ARGS = "Args"
"""The section of the arguments an ``argparse`` parser declares (ClearML's)."""
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
        tree = pysource.parse(source)
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


def coerce(value: Any, declared: DeclaredParameter, *, label: str | None = None) -> Any:
    """Convert ``value`` to the type of ``declared``'s default.

    Raises :class:`ParameterError` naming the parameter (``label``, by default its name)
    when the value cannot be converted.
    """
    try:
        return _convert(plain(value), declared.type_name)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        kind = _with_article(declared.type_name)
        named = label or repr(declared.name)
        raise ParameterError(
            f"parameter {named} is {kind} (default {declared.source}); {_shown(value)} "
            f"cannot be converted ({exc}). Pass {kind}.",
            parameter=declared.name,
            expected=declared.type_name,
            reason=str(exc),
        ) from None


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays (at any depth) as their Python values.

    ``np.int64(7)`` becomes ``7``, ``np.bool_(True)`` ``True``, an array its nested list;
    anything else is returned as it is.
    """
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list | tuple):
        converted = [plain(item) for item in value]
        return converted if isinstance(value, list) else tuple(converted)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(value: Any, kind: str) -> Any:
    """``value`` as a ``kind`` (a type name); ValueError or TypeError if it cannot be."""
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
            try:
                return int(value.strip())
            except ValueError:
                raise ValueError("expected a whole number") from None
        raise ValueError("expected a whole number")
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number, got a bool")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ValueError("expected a number") from None
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
        except (ValueError, RecursionError):
            try:
                return ast.literal_eval(stripped)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                pass
    return text


@dataclass
class NotebookParameters:
    """Every parameter a notebook declares, by section.

    ``General`` holds the variables of the ``parameters`` cell (injected by papermill)
    and the keys of dicts connected without a section name; other sections hold the keys
    of dicts connected with ``task.connect(d, name="Section")``, and ``Args`` the
    arguments of ``parser.add_argument(...)`` calls. Dicts and arguments are found in the
    code statically (a dict literal assigned to a name, then connected), and a template's
    recorded parameters can add what the code builds at run time.
    """

    cell: dict[str, DeclaredParameter] | None
    """The ``parameters`` cell's variables, or None when the notebook has no such cell."""
    sections: dict[str, dict[str, DeclaredParameter]]

    @classmethod
    def of(
        cls, nb: NotebookNode, recorded: Mapping[str, Mapping[str, Any]] | None = None
    ) -> NotebookParameters:
        """The parameters ``nb`` declares, plus ``recorded`` ones (a template's)."""
        cell = declared_parameters(nb)
        sections: dict[str, dict[str, DeclaredParameter]] = {}
        for section, found in connected_parameters(nb).items():
            sections.setdefault(section, {}).update(found)
        if arguments := argparse_parameters(nb):
            sections.setdefault(ARGS, {}).update(arguments)
        sections.setdefault(GENERAL, {}).update(cell or {})
        for section, values in (recorded or {}).items():
            known = sections.setdefault(section, {})
            for name, value in values.items():
                if name not in known:
                    known[name] = DeclaredParameter(name, value, repr(value))
        return cls(cell, sections)

    def defaults(self) -> dict[str, dict[str, Any]]:
        """Default values by section (only literal ones)."""
        return {
            section: {name: p.default for name, p in found.items() if p.literal}
            for section, found in self.sections.items()
            if found
        }

    def resolve(
        self, overrides: Mapping[str, Any], notebook_label: str, *, strict: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Validate and type ``overrides`` (``{"Section/name": value}``); return them by section.

        A value is converted to its declared parameter's type. One that names no declared
        parameter (:meth:`undeclared`) is a problem when ``strict``; otherwise it is kept
        as given, as ClearML sets it on the task. A section the code does not show at all
        is passed as given (a dict built at run time). Every problem is collected into one
        :class:`ParameterError`.
        """
        grouped = group_by_section(overrides)
        problems: list[str] = []
        typed: dict[str, dict[str, Any]] = {}
        for section, values in grouped.items():
            declared = self.sections.get(section)
            if not declared:
                if section == GENERAL and strict:
                    problems.append(self._nowhere(values, notebook_label))
                else:
                    typed[section] = dict(values)
                continue
            where = "" if section == GENERAL else f" in section {section}"
            for name, value in values.items():
                label = repr(name) if section == GENERAL else repr(f"{section}/{name}")
                if name not in declared and not strict:
                    typed.setdefault(section, {})[name] = value
                    continue
                if name not in declared:
                    listed = ", ".join(sorted(declared)) or "(none)"
                    problems.append(
                        f"{notebook_label} does not declare a parameter {name!r}{where}; "
                        f"it declares: {listed}"
                    )
                    continue
                try:
                    typed.setdefault(section, {})[name] = coerce(
                        value, declared[name], label=f"{label} of {notebook_label}"
                    )
                except ParameterError as exc:
                    problems.append(exc.message)
        if problems:
            raise ParameterError.collect(problems, "parameter problem")
        return typed

    def type_of(self, key: str) -> str | None:
        """The type name of declared parameter ``key`` (``"Section/name"``), or None."""
        section, name = split_key(key)
        found = self.sections.get(section, {}).get(name)
        return None if found is None else found.type_name

    def undeclared(self, overrides: Mapping[str, Any]) -> dict[str, list[str]]:
        """The keys of ``overrides`` that name no declared parameter, each with the names
        its section declares (a section the code does not show is a dict built at run
        time, so any key of it may be meant)."""
        found: dict[str, list[str]] = {}
        for key in overrides:
            section, name = split_key(str(key))
            declared = self.sections.get(section)
            if (declared or section == GENERAL) and name not in (declared or {}):
                found[f"{section}/{name}"] = sorted(declared or {})
        return found

    def injected(
        self, resolved: Mapping[str, Mapping[str, Any]], *, connected: bool = False
    ) -> dict[str, Any]:
        """The ``General`` values papermill injects: those of ``parameters`` cell variables,
        and names (valid as variables) the notebook does not declare, as ClearML sets them.
        With ``connected``, the keys of connected dicts too (a script's notebook: it has no
        ``parameters`` cell, so the injected cell is where its run's values show).

        papermill writes None, bools, numbers, strings, lists and dicts with string keys as
        Python literals; tuples are passed as lists. Any other value would reach the
        notebook as (unescaped) text, so it raises :class:`ParameterError` instead.
        """
        cell = self.cell or {}
        general = self.sections.get(GENERAL, {})
        values = {
            k: v
            for k, v in resolved.get(GENERAL, {}).items()
            if k in cell or (k.isidentifier() and (connected or k not in general))
        }
        problems: list[str] = []
        injected: dict[str, Any] = {}
        for name, value in values.items():
            try:
                injected[name] = injectable(value)
            except TypeError as exc:
                problems.append(
                    f"parameter {name!r} cannot be written into the notebook's parameters "
                    f"cell: {exc}. Pass None, a bool, a number, a string, or a list or dict "
                    "(with string keys) of those"
                )
        if problems:
            raise ParameterError.collect(problems, "parameter problem")
        return injected

    @staticmethod
    def _nowhere(values: Mapping[str, Any], notebook_label: str) -> str:
        names = ", ".join(sorted(values))
        return (
            f"{notebook_label} has no cell tagged 'parameters' and connects no dict to "
            f"General, so the General overrides ({names}) have nowhere to go. Tag the cell "
            "that assigns the defaults with 'parameters' (Jupyter: View > Cell toolbar > "
            "Tags), or connect a dict of them with task.connect(args)."
        )


def injectable(value: Any, _depth: int = 0) -> Any:
    """``value`` made of what papermill writes as a literal (tuples become lists).

    Raises TypeError naming the first part that papermill cannot write.
    """
    if _depth > 100:
        raise TypeError("it is nested more than 100 levels deep")
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        value = value.tolist()
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    for plain in (int, float, str):  # subclasses (numpy.float64) would not print as literals
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, list | tuple):
        return [injectable(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"the dict key {key!r} is {type(key).__name__}, not a string")
        return {key: injectable(item, _depth + 1) for key, item in value.items()}
    raise TypeError(f"{_shown(value)} is {_with_article(type(value).__name__)}")


def connected_parameters(nb: NotebookNode) -> dict[str, dict[str, DeclaredParameter]]:
    """Keys of dict literals passed to ``<task>.connect(d[, name=...])`` in the code cells."""
    found: dict[str, dict[str, DeclaredParameter]] = {}
    dicts: dict[str, dict[str, DeclaredParameter]] = {}
    for source, tree in _code_trees(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                literal = _dict_literal(node.value, source)
                for target in node.targets:
                    if isinstance(target, ast.Name) and literal is not None:
                        dicts[target.id] = literal
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect"
                and node.args
            ):
                argument = node.args[0]
                if isinstance(argument, ast.Name):
                    keys = dicts.get(argument.id)
                elif isinstance(argument, ast.Dict):
                    keys = _dict_literal(argument, source)
                else:
                    keys = None
                if keys is not None:
                    found.setdefault(_section_of(node), {}).update(keys)
    return found


def argparse_parameters(nb: NotebookNode) -> dict[str, DeclaredParameter]:
    """Arguments of ``<parser>.add_argument(...)`` calls in the code cells, by ``dest``:
    typed by ``type=`` (int, float, str, bool), a flag's action or ``nargs`` (a list)."""
    found: dict[str, DeclaredParameter] = {}
    for source, tree in _code_trees(nb):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"
            ):
                declared = _argument_of(node, source)
                if declared is not None:
                    found[declared.name] = declared
    return found


_FLAGS = {"store_true": False, "store_false": True}
_LISTS = {"append", "extend"}


def _argument_of(call: ast.Call, source: str) -> DeclaredParameter | None:
    """The parameter one ``add_argument`` call declares, if its names are literals."""
    names = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if not names or len(names) != len(call.args):
        return None
    given = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
    action = _constant(given.get("action"))
    if action not in (None, "store", *_FLAGS, *_LISTS, "count") or (
        action is None and "action" in given
    ):
        return None  # help, version, store_const, an Action class: nothing to type it by
    dest = _constant(given.get("dest"))
    if not isinstance(dest, str):
        long = [name for name in names if name.startswith("--")]
        dest = (long or names)[0].lstrip("-").replace("-", "_") if names[0][:1] == "-" else names[0]
    default: Any = _FLAGS.get(str(action)) if action in _FLAGS else None
    text, literal = repr(default), True
    if "default" in given:
        text = ast.get_source_segment(source, given["default"]) or ""
        try:
            default = ast.literal_eval(given["default"])
        except (ValueError, SyntaxError, TypeError):
            default, literal = None, False
    kind = given.get("type")
    nargs = given.get("nargs")
    if action in _FLAGS:
        annotation = "bool"
    elif action in _LISTS or (nargs is not None and _constant(nargs) != "?"):
        annotation = "list"
    elif action == "count":
        annotation = "int"
    elif isinstance(kind, ast.Name) and kind.id in {"int", "float", "str", "bool"}:
        annotation = kind.id
    else:
        annotation = ""
    return DeclaredParameter(dest, default, text, annotation, literal)


def _constant(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _code_trees(nb: NotebookNode) -> Iterator[tuple[str, ast.Module]]:
    """Each code cell that parses: its source (magics blanked) and its syntax tree."""
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        source = _python_only(cell.get("source", ""))
        try:
            yield source, pysource.parse(source)
        except SyntaxError:
            continue


def _python_only(source: str) -> str:
    """Cell source with IPython magics and shell escapes blanked, so that ast can parse it."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            lines.append(line[: len(line) - len(stripped)] + "pass")
        else:
            lines.append(line)
    return "\n".join(lines)


def _dict_literal(node: ast.Dict, source: str) -> dict[str, DeclaredParameter] | None:
    result: dict[str, DeclaredParameter] = {}
    for key, value in zip(node.keys, node.values, strict=True):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None
        text = ast.get_source_segment(source, value) or ""
        try:
            default, literal = ast.literal_eval(value), True
        except (ValueError, SyntaxError, TypeError):
            default, literal = None, False
        result[key.value] = DeclaredParameter(key.value, default, text, literal=literal)
    return result


def _section_of(call: ast.Call) -> str:
    for keyword in call.keywords:
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value) if keyword.value.value else GENERAL
    if len(call.args) > 1 and isinstance(call.args[1], ast.Constant) and call.args[1].value:
        return str(call.args[1].value)
    return GENERAL


def _with_article(type_name: str) -> str:
    return f"an {type_name}" if type_name[:1] in "aeiou" else f"a {type_name}"


def defaults_of(nb: NotebookNode) -> dict[str, Any]:
    """Default values of the ``parameters`` cell (literal ones), for recording a template."""
    declared = declared_parameters(nb) or {}
    return {name: p.default for name, p in declared.items() if p.literal}

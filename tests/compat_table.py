"""The ClearML compatibility table in ``docs/clearml.md``: ClearML's names against clearnb's.

ClearML's public API (the classes pipeline scripts use) is kept as a snapshot,
``docs/clearml-api.json``, read from ClearML's source with :mod:`ast` (nothing of ClearML is
imported or installed). The table gives, for every public name of those classes, whether
clearnb supports it, and for every argument whether it works (``supported``), is recorded on
the task or run and named in a ``CompatibilityWarning`` (``recorded``), or is not available
(``no``, with the reason in the note). ``tests/test_clearml_table.py`` holds the table to the
snapshot and to clearnb's signatures, so neither can drift from it.

    python -m tests.compat_table extract PATH/TO/clearml   # refresh the snapshot
    python -m tests.compat_table write                      # add rows for new names
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "docs" / "clearml-api.json"
TABLE = ROOT / "docs" / "clearml.md"

CLASSES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    # name in the table: (clearnb import path, [(ClearML source file, class), ... bases first])
    "Task": (
        "clearnb:Task",
        [
            ("backend_interface/task/access.py", "AccessMixin"),
            ("backend_interface/setupuploadmixin.py", "SetupUploadMixin"),
            ("backend_interface/task/task.py", "Task"),
            ("task.py", "Task"),
        ],
    ),
    "PipelineController": (
        "clearnb:PipelineController",
        [("automation/controller.py", "PipelineController")],
    ),
    "PipelineDecorator": (
        "clearnb:PipelineDecorator",
        [("automation/controller.py", "PipelineDecorator")],
    ),
    "Logger": ("clearnb:Logger", [("logger.py", "Logger")]),
    "StorageManager": ("clearnb:StorageManager", [("storage/manager.py", "StorageManager")]),
    "Model": ("clearnb:Model", [("model.py", "BaseModel"), ("model.py", "Model")]),
    "InputModel": (
        "clearnb:InputModel",
        [("model.py", "BaseModel"), ("model.py", "Model"), ("model.py", "InputModel")],
    ),
    "OutputModel": (
        "clearnb:OutputModel",
        [("model.py", "BaseModel"), ("model.py", "OutputModel")],
    ),
}
"""The classes of the table, where clearnb has them and where ClearML defines them."""

STATUSES = ("supported", "recorded", "no")
"""``supported``: works as ClearML documents; ``recorded``: accepted, recorded and named in a
warning; ``no``: not available here (the note says why)."""

HEADER = (
    "| name | status | arguments supported | arguments recorded | arguments not available | note |"
)


# -- the snapshot of ClearML's API ---------------------------------------------------------


def _arguments(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = function.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    if args.vararg is not None:
        names.append("*" + args.vararg.arg)
    if args.kwarg is not None:
        names.append("**" + args.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


def _kind(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    decorators = {ast.unparse(d) for d in function.decorator_list}
    if "property" in decorators:
        return "property"
    if any(d.endswith(".setter") for d in decorators):
        return "setter"
    if "classmethod" in decorators:
        return "classmethod"
    if "staticmethod" in decorators:
        return "staticmethod"
    return "method"


def extract(clearml_package: Path) -> dict[str, Any]:
    """ClearML's public API of the table's classes, read from the package folder's source."""
    version = re.search(
        r"__version__\s*=\s*['\"]([^'\"]+)", (clearml_package / "version.py").read_text()
    )
    classes: dict[str, dict[str, dict[str, Any]]] = {}
    for table_name, (_, sources) in CLASSES.items():
        members: dict[str, dict[str, Any]] = {}
        for source, class_name in sources:
            tree = ast.parse((clearml_package / source).read_text())
            (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = item.name
                    if name.startswith("_") and name != "__init__":
                        continue
                    kind = _kind(item)
                    if kind == "setter":
                        continue
                    members[name] = {"kind": kind, "arguments": _arguments(item)}
                elif isinstance(item, ast.ClassDef) and not item.name.startswith("_"):
                    members[item.name] = {"kind": "class", "arguments": []}
        classes[table_name] = dict(sorted(members.items()))
    return {"clearml_version": version.group(1) if version else "?", "classes": classes}


def load_snapshot() -> dict[str, Any]:
    """The stored snapshot of ClearML's API."""
    return json.loads(SNAPSHOT.read_text())


# -- clearnb's side -------------------------------------------------------------------------


def clearnb_class(table_name: str) -> type | None:
    """clearnb's class for a table's class, or None if clearnb has none."""
    module_name, _, attribute = CLASSES[table_name][0].partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)  # type: ignore[no-any-return]
    except (AttributeError, ImportError):
        return None


def clearnb_arguments(cls: type, member: str) -> tuple[set[str], bool] | None:
    """The argument names clearnb's ``cls.member`` takes, and whether it takes ``**kwargs``;
    None when it has no such member. A property or attribute takes none."""
    if member == "__init__":
        target: Any = cls.__init__  # type: ignore[misc]
        if target is object.__init__:  # not constructed by the user
            return None
    else:
        target = inspect.getattr_static(cls, member, None)
        if target is None:
            return None
    if isinstance(target, classmethod | staticmethod):
        target = target.__func__
    if isinstance(target, property) or not callable(target) or inspect.isclass(target):
        return set(), False
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = set()
    var_keyword = False
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            names.add("*" + parameter.name)
        elif parameter.name not in ("self", "cls"):
            names.add(parameter.name)
    return names, var_keyword


def accepts(found: tuple[set[str], bool], argument: str) -> bool:
    """Whether a signature (``clearnb_arguments``'s answer) takes ClearML's ``argument``
    by name (``*args`` and ``**kwargs`` whatever they are called)."""
    accepted, takes_any_keyword = found
    if argument.startswith("**"):
        return takes_any_keyword
    if argument.startswith("*"):
        return any(name.startswith("*") for name in accepted)
    return argument in accepted


# -- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    """One row of the table: a public name of one of ClearML's classes."""

    name: str
    status: str
    supported: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        cells = [
            f"`{self.name}`",
            self.status,
            ", ".join(self.supported),
            ", ".join(self.recorded),
            ", ".join(self.missing),
            self.note,
        ]
        return "| " + " | ".join(cells) + " |"


def _names(cell: str) -> list[str]:
    return [name.strip() for name in cell.split(",") if name.strip()]


def parse_table(text: str) -> dict[str, dict[str, Row]]:
    """The rows of ``docs/clearml.md`` by class (``## Class`` headings) and name."""
    tables: dict[str, dict[str, Row]] = {}
    current: dict[str, Row] | None = None
    for line in text.splitlines():
        heading = re.match(r"^## `?(\w+)`?\s*$", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        if current is None or not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6:
            raise ValueError(f"a table row needs 6 cells: {line!r}")
        name = cells[0].strip("`")
        current[name] = Row(
            name, cells[1], _names(cells[2]), _names(cells[3]), _names(cells[4]), cells[5]
        )
    return tables


def proposed_row(table_name: str, name: str, clearml_arguments: list[str]) -> Row:
    """A row for a name the table lacks, from clearnb's signature alone: what it accepts
    is marked supported (to be checked by a person), the rest not available."""
    cls = clearnb_class(table_name)
    found = None if cls is None else clearnb_arguments(cls, name)
    if found is None:
        return Row(name, "no", missing=list(clearml_arguments), note="not available yet")
    supported = [a for a in clearml_arguments if accepts(found, a)]
    missing = [a for a in clearml_arguments if not accepts(found, a)]
    return Row(name, "supported", supported, [], missing)


def render(snapshot: dict[str, Any], rows: dict[str, dict[str, Row]], intro: str) -> str:
    """The whole ``docs/clearml.md``: ``intro``, then one table per class."""
    lines = [intro.rstrip(), ""]
    for table_name, members in snapshot["classes"].items():
        lines += [f"## `{table_name}`", "", HEADER, "|---|---|---|---|---|---|"]
        known = rows.get(table_name, {})
        for name, member in members.items():
            row = known.get(name) or proposed_row(table_name, name, member["arguments"])
            lines.append(row.line())
        lines.append("")
    return "\n".join(lines)


def intro_of(text: str) -> str:
    """The text of ``docs/clearml.md`` before its first class table."""
    index = text.find("\n## `")
    return text if index < 0 else text[:index]


def main(argv: list[str]) -> int:
    """``extract PATH`` refreshes the snapshot; ``write`` adds rows for new names."""
    if argv[:1] == ["extract"] and len(argv) == 2:
        SNAPSHOT.write_text(json.dumps(extract(Path(argv[1])), indent=1) + "\n")
        return 0
    if argv == ["write"]:
        text = TABLE.read_text() if TABLE.exists() else "# ClearML compatibility\n"
        TABLE.write_text(render(load_snapshot(), parse_table(text), intro_of(text)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

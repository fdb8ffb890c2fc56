"""Checks the package's structure: no import circle, no module over 700 lines, no private
member of one module used from another.

Run it as a script (``python tests/structure.py``) for a report, or through
``tests/test_structure.py``. Imports are read from the source with :mod:`ast`; an import
under ``if TYPE_CHECKING:`` is not an import at run time and is left out, an import inside a
function counts (it is a dependency all the same, only a later one).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = "clearnb"
MAX_LINES = 700
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
PUBLIC_UNDERSCORED = frozenset(
    {"_exit", "_mapping", "_asdict", "_replace", "_fields", "_make", "_repr_mimebundle_"}
)
"""Names that start with an underscore and are documented public API all the same:
``os._exit``, SQLAlchemy's ``Row._mapping``, the methods of a named tuple, IPython's
display protocol."""


@dataclass
class Module:
    """One module of the package, as its source says."""

    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of the module at ``path`` under the package folder ``root``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def load_modules(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the package, with its imports of other modules of the package."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        name = module_name(path, root)
        modules[name] = Module(name, path, tree, len(source.splitlines()))
    for module in modules.values():
        is_package = module.path.name == "__init__.py"
        for node in _runtime_nodes(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.imports.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module.name, is_package, node)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    module.imports.add(candidate if candidate in modules else base)
            elif isinstance(node, ast.Call) and _dynamic_import(node):
                module.imports.add(_dynamic_import(node) or "")
        module.imports = {
            name for name in module.imports if name in modules and name != module.name
        }
        module.defined = _defined_names(module.tree)
    return modules


def _absolute(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    if not is_package:
        parts.pop()
    if node.level > 1:
        parts = parts[: len(parts) - node.level + 1]
    return ".".join([*parts, node.module] if node.module else parts)


def _dynamic_import(node: ast.Call) -> str | None:
    """The module of ``import_module("clearnb....")``, when it is a literal."""
    func = node.func
    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    if called != "import_module" or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines anywhere: functions, classes, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Import circles among the package's modules (each named once, as graphlib finds it)."""
    graph = {name: set(module.imports) for name, module in modules.items()}
    cycles: list[list[str]] = []
    while True:
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as error:
            cycle: list[str] = error.args[1]
            cycles.append(cycle)
            # Break the circle at its first edge and look for the next one.
            graph[cycle[1]].discard(cycle[0])
            continue
        return cycles


def long_modules(modules: dict[str, Module], limit: int = MAX_LINES) -> list[str]:
    """Modules longer than ``limit`` lines, with their length."""
    return [
        f"{module.name}: {module.lines} lines"
        for module in modules.values()
        if module.lines > limit
    ]


def _private(name: str) -> bool:
    if name in PUBLIC_UNDERSCORED:
        return False
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(modules: dict[str, Module]) -> list[str]:
    """Private names one module takes from another.

    ``from m import _x`` and ``m._x`` for a module ``m``; and ``obj._x`` on anything but
    ``self``/``cls`` where the module does not define ``_x`` itself (a private member of a
    class of another module, or of a library).
    """
    found: list[str] = []
    for module in modules.values():
        for node in ast.walk(module.tree):
            where = f"{_shown(module.path)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if _private(alias.name):
                        found.append(f"{where}: imports {alias.name} from {node.module}")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                    continue
                if isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super":
                    continue
                if node.attr in module.defined:
                    continue
                found.append(f"{where}: uses {ast.unparse(node)}")
    return found


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(ROOT.parent)
    except ValueError:
        return path


def report(root: Path = ROOT) -> list[str]:
    """Every structural problem of the package at ``root``, one line each."""
    modules = load_modules(root)
    problems = [f"import circle: {' -> '.join(cycle)}" for cycle in import_cycles(modules)]
    problems += [f"too long: {line}" for line in long_modules(modules)]
    problems += [f"private member: {line}" for line in private_uses(modules)]
    return problems


if __name__ == "__main__":
    lines = report()
    print("\n".join(lines) or "the structure holds")
    sys.exit(1 if lines else 0)

"""The package keeps its structure: no import circle, no module over 700 lines, no private
member of one module used from another (see tests/structure.py)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from tests import structure


def test_the_package_has_no_structural_problem() -> None:
    problems = structure.report()
    assert not problems, "\n".join(problems)


def write(root: Path, name: str, source: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


def test_each_kind_of_problem_is_found(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    write(root, "__init__.py", "")
    write(root, "a.py", "from pkg import b\n")
    write(root, "b.py", "def later():\n    from pkg.a import thing\n")
    write(root, "c.py", "from pkg.d import _hidden\nimport pkg.d\npkg.d.Thing()._state\n")
    write(
        root,
        "d.py",
        "_hidden = 1\nclass Thing:\n    def __init__(self):\n        self._state = 0\n",
    )
    write(root, "long.py", "x = 1\n" * 701)
    write(
        root,
        "typed.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n",
    )
    modules = structure.load_modules(root)
    cycles = structure.import_cycles(modules)
    assert [sorted(set(cycle)) for cycle in cycles] == [["pkg.a", "pkg.b"]]
    assert structure.long_modules(modules) == ["pkg.long: 701 lines"]
    uses = structure.private_uses(modules)
    assert any("imports _hidden" in use for use in uses)
    assert any("Thing()._state" in use for use in uses)
    assert "pkg.c" not in modules["pkg.typed"].imports, "TYPE_CHECKING imports do not count"


def test_documented_underscore_names_are_not_private() -> None:
    tree = ast.parse("import os\nos._exit(0)\nrow._mapping\n")
    module = structure.Module("m", Path("m.py"), tree, 3)
    assert structure.private_uses({"m": module}) == []

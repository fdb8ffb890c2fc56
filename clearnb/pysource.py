"""Parsing Python source from several threads at once.

CPython 3.11 can fail with ``SystemError: AST constructor recursion depth mismatch`` when
two threads build syntax trees at the same moment; pipeline steps are prepared on several
threads, so every parse goes through one lock here.
"""

from __future__ import annotations

import ast
import symtable
import threading

_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    """``ast.parse(source)``, one thread at a time."""
    with _LOCK:
        return ast.parse(source)


def symbols(source: str) -> symtable.SymbolTable:
    """``symtable.symtable(source, "<step>", "exec")``, one thread at a time."""
    with _LOCK:
        return symtable.symtable(source, "<step>", "exec")

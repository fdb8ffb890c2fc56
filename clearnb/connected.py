"""Dicts connected to a task, so that changes made after ``task.connect`` are recorded.

ClearML records a connected dict again whenever it changes (a dict connected empty and
filled afterwards ends up recorded with its values). Here the task keeps the dicts it
connected and, at the end of every cell, when the run ends and before its parameters are
read, records those that changed since they were last recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import MutableMapping
from typing import Any


class ConnectedSections:
    """The dict connected as each parameter section, with what was last recorded of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[str, tuple[MutableMapping[Any, Any], str]] = {}

    def add(self, section: str, values: MutableMapping[Any, Any]) -> None:
        """Keep ``values`` as section ``section``, as it was just recorded."""
        with self._lock:
            self._sections[section] = (values, _snapshot(values))

    def changed(self) -> dict[str, dict[Any, Any]]:
        """The sections whose dict changed since last recorded, as they are now; they
        count as recorded from here on."""
        found: dict[str, dict[Any, Any]] = {}
        with self._lock:
            for section, (values, recorded) in self._sections.items():
                now = _snapshot(values)
                if now != recorded:
                    found[section] = dict(values)
                    self._sections[section] = (values, now)
        return found


def _snapshot(values: MutableMapping[Any, Any]) -> str:
    """A comparable picture of ``values`` (any value shown by its text when JSON has none)."""
    try:
        return json.dumps(values, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys of mixed types cannot be sorted
        return repr(sorted(values.items(), key=repr))

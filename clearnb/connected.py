"""Dicts connected to a task, so that changes made after ``task.connect`` are recorded, and
the values of connected dicts as they are recorded.

ClearML records a connected dict again whenever it changes (a dict connected empty and
filled afterwards ends up recorded with its values). Here the task keeps the dicts it
connected and, at the end of every cell, when the run ends and before its parameters are
read, records those that changed since they were last recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from clearnb.notebook.parameters import split_key


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


def recordable(value: Any) -> Any:
    """``value`` as something JSON can store (numbers of numpy become Python numbers)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [recordable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): recordable(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return recordable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def group_values(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"Section/name": value}`` as ``{"Section": {"name": value}}`` (a bare name is in
    ``General``), each value made :func:`recordable`."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = split_key(str(key))
        grouped.setdefault(section, {})[name] = recordable(value)
    return grouped

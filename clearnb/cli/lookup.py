"""Opening the configured backend and finding a task in it, failing as a command does."""

from __future__ import annotations

from typing import Any

from clearnb.cli.format import CommandError
from clearnb.errors import ClearnbError


def task_or_exit(store: Any, task_id: str) -> Any:
    """The task's record (by its id or a unique start of it), or a clear error and exit 1."""
    try:
        return store.get_task(store.resolve_task_id(task_id))
    except ClearnbError as exc:
        raise CommandError(str(exc)) from exc


def backend_or_exit(backend_class: Any) -> Any:
    """``backend_class.for_config()``, or a clear error and exit 1.

    The caller passes the class so that it imports the backend only when it runs.
    """
    try:
        return backend_class.for_config()
    except ClearnbError as exc:
        raise CommandError(str(exc)) from exc

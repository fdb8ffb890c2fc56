"""The arguments of ClearML's ``Task.init`` that do nothing here: recorded, and named once.

Given away from their ClearML defaults, they are kept in the task's runtime
(:data:`clearnb.compat.UNUSED_KEY`) and named in one
:class:`~clearnb.errors.CompatibilityWarning` per call, each with the reason.
``reuse_last_task_id=False`` is not among them: a new task is what happens anyway, nor is
``auto_connect_frameworks`` for the frameworks :mod:`clearnb.frameworks` binds; the keys of
a dict it gives for other frameworks, unless False, are recorded and named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clearnb import compat, frameworks

DEFAULTS: dict[str, Any] = {
    "reuse_last_task_id": True,
    "continue_last_task": False,
    "auto_resource_monitoring": True,
    "auto_connect_streams": True,
    "deferred_init": False,
}
"""ClearML's defaults of these arguments (``output_uri``'s is None)."""
WHY = {
    "reuse_last_task_id": "a task outside a run is always a new one",
    "continue_last_task": "a task that ended is not continued (clone it and run the clone)",
    "output_uri": "artifacts and models go to the artifact storage (CLEARNB_ARTIFACT_URL)",
    "auto_connect_frameworks": "only the models of joblib, scikit, xgboost, pytorch and "
    "lightgbm are registered (store others with OutputModel)",
    "auto_resource_monitoring": "machine resources are not monitored",
    "auto_connect_streams": "a run's output is recorded by its runner either way",
    "deferred_init": "Task.init always finishes before it returns",
}
"""Why each argument does nothing here, as the warning says it."""


def unused_init_arguments(**given: Any) -> dict[str, Any]:
    """The arguments of ``given`` (``name=value`` as passed to ``Task.init``) that differ
    from their defaults, made recordable; they are named in one warning to the caller of
    ``Task.init``."""
    if given.get("reuse_last_task_id") is False:
        given = {**given, "reuse_last_task_id": None}  # honoured: always a new task
    bound = given.get("auto_connect_frameworks")
    others = (
        {k: v for k, v in bound.items() if k not in frameworks.KEYS and v is not False}
        if isinstance(bound, Mapping)
        else {}
    )
    # honoured for the frameworks bound here; a framework turned off is never bound anyway
    given = {**given, "auto_connect_frameworks": others or None}
    unused = compat.unused_arguments(given, DEFAULTS)
    compat.warn_unused("Task.init", unused, "; ".join(WHY[name] for name in unused), stacklevel=4)
    return unused

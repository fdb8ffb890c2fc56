"""ClearML arguments that have no meaning without ClearML's server: recorded, and named once.

A ClearML script passes arguments such as ``docker=``, ``repo=`` or ``auto_version_bump=``
that describe ClearML's server, agents in containers or its UI. clearnb accepts them so the
script runs unchanged, never drops one silently: :func:`unused_arguments` keeps what was
given (for the task's or run's record) and :func:`warn_unused` names them in one
:class:`~clearnb.errors.CompatibilityWarning` per call, saying why they do nothing here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from clearnb.errors import CompatibilityWarning

log = logging.getLogger(__name__)

UNUSED_KEY = "unused_arguments"
"""Key of a task's ``runtime`` (and a run document) that holds the unused arguments."""


def recordable(value: Any) -> Any:
    """``value`` as it is recorded: JSON values as they are, a callable by its name, else repr."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [recordable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): recordable(item) for key, item in value.items()}
    if callable(value):
        return getattr(value, "__qualname__", None) or repr(value)
    return repr(value)


def unused_arguments(
    given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The arguments of ``given`` that differ from their ``defaults`` (None when not
    listed), made recordable; an argument left at its default was not really given."""
    defaults = defaults or {}
    return {
        name: recordable(value)
        for name, value in given.items()
        if value is not None and value != defaults.get(name)
    }


def warn_unused(where: str, arguments: Mapping[str, Any], why: str, stacklevel: int = 3) -> None:
    """Name ``arguments`` (given to ``where``, e.g. ``"Task.init"``) in one warning saying
    ``why`` they do nothing here; nothing when there are none."""
    if not arguments:
        return
    names = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
    message = f"{where}: {names} recorded but not used: {why}"
    log.info(message)
    warnings.warn(message, CompatibilityWarning, stacklevel=stacklevel)

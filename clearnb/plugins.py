"""Registries found through entry points, loaded on first use: the views of a pipeline.

The core never imports a view (the widget, the picture): a view registers itself under
the entry-point group ``clearnb.views`` and is looked up by name when a pipeline is shown.
clearnb's own views are ``widget`` (the controller widget: ipywidgets and anywidget) and ``png``
(the DAG picture drawn with matplotlib).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from clearnb.errors import MissingDependencyError

VIEWS = "clearnb.views"
NEEDS = {"widget": "ipywidgets anywidget"}
"""What each of clearnb's own views needs (dependencies of clearnb: a broken environment
lacks them)."""


def view(name: str) -> Callable[..., Any]:
    """The view registered as ``name``; a missing one, or one whose libraries are not
    installed, is an error that says what to install."""
    found = [point for point in entry_points(group=VIEWS) if point.name == name]
    if not found:
        known = ", ".join(sorted({point.name for point in entry_points(group=VIEWS)})) or "none"
        raise MissingDependencyError(
            f"no clearnb view named {name!r} is installed (installed: {known}); reinstall "
            "clearnb (pip install -e .) so that its entry points are registered"
        )
    try:
        loaded: Callable[..., Any] = found[0].load()
    except ImportError as exc:
        needed = NEEDS.get(name)
        hint = f": pip install {needed}" if needed else ""
        raise MissingDependencyError(
            f"the clearnb view {name!r} cannot be loaded ({exc}){hint}"
        ) from exc
    return loaded

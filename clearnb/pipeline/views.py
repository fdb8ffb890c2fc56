"""Showing a pipeline: the registered views (the widget, the PNG picture) and the final
picture of a run in a notebook. Views are found by name (:func:`clearnb.plugins.view`),
so the core never imports them."""

from __future__ import annotations

import base64
import logging
from typing import Any

from clearnb.pipeline.picture import DAG_ARTIFACT, PictureRenderer
from clearnb.plugins import view
from clearnb.task import Task

log = logging.getLogger(__name__)


def png(document: dict[str, Any], title: str) -> bytes | None:
    """The run ``document`` drawn as a PNG by the ``png`` view (None if it cannot be)."""
    try:
        drawn: bytes = view("png")(document, title)
        return drawn
    except Exception:
        log.debug("could not draw the pipeline", exc_info=True)
        return None


def mimebundle(
    pipeline: Any, picture: bytes | None, include: Any = None, exclude: Any = None
) -> dict[str, Any]:
    """The widget where widgets render, with the DAG ``picture`` for viewers that cannot."""
    bundle: dict[str, Any] = {"text/plain": repr(pipeline)}
    if picture is not None:
        bundle["image/png"] = base64.b64encode(picture).decode("ascii")
    try:
        shown = pipeline.widget()._repr_mimebundle_(include=include, exclude=exclude)
    except Exception:  # no widgets here: the picture stands in
        return bundle
    if isinstance(shown, tuple):
        shown = shown[0]
    bundle.update(shown or {})
    return bundle


def show_picture(task: Task, renderer: PictureRenderer | None) -> None:
    """In a notebook, display the stored DAG picture of the run of ``task``."""
    try:
        from IPython import get_ipython

        if get_ipython() is None:
            return
        from IPython.display import Image, display

        if renderer is not None:
            renderer.wait()
        artifact = task.artifacts.get(DAG_ARTIFACT)
        if artifact is not None:
            display(Image(filename=artifact.get_local_copy()))  # type: ignore[no-untyped-call]
    except Exception:
        log.debug("could not display the pipeline picture", exc_info=True)

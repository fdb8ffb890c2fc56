"""The ``png`` view of a pipeline: its run document drawn as a DAG, as PNG bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clearnb.plot.dag import figure_png, plot_pipeline


def pipeline_png(document: Mapping[str, Any], title: str) -> bytes:
    """The steps of a run ``document`` (``nodes``, ``order``) drawn under ``title``."""
    nodes = document.get("nodes") or {}
    return figure_png(plot_pipeline(nodes, document.get("order") or list(nodes), title=title))

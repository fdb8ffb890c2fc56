"""The DAG canvas: an anywidget whose front end (``dag.js``) draws the steps as SVG.

Python lays the graph out (layers left to right) and sends plain data in one synced
traitlet, ``graph``; the front end only draws it, shows a tooltip on hover, and reports
the clicked step in ``selected``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from clearnb.pipeline.graph import layers
from clearnb.pipeline.progress import short_value

BOX_WIDTH = 190
BOX_HEIGHT = 74
GAP_X = 56
GAP_Y = 18
MARGIN = 8
LABEL_CHARS = 26
"""Characters of a parameter line that fit in a box."""


class DagCanvas(anywidget.AnyWidget):
    """The pipeline's steps, coloured by status; click a step to select it."""

    _esm = Path(__file__).with_name("dag.js")
    _css = Path(__file__).with_name("dag.css")
    graph = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)

    def show(self, nodes: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> None:
        """Draw the steps described by ``nodes`` (state dicts, as the controller stores them)."""
        self.graph = layout(nodes, order)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _full(value: Any, width: int = 90) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def layout(nodes: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> dict[str, Any]:
    """Positions, labels and edges of the steps, for the front end to draw."""
    names = [name for name in order if name in nodes] or list(nodes)
    parents = {name: [p for p in nodes[name].get("parents", []) if p in nodes] for name in names}
    columns = layers(parents) if names else []
    tallest = max((len(column) for column in columns), default=0)
    height = MARGIN * 2 + tallest * BOX_HEIGHT + max(tallest - 1, 0) * GAP_Y
    drawn: list[dict[str, Any]] = []
    for depth, column in enumerate(columns):
        column_height = len(column) * BOX_HEIGHT + max(len(column) - 1, 0) * GAP_Y
        top = (height - column_height) / 2
        for row, name in enumerate(column):
            state = nodes[name]
            written = state.get("parameters") or {}
            overrides = [f"{key} = {_full(value)}" for key, value in written.items()]
            labels = [
                _cut(f"{key.split('/', 1)[-1]}={short_value(value)}", LABEL_CHARS)
                for key, value in written.items()
            ]
            started, ended = state.get("started"), state.get("ended")
            drawn.append(
                {
                    "name": name,
                    "x": MARGIN + depth * (BOX_WIDTH + GAP_X),
                    "y": top + row * (BOX_HEIGHT + GAP_Y),
                    "w": BOX_WIDTH,
                    "h": BOX_HEIGHT,
                    "status": state.get("status", "pending"),
                    "labels": labels,
                    "overrides": overrides,
                    "progress": state.get("progress") or {},
                    "elapsed": ((ended or time.time()) - started) if started else None,
                }
            )
    edges = [[parent, name] for name in names for parent in parents[name]]
    width = MARGIN * 2 + len(columns) * BOX_WIDTH + max(len(columns) - 1, 0) * GAP_X
    return {"nodes": drawn, "edges": edges, "width": width, "height": height}

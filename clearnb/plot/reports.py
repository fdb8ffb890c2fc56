"""Small matplotlib pictures of a task's reported plots and images, for the views.

Each plot report is drawn from its stored payload (:mod:`clearnb.reports`), the way
ClearML's charts show it: 2D series reported under one title at one iteration share one
picture. Pictures are small (a few hundred pixels) so that a view can show several.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from clearnb.plot.dag import figure_png
from clearnb.reports import PLOTS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from clearnb.store.records import ReportRecord

SIZE = (3.8, 2.5)
"""Inches of one picture."""
DPI = 80
ANNOTATED_CELLS = 15
"""Matrices up to this many rows and columns show each cell's value."""
LABELLED_POINTS = 20
"""2D series up to this many points show each point's label."""
SHARED = ("scatter2d", "line")
"""Kinds whose series reported under one title at one iteration share a picture."""


def plot_groups(reports: Sequence[ReportRecord]) -> list[list[ReportRecord]]:
    """The plot reports of ``reports`` grouped as they are drawn: 2D series by title and
    iteration, every other plot alone; in the order of each group's latest report."""
    groups: dict[tuple[Any, ...], list[ReportRecord]] = {}
    for index, report in enumerate(reports):
        if report.kind not in PLOTS:
            continue
        key: tuple[Any, ...] = (
            ("2d", report.title, report.iteration) if report.kind in SHARED else (index,)
        )
        group = groups.pop(key, [])
        group.append(report)
        groups[key] = group  # re-inserted: the dict keeps the order of latest reports
    return list(groups.values())


def report_png(group: Sequence[ReportRecord]) -> bytes | None:
    """One group of :func:`plot_groups` drawn as PNG bytes; None if nothing in it can be
    drawn (a plotly figure of trace types not drawn here)."""
    from matplotlib.figure import Figure

    first = group[0]
    three_d = first.kind in ("scatter3d", "surface")
    figure = Figure(figsize=SIZE, dpi=DPI)
    axes = figure.add_subplot(projection="3d" if three_d else None)
    drawn = _DRAW[first.kind](axes, group)
    if not drawn:
        return None
    _titles(figure, axes, first, group)
    if not three_d:
        figure.tight_layout()
    return figure_png(figure)


def thumbnail_png(path: str | Path, side: int = 160) -> bytes | None:
    """The image file at ``path`` shrunk to fit ``side`` pixels, as PNG; None if it is
    not an image PIL can read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.thumbnail((side, side))
            image = opened if opened.mode in ("RGB", "RGBA", "L", "LA") else opened.convert("RGBA")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


# -- titles and axes -------------------------------------------------------------------------


def _titles(figure: Figure, axes: Axes, first: ReportRecord, group: Sequence[ReportRecord]) -> None:
    payload = first.payload
    shared = first.kind == "line" or (first.kind in SHARED and len(group) > 1)
    name = first.title if shared else _where(first)
    heading = f"{name}  (it {first.iteration})"
    if payload.get("comment"):
        heading += f"\n{payload['comment']}"
    axes.set_title(_short(heading, 70), fontsize=8)
    if payload.get("xaxis"):
        axes.set_xlabel(str(payload["xaxis"]), fontsize=7)
    if payload.get("yaxis"):
        axes.set_ylabel(str(payload["yaxis"]), fontsize=7)
    if payload.get("zaxis") and hasattr(axes, "set_zlabel"):
        axes.set_zlabel(str(payload["zaxis"]), fontsize=7)
    axes.tick_params(labelsize=6)


def _where(report: ReportRecord) -> str:
    return f"{report.title} / {report.series}" if report.series else report.title


def _short(text: str, limit: int) -> str:
    return "\n".join(
        line if len(line) <= limit else line[: limit - 1] + "…" for line in text.split("\n")
    )


def _style(mode: str) -> dict[str, Any]:
    if mode == "markers":
        return {"linestyle": "none", "marker": "o", "markersize": 3}
    if mode == "lines+markers":
        return {"marker": "o", "markersize": 3}
    return {}


# -- one drawing per kind --------------------------------------------------------------------


def _draw_histogram(axes: Axes, group: Sequence[ReportRecord]) -> bool:
    payload = group[0].payload
    rows = payload.get("values") or []
    labels = payload.get("labels") or []
    mode = payload.get("mode") or "group"
    if not rows or not rows[0]:
        return False
    count = len(rows[0])
    positions = list(range(count))
    width = 0.8 if mode != "group" else 0.8 / len(rows)
    below = [0.0] * count
    above = [0.0] * count
    for index, row in enumerate(rows):
        label = str(labels[index]) if index < len(labels) else None
        if mode == "group":
            where = [p - 0.4 + width * (index + 0.5) for p in positions]
            axes.bar(where, row, width=width, label=label)
            continue
        # stacked: positive values pile up from 0 and negative ones down ("relative")
        base = [below[i] if value < 0 else above[i] for i, value in enumerate(row)]
        axes.bar(positions, row, width=width, bottom=base, label=label)
        for i, value in enumerate(row):
            if value < 0:
                below[i] += value
            else:
                above[i] += value
    ticks = payload.get("xlabels")
    if ticks and count <= 30:
        axes.set_xticks(positions, [str(t) for t in ticks], rotation=45 if count > 6 else 0)
    if any(labels):
        axes.legend(fontsize=6)
    return True


def _draw_lines(axes: Axes, group: Sequence[ReportRecord]) -> bool:
    drawn = 0
    for report in group:
        style = _style(str(report.payload.get("mode") or "lines"))
        for series in report.payload.get("series") or []:
            xs, ys = series.get("x") or [], series.get("y") or []
            axes.plot(xs, ys, label=str(series.get("name")), **style)
            drawn += 1
            labels = series.get("labels")
            if labels and len(xs) <= LABELLED_POINTS:
                for x, y, text in zip(xs, ys, labels, strict=False):
                    axes.annotate(str(text), (x, y), fontsize=6)
        if report.payload.get("reverse_xaxis"):
            axes.invert_xaxis()
    if drawn > 1:
        axes.legend(fontsize=6)
    axes.grid(alpha=0.3)
    return drawn > 0


def _draw_scatter3d(axes: Any, group: Sequence[ReportRecord]) -> bool:
    payload = group[0].payload
    style = _style(str(payload.get("mode") or "markers"))
    lines = payload.get("series") or []
    for series in lines:
        axes.plot(
            series.get("x") or [],
            series.get("y") or [],
            series.get("z") or [],
            label=str(series.get("name")),
            **style,
        )
    if len(lines) > 1:
        axes.legend(fontsize=6)
    return bool(lines)


def _ticks(axes: Axes, payload: Mapping[str, Any], rows: int, columns: int) -> None:
    xlabels, ylabels = payload.get("xlabels"), payload.get("ylabels")
    if xlabels and columns <= 30:
        axes.set_xticks(range(len(xlabels)), [str(t) for t in xlabels], rotation=45)
    if ylabels and rows <= 30:
        axes.set_yticks(range(len(ylabels)), [str(t) for t in ylabels])


def _draw_matrix(axes: Axes, group: Sequence[ReportRecord]) -> bool:
    payload = group[0].payload
    values = payload.get("matrix") or []
    if not values or not values[0]:
        return False
    rows, columns = len(values), len(values[0])
    origin: Literal["upper", "lower"] = "upper" if payload.get("yaxis_reversed") else "lower"
    image = axes.imshow(values, origin=origin, aspect="auto", cmap="Blues")
    axes.figure.colorbar(image, ax=axes).ax.tick_params(labelsize=6)
    if rows <= ANNOTATED_CELLS and columns <= ANNOTATED_CELLS:
        top = max((v for row in values for v in row if not math.isnan(v)), default=0.0)
        for y, row in enumerate(values):
            for x, value in enumerate(row):
                colour = "white" if top and value > top / 2 else "black"
                axes.text(x, y, f"{value:g}", ha="center", va="center", fontsize=6, color=colour)
    _ticks(axes, payload, rows, columns)
    return True


def _draw_surface(axes: Any, group: Sequence[ReportRecord]) -> bool:
    import numpy as np

    payload = group[0].payload
    values = np.asarray(payload.get("matrix") or [], dtype=float)
    if values.ndim != 2 or values.size == 0:
        return False
    xs, ys = np.meshgrid(range(values.shape[1]), range(values.shape[0]))
    axes.plot_surface(xs, ys, values, cmap="viridis")
    camera = payload.get("camera")
    if camera:
        x, y, z = camera
        axes.view_init(
            elev=math.degrees(math.atan2(z, math.hypot(x, y))),
            azim=math.degrees(math.atan2(y, x)),
        )
    return True


def _draw_plotly(axes: Axes, group: Sequence[ReportRecord]) -> bool:
    """The plotly traces matplotlib can show simply: scatter, bar and heatmap."""
    traces = (group[0].payload.get("figure") or {}).get("data") or []
    drawn = 0
    for trace in traces:
        kind = str(trace.get("type") or "scatter")
        name = trace.get("name")
        if kind in ("scatter", "scattergl") and trace.get("y") is not None:
            ys = list(trace["y"])
            xs = list(trace.get("x") or range(len(ys)))
            style = _style(str(trace.get("mode") or "lines"))
            axes.plot(xs, ys, label=name, **style)
        elif kind == "bar" and trace.get("y") is not None:
            ys = list(trace["y"])
            axes.bar([str(x) for x in trace.get("x") or range(len(ys))], ys, label=name)
        elif kind == "heatmap" and trace.get("z"):
            axes.imshow(trace["z"], origin="lower", aspect="auto", cmap="Blues")
        else:
            continue
        drawn += 1
    if drawn > 1 and any(trace.get("name") for trace in traces):
        axes.legend(fontsize=6)
    return drawn > 0


_DRAW = {
    "histogram": _draw_histogram,
    "scatter2d": _draw_lines,
    "line": _draw_lines,
    "scatter3d": _draw_scatter3d,
    "confusion_matrix": _draw_matrix,
    "surface": _draw_surface,
    "plotly": _draw_plotly,
}

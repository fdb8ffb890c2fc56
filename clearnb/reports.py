"""What a :class:`~clearnb.logger.Logger` stores for each report, and how views sum it up.

Every report is a :class:`~clearnb.store.records.ReportRecord` of one kind (:data:`KINDS`)
with a JSON payload built here from what the script passed: plot data as plain lists (cut
to a size the store and the views handle, and saying so), labels, axis titles and the
options the drawings follow. Pictures and files (figures, images, media) are artifacts;
their payload names the artifact. :func:`summary` is the one line ``clearnb task show``
and the widget print for any report.
"""

from __future__ import annotations

import csv as csv_module
import datetime as dt
import io
import itertools
import math
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clearnb.artifacts.codecs import format_size

MAX_TABLE_ROWS = 1000
"""Rows of a reported table kept in the store; a larger table is cut, and says so."""
MAX_POINTS = 10_000
"""Points of one plotted series kept; a longer series is thinned evenly, and says so."""
MAX_BARS = 1000
"""Bars of one histogram row kept; the rest are cut, and the payload says so."""
MAX_MATRIX_SIDE = 256
"""Rows and columns of a reported matrix kept; a larger one is cut, and says so."""

KINDS = (
    "text",
    "table",
    "figure",
    "histogram",
    "scatter2d",
    "line",
    "scatter3d",
    "confusion_matrix",
    "surface",
    "plotly",
    "image",
    "media",
)
"""Kinds of reports a logger makes (the runner adds ``log`` for a run's stdout/stderr)."""
PLOTS = ("histogram", "scatter2d", "line", "scatter3d", "confusion_matrix", "surface", "plotly")
"""Kinds drawn as plots by the views."""

LAYOUT_WHY = (
    "clearnb draws reports with matplotlib, which does not follow plotly layout or trace "
    "settings; they are kept with the report"
)
"""Why plotly's ``extra_layout``/``data_args``/``extra_data`` are recorded, not applied."""

SCATTER_MODES = ("lines", "markers", "lines+markers")
HISTOGRAM_MODES = ("group", "stack", "relative")


@dataclass
class SeriesInfo:
    """One line of :meth:`~clearnb.logger.Logger.report_line_plot`: ``data`` holds
    ``(x, y)`` rows, ``labels`` one text per point (as ClearML's ``SeriesInfo``)."""

    name: str
    data: Any
    labels: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=float)
        if self.data.ndim != 2 or self.data.shape[1] != 2:
            raise ValueError(
                f"SeriesInfo {self.name!r}: data must be rows of (x, y) pairs, not an array "
                f"of shape {self.data.shape}."
            )
        if self.labels is not None and len(self.labels) != len(self.data):
            raise ValueError(
                f"SeriesInfo {self.name!r}: {len(self.labels)} labels for "
                f"{len(self.data)} points; give one label per point."
            )


def only_one(where: str, **given: Any) -> str:
    """The name of the one argument of ``given`` that is set (not None, not ``""``); a
    :class:`TypeError` names them all when none or several are."""
    chosen = [
        name
        for name, value in given.items()
        if value is not None and not (isinstance(value, str) and not value)
    ]
    if len(chosen) != 1:
        names = ", ".join(f"{name}=" for name in given)
        got = ", ".join(f"{name}=" for name in chosen) or "none"
        raise TypeError(f"{where} needs exactly one of {names} (got {got}).")
    return chosen[0]


def artifact_name(text: str) -> str:
    """``text`` as an artifact name: letters, digits, ``_ . -`` only, at most 150 long."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "figure"
    return cleaned[:150]


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and numbers, tuples and dates made JSON values."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)


def _texts(values: Sequence[Any] | None, what: str, count: int | None = None) -> list[str] | None:
    if values is None:
        return None
    texts = [str(value) for value in values]
    if count is not None and len(texts) != count:
        raise ValueError(f"{what}: {len(texts)} given for {count}; give one each.")
    return texts


def _thinned(count: int) -> np.ndarray | None:
    """Indices keeping at most :data:`MAX_POINTS` of ``count`` points, evenly spread
    (first and last kept); None when all are kept."""
    if count <= MAX_POINTS:
        return None
    return np.unique(np.linspace(0, count - 1, MAX_POINTS).round().astype(int))


def _points(
    data: Any, columns: int, labels: Sequence[Any] | None, where: str
) -> tuple[dict[str, Any], int]:
    """One series' columns (``x``, ``y`` and ``z`` when 3) as lists, with its labels;
    and how many points it had."""
    array = np.asarray(data if isinstance(data, np.ndarray) else list(data), dtype=float)
    if array.size == 0:
        array = array.reshape(0, columns)
    if array.ndim != 2 or array.shape[1] != columns:
        pairs = "(x, y)" if columns == 2 else "(x, y, z)"
        raise ValueError(f"{where} needs rows of {pairs}, not an array of shape {array.shape}.")
    total = len(array)
    texts = _texts(labels, f"{where} labels", total)
    keep = _thinned(total)
    if keep is not None:
        array = array[keep]
        texts = None if texts is None else [texts[i] for i in keep]
    series = {axis: array[:, index].tolist() for index, axis in enumerate("xyz"[:columns])}
    series["labels"] = texts
    return series, total


def _mode(mode: str, allowed: Sequence[str], where: str) -> str:
    if mode not in allowed:
        raise ValueError(f"{where}: mode must be one of {', '.join(allowed)}, not {mode!r}.")
    return mode


def histogram(
    values: Any,
    labels: Sequence[str] | None,
    xlabels: Sequence[str] | None,
    xaxis: str | None,
    yaxis: str | None,
    mode: str | None,
) -> dict[str, Any]:
    """A histogram already counted: one bar per value, a row of values per series.

    ``numpy.histogram``'s answer, ``(counts, bin_edges)``, is taken as it is meant: the
    counts, each bar labelled with its bin (unless ``xlabels`` are given).
    """
    counted = counts_and_edges(values)
    if counted is not None:
        values, edges = counted
        if xlabels is None:
            xlabels = [f"{low:g} to {high:g}" for low, high in itertools.pairwise(edges)]
    array = np.atleast_2d(np.asarray(values, dtype=float))
    if array.ndim != 2:
        raise ValueError(
            f"report_histogram needs a list of values or rows of them, not shape {array.shape}."
        )
    rows, columns = array.shape
    names = _texts(labels, "report_histogram labels (one per row)")
    if names is not None and len(names) not in (rows, 1):
        raise ValueError(f"report_histogram: {len(names)} labels for {rows} rows of values.")
    ticks = _texts(xlabels, "report_histogram xlabels (one per value of a row)", columns)
    return {
        "values": array[:, :MAX_BARS].tolist(),
        "labels": names,
        "xlabels": None if ticks is None else ticks[:MAX_BARS],
        "xaxis": xaxis,
        "yaxis": yaxis,
        "mode": _mode(mode or "group", HISTOGRAM_MODES, "report_histogram"),
        "shape": [rows, columns],
        "truncated": columns > MAX_BARS,
    }


def counts_and_edges(values: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(counts, bin_edges)`` if ``values`` is what ``numpy.histogram`` returns, else None."""
    if not isinstance(values, tuple) or len(values) != 2:
        return None
    try:
        counts, edges = (np.asarray(part, dtype=float) for part in values)
    except (TypeError, ValueError):
        return None
    if counts.ndim != 1 or edges.ndim != 1 or len(edges) != len(counts) + 1:
        return None
    return counts, edges


def scatter2d(
    series: str,
    scatter: Any,
    xaxis: str | None,
    yaxis: str | None,
    labels: Sequence[str] | None,
    mode: str,
    comment: str | None,
) -> dict[str, Any]:
    """One series of ``(x, y)`` points."""
    points, total = _points(scatter, 2, labels, "report_scatter2d")
    return {
        "series": [{"name": str(series), **points}],
        "xaxis": xaxis,
        "yaxis": yaxis,
        "mode": _mode(mode, SCATTER_MODES, "report_scatter2d"),
        "comment": comment,
        "points": total,
        "truncated": total > len(points["x"]),
    }


def line_plot(
    series: Sequence[SeriesInfo | Mapping[str, Any]],
    xaxis: str | None,
    yaxis: str | None,
    mode: str,
    reverse_xaxis: bool,
    comment: str | None,
) -> dict[str, Any]:
    """Several lines of ``(x, y)`` points (:class:`SeriesInfo` or dicts of its fields)."""
    lines = [item if isinstance(item, SeriesInfo) else SeriesInfo(**item) for item in series]
    kept = []
    total = 0
    for line in lines:
        points, count = _points(line.data, 2, line.labels, f"report_line_plot {line.name!r}")
        kept.append({"name": str(line.name), **points})
        total += count
    return {
        "series": kept,
        "xaxis": xaxis,
        "yaxis": yaxis,
        "mode": _mode(mode, SCATTER_MODES, "report_line_plot"),
        "reverse_xaxis": bool(reverse_xaxis),
        "comment": comment,
        "points": total,
        "truncated": total > sum(len(line["x"]) for line in kept),
    }


def _is_several(scatter: Any) -> bool:
    """Whether a 3D scatter is a list of series (arrays, or lists of points) as ClearML
    takes it, rather than one list of points."""
    if not isinstance(scatter, list) or not scatter:
        return False
    first = scatter[0]
    return isinstance(first, np.ndarray) or (
        isinstance(first, list | tuple) and bool(first) and isinstance(first[0], list | tuple)
    )


def scatter3d(
    series: str | Sequence[str],
    scatter: Any,
    xaxis: str | None,
    yaxis: str | None,
    zaxis: str | None,
    labels: Sequence[Any] | None,
    mode: str,
    comment: str | None,
) -> dict[str, Any]:
    """One series of ``(x, y, z)`` points, or several (a list of them)."""
    several = _is_several(scatter)
    groups = list(scatter) if several else [scatter]
    names = list(series) if not isinstance(series, str) else None
    kept = []
    total = 0
    for index, group in enumerate(groups):
        own = labels
        if several and labels is not None:
            own = labels[min(index, len(labels) - 1)] if labels else None
            own = own if isinstance(own, list | tuple) else None
        if names is not None:
            name = str(names[index]) if index < len(names) else f"series {index + 1}"
        else:
            name = str(series) if not several else f"{series} {index + 1}"
        points, count = _points(group, 3, own, "report_scatter3d")
        kept.append({"name": name, **points})
        total += count
    return {
        "series": kept,
        "xaxis": xaxis,
        "yaxis": yaxis,
        "zaxis": zaxis,
        "mode": _mode(mode, SCATTER_MODES, "report_scatter3d"),
        "comment": comment,
        "points": total,
        "truncated": total > sum(len(line["x"]) for line in kept),
    }


def matrix(
    values: Any,
    xaxis: str | None,
    yaxis: str | None,
    xlabels: Sequence[str] | None,
    ylabels: Sequence[str] | None,
    comment: str | None,
    where: str,
) -> dict[str, Any]:
    """A 2D matrix (confusion matrix, surface heights) with its axes' titles and labels."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{where} needs a 2D matrix, not an array of shape {array.shape}.")
    rows, columns = array.shape
    x_texts = _texts(xlabels, f"{where} xlabels (one per column)", columns)
    y_texts = _texts(ylabels, f"{where} ylabels (one per row)", rows)
    return {
        "matrix": array[:MAX_MATRIX_SIDE, :MAX_MATRIX_SIDE].tolist(),
        "xaxis": xaxis,
        "yaxis": yaxis,
        "xlabels": None if x_texts is None else x_texts[:MAX_MATRIX_SIDE],
        "ylabels": None if y_texts is None else y_texts[:MAX_MATRIX_SIDE],
        "comment": comment,
        "shape": [rows, columns],
        "truncated": rows > MAX_MATRIX_SIDE or columns > MAX_MATRIX_SIDE,
    }


def plotly_figure(figure: Any) -> dict[str, Any]:
    """A plotly figure (a dict as plotly.js takes it, or a ``plotly`` Figure) as JSON."""
    if isinstance(figure, Mapping):
        plain = jsonable(figure)
    elif callable(getattr(figure, "to_plotly_json", None)):
        plain = jsonable(figure.to_plotly_json())
    else:
        raise TypeError(
            "report_plotly needs a plotly Figure or a dict with 'data' (and 'layout'), not "
            f"a {type(figure).__name__}."
        )
    if not isinstance(plain.get("data", []), list):
        raise TypeError("report_plotly: the figure's 'data' must be a list of traces.")
    return {"figure": plain}


def image_value(image: Any) -> Any:
    """``image`` as a PIL image: a numpy array is converted as ClearML converts it (floats
    up to 1 scaled to 0..255, one channel made grey); a PIL image is kept."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"report_image: image must be a numpy array or a PIL image, not {type(image).__name__}."
        )
    pixels = np.atleast_3d(image)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise ValueError(
            "report_image: an image array must be height x width (grey), x3 (RGB) or x4 "
            f"(RGBA), not of shape {image.shape}."
        )
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.floating) and pixels.size and pixels.max() <= 1.0:
            pixels = pixels * 255
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return Image.fromarray(pixels)


def image_info(path_or_image: Any) -> dict[str, Any]:
    """Width, height and mode of an image (a PIL image or a file), or ``{}`` for a file
    PIL cannot read."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(path_or_image, Image.Image):
        image = path_or_image
        return {"width": image.width, "height": image.height, "mode": image.mode}
    try:
        with Image.open(path_or_image) as image:
            return {"width": image.width, "height": image.height, "mode": image.mode}
    except (UnidentifiedImageError, OSError):
        return {}


def content_type(filename: str) -> str:
    """The MIME type a file name suggests (``application/octet-stream`` if none)."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


# -- tables --------------------------------------------------------------------------------


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (CSV text with long lines is not a path)."""
    if "\n" in text:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def table(table_plot: Any, csv: str | None) -> dict[str, Any]:
    """A table from a pandas DataFrame, a list of rows (first row the header), or a CSV
    file or text; at most :data:`MAX_TABLE_ROWS` rows are kept."""
    columns, rows = _table(table_plot, csv)
    return {
        "columns": columns,
        "rows": rows[:MAX_TABLE_ROWS],
        "total_rows": len(rows),
        "truncated": len(rows) > MAX_TABLE_ROWS,
    }


def _table(table: Any, csv: str | None) -> tuple[list[str], list[list[Any]]]:
    if table is None and csv is not None:
        text = Path(csv).read_text() if _is_file(csv) else csv
        parsed = list(csv_module.reader(io.StringIO(text)))
        return (parsed[0], parsed[1:]) if parsed else ([], [])
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        frame = table.reset_index() if getattr(table.index, "name", None) else table
        columns = [str(c) for c in frame.columns]
        rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        return columns, rows
    if isinstance(table, Sequence) and table and isinstance(table[0], Sequence):
        header, *body = table
        return [str(c) for c in header], [[_plain(v) for v in row] for row in body]
    raise TypeError(
        "report_table needs table_plot= a pandas DataFrame or a list of rows (first row the "
        "header), or csv= a CSV path or text."
    )


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# -- summaries -----------------------------------------------------------------------------


def _short(text: str, limit: int = 80) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _range(values: Sequence[Sequence[float]]) -> str:
    flat = [v for row in values for v in row if not math.isnan(v)]
    if not flat:
        return "no values"
    return f"{_number(min(flat))}..{_number(max(flat))}"


def _cut(payload: Mapping[str, Any]) -> str:
    return " (cut)" if payload.get("truncated") else ""


def summary(kind: str, payload: Mapping[str, Any]) -> str:
    """One short line saying what a report of ``kind`` with ``payload`` holds."""
    if kind in ("text", "log"):
        return _short(payload.get("text", ""))
    if kind == "table":
        columns = len(payload.get("columns") or [])
        return f"{payload.get('total_rows', 0)} rows x {columns} columns{_cut(payload)}"
    if kind == "histogram":
        rows, columns = payload.get("shape") or [0, 0]
        return f"{rows} series x {columns} bars, {payload.get('mode')}{_cut(payload)}"
    if kind in ("scatter2d", "line", "scatter3d"):
        lines = payload.get("series") or []
        names = ", ".join(str(line.get("name")) for line in lines[:3])
        more = f" +{len(lines) - 3}" if len(lines) > 3 else ""
        return (
            f"{len(lines)} series ({names}{more}), {payload.get('points', 0)} points, "
            f"{payload.get('mode')}{_cut(payload)}"
        )
    if kind in ("confusion_matrix", "surface"):
        rows, columns = payload.get("shape") or [0, 0]
        return f"{rows}x{columns} matrix, {_range(payload.get('matrix') or [])}{_cut(payload)}"
    if kind == "plotly":
        traces = (payload.get("figure") or {}).get("data") or []
        types = sorted({str(trace.get("type", "scatter")) for trace in traces})
        return f"plotly figure, {len(traces)} traces ({', '.join(types) or 'none'})"
    if kind in ("figure", "image", "media"):
        if payload.get("url"):
            return f"{payload.get('content_type', kind)} at {payload['url']}"
        parts = [str(payload.get("content_type") or ("image/png" if kind == "figure" else ""))]
        if payload.get("width"):
            parts.append(f"{payload['width']}x{payload['height']} {payload.get('mode', '')}")
        if payload.get("size") is not None:
            parts.append(format_size(int(payload["size"])))
        parts.append(f"artifact {payload.get('artifact')}")
        return ", ".join(part.strip() for part in parts if part.strip())
    return _short(str(dict(payload)))

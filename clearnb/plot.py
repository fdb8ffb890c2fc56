"""Static pictures of a pipeline: the DAG of its steps, coloured by status.

Drawn from the plain state dicts a controller stores (:meth:`clearnb.pipeline.graph.Node.state`)
with matplotlib's object-oriented API only (no pyplot), so a controller thread can render
while a notebook plots. Steps are laid out in layers from left to right (a layered drawing:
long edges get their own lanes, layers are ordered to cut crossings); a pipeline too long for
one row wraps onto the next rows.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
from matplotlib.path import Path
from matplotlib.textpath import TextToPath

from clearnb.pipeline.graph import layers
from clearnb.pipeline.progress import (
    cell_text,
    elapsed,
    format_seconds,
    parameter_lines,
    step_counts,
)
from clearnb.status import STEP_STATUSES

_MOVE, _LINE, _QUAD, _CUBIC = (int(c) for c in (Path.MOVETO, Path.LINETO, Path.CURVE3, Path.CURVE4))

__all__ = ["STATUS_COLOURS", "figure_png", "plot_pipeline"]


@dataclass(frozen=True)
class StatusStyle:
    """How a status is drawn: the status colour, the box fill, and edge/hatch details."""

    colour: str
    fill: str
    text: str
    linestyle: Literal["solid", "dashed", "dotted"] = "solid"
    hatch: str | None = None


STATUS_COLOURS: dict[str, StatusStyle] = {
    # Okabe-Ito hues, distinguishable with the common colour-vision deficiencies; every box
    # also names its status in words, so colour is never the only cue.
    "pending": StatusStyle("#8C8C8C", "#F4F4F4", "#555555"),
    "queued": StatusStyle("#56B4E9", "#E3F2FB", "#1F6E99"),
    "running": StatusStyle("#0072B2", "#D6E8F4", "#005A8C"),
    "completed": StatusStyle("#009E73", "#D9F0E8", "#006B4E"),
    "failed": StatusStyle("#D55E00", "#F9E0CF", "#A34700"),
    "aborted": StatusStyle("#E69F00", "#FBEFD2", "#8A5F00"),
    "cached": StatusStyle("#CC79A7", "#F5E6EE", "#8E4F74"),
    "skipped": StatusStyle("#AAAAAA", "#FAFAFA", "#888888", linestyle="dashed", hatch="////"),
}
"""The style of every step status."""

_UNKNOWN = StatusStyle("#8C8C8C", "#FFFFFF", "#555555", linestyle="dotted")
_INK = "#222222"
_EDGE = "#7F7F7F"

# Sizes in inches (the axes are laid out so that one data unit is one inch).
_MARGIN = 0.45
_COLUMN_GAP = 0.7
_ROW_GAP = 0.28
_LANE_GAP = 0.18
_BAND_GAP = 0.55
_PAD = 0.1
_MIN_BOX = 1.25
_MAX_BOX = 3.0
_MAX_WIDTH = 19.0
"""Width a pipeline wrapped onto several rows is fitted to."""
_MAX_UNWRAPPED = 27.0
"""Width up to which a pipeline stays on one row."""
_TITLE_BAND = 0.95
_BOTTOM = 0.2
_LEGEND_ROW = 0.3

_NAME_SIZE = 9.5
_SMALL_SIZE = 7.5
_NAME_CHARS = 30
_FONTS = {
    "title": FontProperties(family="DejaVu Sans", weight="bold", size=_NAME_SIZE),
    "parameter": FontProperties(family="DejaVu Sans Mono", size=_SMALL_SIZE),
    "footer": FontProperties(family="DejaVu Sans", weight="bold", size=_SMALL_SIZE),
}
_PARAMETER_CHARS = 36
_MAX_PARAMETER_LINES = 3


def plot_pipeline(
    nodes: Mapping[str, Mapping[str, Any]],
    order: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a pipeline's steps (``{name: state}``) as a DAG coloured by status.

    Each box shows the step's name, its overridden parameters and its status (with
    ``cell i/n`` while it runs); arrows go from parents to children. ``order`` is the
    order the steps were added (it breaks ties in the layout). The figure is sized to the
    graph; save it with :func:`figure_png` or ``fig.savefig``.
    """
    names = [n for n in (order or []) if n in nodes]
    names += [n for n in nodes if n not in names]
    parents = {
        n: [p for p in nodes[n].get("parents") or [] if p in nodes and p != n] for n in names
    }
    texts = TextToPath()
    boxes = {name: _Box.of(name, nodes[name], texts) for name in names}
    box_width = max([_MIN_BOX] + [b.width for b in boxes.values()])
    box_width = min(box_width, _MAX_BOX)
    layout = _Layout.build(parents, {n: b.height for n, b in boxes.items()}, box_width)

    legend = [s for s in STEP_STATUSES if any(_status(nodes[n]) == s for n in names)]
    legend += sorted({_status(nodes[n]) for n in names} - set(STEP_STATUSES))
    legend_columns = max(1, min(len(legend), 4 if layout.width < 6 else 8))
    legend_rows = -(-len(legend) // legend_columns) if legend else 0
    legend_band = legend_rows * _LEGEND_ROW
    width = max(layout.width + 2 * _MARGIN, 4.2, 1.15 * legend_columns + 0.6)
    height = _TITLE_BAND + max(layout.height, 0.6) + 0.3 + legend_band + _BOTTOM

    fig = Figure(figsize=(width, height), dpi=100, facecolor="white")
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    left = (width - layout.width) / 2
    top = _TITLE_BAND

    counts = step_counts({"nodes": nodes})
    heading = title or "Pipeline"
    ax.text(
        _MARGIN,
        0.28,
        heading,
        fontsize=13,
        fontweight="bold",
        color=_INK,
        va="top",
        ha="left",
        parse_math=False,
    )
    summary = f"{len(names)} step{'s' if len(names) != 1 else ''}"
    if counts:
        summary += "  ·  " + "  ·  ".join(f"{k} {v}" for v, k in counts.items())
    ax.text(
        _MARGIN,
        0.58,
        summary,
        fontsize=8.5,
        color="#666666",
        va="top",
        ha="left",
        parse_math=False,
    )
    if not names:
        ax.text(
            width / 2,
            top + 0.3,
            "no steps",
            fontsize=10,
            color="#888888",
            ha="center",
            va="center",
            style="italic",
        )

    for index, edge in enumerate(layout.edges):
        faint = _status(nodes[str(edge[-1])]) == "skipped"
        path = layout.edge_path(index, left, top)
        ax.add_patch(
            FancyArrowPatch(
                path=path,
                gid=f"edge:{edge[0]}->{edge[-1]}",
                arrowstyle="-|>",
                mutation_scale=9,
                linewidth=1.1,
                linestyle="dashed" if faint else "solid",
                color="#BBBBBB" if faint else _EDGE,
                zorder=1,
                shrinkA=0,
                shrinkB=0,
            )
        )
    for name in names:
        x, y = layout.position[name]
        boxes[name].draw(ax, name, left + x, top + y, box_width, nodes[name])

    if legend:
        handles = [
            Patch(
                facecolor=_style(s).fill,
                edgecolor=_style(s).colour,
                linewidth=1.6,
                linestyle=_style(s).linestyle,
                hatch=_style(s).hatch,
                label=s,
            )
            for s in legend
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, _BOTTOM / height),
            ncol=legend_columns,
            frameon=False,
            fontsize=8.5,
            handlelength=1.6,
            handleheight=1.1,
            columnspacing=1.4,
        )
    return fig


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (rendered with Agg, safe off the main thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, facecolor=fig.get_facecolor())
    return buffer.getvalue()


# -- one box -----------------------------------------------------------------------------------


def _status(node: Mapping[str, Any]) -> str:
    return str(node.get("status") or "pending")


def _style(status: str) -> StatusStyle:
    return STATUS_COLOURS.get(status, _UNKNOWN)


def _line_height(size: float) -> float:
    return size * 1.32 / 72


@dataclass
class _Box:
    """The text of one step's box and the size it needs."""

    title: str
    parameters: list[str]
    footer: str
    width: float
    height: float
    progress: float | None

    @classmethod
    def of(cls, name: str, node: Mapping[str, Any], texts: TextToPath) -> _Box:
        status = _status(node)
        title = name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"
        parameters = parameter_lines(
            node.get("parameters") or {}, _MAX_PARAMETER_LINES, _PARAMETER_CHARS
        )
        facts = [status]
        cells = cell_text(node)
        if cells:
            facts.append(cells)
        took = elapsed(node)
        if took is not None and status not in ("pending", "queued", "skipped"):
            facts.append(format_seconds(took))
        if node.get("retries"):
            facts.append(f"retry {node['retries']}")
        footer = "  ·  ".join(facts)
        progress = None
        info = node.get("progress") or {}
        if status == "running" and isinstance(info.get("cells"), int) and info["cells"] > 0:
            progress = min(1.0, max(0.0, (int(info.get("cell") or 0)) / info["cells"]))
        room = _MAX_BOX - 2 * _PAD
        title = _cut(texts, title, _FONTS["title"], room)
        footer = _cut(texts, footer, _FONTS["footer"], room)
        parameters = [_cut(texts, line, _FONTS["parameter"], room) for line in parameters]
        widths = [_text_width(texts, title, _FONTS["title"])]
        widths += [_text_width(texts, footer, _FONTS["footer"])]
        widths += [_text_width(texts, line, _FONTS["parameter"]) for line in parameters]
        width = max(widths) + 2 * _PAD + 0.02
        height = (
            2 * _PAD
            + _line_height(_NAME_SIZE)
            + len(parameters) * _line_height(_SMALL_SIZE)
            + _line_height(_SMALL_SIZE)
            + (0.05 if parameters else 0.02)
            + (0.07 if progress is not None else 0)
        )
        return cls(title, parameters, footer, width, height, progress)

    def draw(
        self, ax: Any, name: str, x: float, y: float, width: float, node: Mapping[str, Any]
    ) -> None:
        """Draw the box centred at ``(x, y)`` (inches, y downwards); its outline's gid is
        ``step:<name>``."""
        status = _status(node)
        style = _style(status)
        x0, y0 = x - width / 2, y - self.height / 2
        shape: dict[str, Any] = {
            "xy": (x0, y0),
            "width": width,
            "height": self.height,
            "boxstyle": "round,pad=0,rounding_size=0.08",
        }
        ax.add_patch(FancyBboxPatch(**shape, facecolor=style.fill, edgecolor="none", zorder=3))
        if style.hatch:
            ax.add_patch(
                FancyBboxPatch(
                    **shape,
                    facecolor="none",
                    edgecolor="#DDDDDD",
                    linewidth=0,
                    hatch=style.hatch,
                    zorder=3.1,
                )
            )
        ax.add_patch(
            FancyBboxPatch(
                **shape,
                facecolor="none",
                edgecolor=style.colour,
                linewidth=2.2 if status in ("running", "failed") else 1.6,
                linestyle=style.linestyle,
                zorder=3.2,
                gid=f"step:{name}",
            )
        )
        room = width - 2 * _PAD
        cursor = y0 + _PAD
        ax.text(
            x0 + _PAD,
            cursor,
            self.title,
            fontproperties=_FONTS["title"],
            color=_INK if status != "skipped" else "#777777",
            va="top",
            ha="left",
            zorder=4,
            parse_math=False,
        )
        cursor += _line_height(_NAME_SIZE) + 0.03
        for line in self.parameters:
            ax.text(
                x0 + _PAD,
                cursor,
                line,
                fontproperties=_FONTS["parameter"],
                color="#3A3A3A",
                va="top",
                ha="left",
                zorder=4,
                parse_math=False,
            )
            cursor += _line_height(_SMALL_SIZE)
        footer_y = y0 + self.height - _PAD - (0.07 if self.progress is not None else 0)
        ax.text(
            x0 + _PAD,
            footer_y,
            self.footer,
            fontproperties=_FONTS["footer"],
            color=style.text,
            va="bottom",
            ha="left",
            zorder=4,
            parse_math=False,
        )
        if self.progress is not None:
            bar_y = y0 + self.height - _PAD - 0.035
            ax.add_patch(
                Rectangle(
                    (x0 + _PAD, bar_y), room, 0.045, facecolor="white", edgecolor="none", zorder=4
                )
            )
            ax.add_patch(
                Rectangle(
                    (x0 + _PAD, bar_y),
                    room * self.progress,
                    0.045,
                    facecolor=style.colour,
                    edgecolor="none",
                    zorder=5,
                )
            )


def _text_width(texts: TextToPath, text: str, prop: FontProperties) -> float:
    width, _, _ = texts.get_text_width_height_descent(text, prop, ismath=False)
    return float(width) / 72


def _cut(texts: TextToPath, text: str, prop: FontProperties, room: float) -> str:
    """``text``, cut with ``…`` if it is wider than ``room`` inches."""
    if _text_width(texts, text, prop) <= room:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _text_width(texts, text[:middle].rstrip() + "…", prop) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "…"


# -- layout ------------------------------------------------------------------------------------

Item = str | tuple[str, str, int]
"""A step name, or a lane a long edge takes through a layer: ``(parent, child, layer)``."""


@dataclass
class _Layout:
    """Where every step (and every lane of a long edge) goes, in inches."""

    position: dict[Item, tuple[float, float]]
    layer_of: dict[Item, int]
    band_of_layer: list[int]
    edges: list[list[Item]]
    """Each edge as the items it passes: parent, lanes, child."""
    box_width: float
    heights: dict[Item, float]
    ports: dict[tuple[Item, Item], tuple[float, float]]
    """For each edge (parent, child): y offsets where it leaves the parent and enters the child."""
    band_bottoms: list[float]
    wraps: list[float]
    """For each edge: how far its run between two rows of steps is off the gap's middle."""
    width: float
    height: float

    @classmethod
    def build(
        cls, parents: Mapping[str, Sequence[str]], heights: Mapping[str, float], box_width: float
    ) -> _Layout:
        grouped = layers(parents) if parents else []
        layer_of: dict[Item, int] = {n: i for i, group in enumerate(grouped) for n in group}
        columns: list[list[Item]] = [list(group) for group in grouped]
        edges: list[list[Item]] = []
        item_heights: dict[Item, float] = {}
        item_heights.update(heights)
        for child, ups in parents.items():
            for parent in ups:
                path: list[Item] = [parent]
                for layer in range(layer_of[parent] + 1, layer_of[child]):
                    lane: Item = (parent, child, layer)
                    columns[layer].append(lane)
                    layer_of[lane] = layer
                    item_heights[lane] = 0.0
                    path.append(lane)
                path.append(child)
                edges.append(path)
        ups_of: dict[Item, list[Item]] = {item: [] for item in layer_of}
        downs_of: dict[Item, list[Item]] = {item: [] for item in layer_of}
        for path in edges:
            for a, b in itertools.pairwise(path):
                ups_of[b].append(a)
                downs_of[a].append(b)
        columns = _order_layers(columns, ups_of, downs_of)
        ys = _place_rows(columns, ups_of, downs_of, item_heights)

        pitch = box_width + _COLUMN_GAP
        if len(columns) * pitch - _COLUMN_GAP <= _MAX_UNWRAPPED - 2 * _MARGIN:
            per_band = max(1, len(columns))
        else:
            per_band = max(1, int((_MAX_WIDTH - 2 * _MARGIN + _COLUMN_GAP) / pitch))
        bands = max(1, -(-len(columns) // per_band))
        per_band = max(1, -(-len(columns) // bands))
        band_of_layer = [i // per_band for i in range(len(columns))]
        gaps = _column_gaps(columns, downs_of, ys, band_of_layer)
        xs: list[float] = []
        width = 0.0
        for band in range(bands):
            layers_here = [i for i in range(len(columns)) if band_of_layer[i] == band]
            if not layers_here:
                continue
            extra = sum(gaps[i] - _COLUMN_GAP for i in layers_here[:-1])
            limit = _MAX_WIDTH if bands > 1 else _MAX_UNWRAPPED
            budget = max(0.0, limit - 2 * _MARGIN - len(layers_here) * pitch + _COLUMN_GAP)
            shrink = min(1.0, budget / extra) if extra > 0 else 1.0
            x = box_width / 2
            for i in layers_here:
                xs.append(x)
                x += box_width + _COLUMN_GAP + (gaps[i] - _COLUMN_GAP) * shrink
            width = max(width, xs[-1] + box_width / 2)
        position: dict[Item, tuple[float, float]] = {}
        band_bottoms: list[float] = []
        offset = 0.0
        for band in range(bands):
            members = [
                it for i, col in enumerate(columns) if band_of_layer[i] == band for it in col
            ]
            if not members:
                continue
            low = min(ys[it] - item_heights[it] / 2 for it in members)
            high = max(ys[it] + item_heights[it] / 2 for it in members)
            for item in members:
                position[item] = (xs[layer_of[item]], ys[item] - low + offset)
            offset += high - low
            band_bottoms.append(offset)
            offset += _BAND_GAP
        height = max(0.0, offset - _BAND_GAP)
        ports = _ports(edges, position, item_heights)
        wrapping = [
            i
            for i, path in enumerate(edges)
            if band_of_layer[layer_of[path[0]]] != band_of_layer[layer_of[path[-1]]]
        ]
        spread = min(0.06, (_BAND_GAP - 0.2) / max(1, len(wrapping)))
        wraps = [0.0] * len(edges)
        for k, i in enumerate(wrapping):
            wraps[i] = (k - (len(wrapping) - 1) / 2) * spread
        return cls(
            position,
            layer_of,
            band_of_layer,
            edges,
            box_width,
            item_heights,
            ports,
            band_bottoms,
            wraps,
            width,
            height,
        )

    def edge_path(self, index: int, left: float, top: float) -> Path:
        """The drawn path of edge ``index``, from the parent's right side to the child's left."""
        edge = self.edges[index]
        half = self.box_width / 2
        out_dy, in_dy = self.ports[(edge[0], edge[-1])]
        vertices: list[tuple[float, float]] = []
        codes: list[int] = []
        x, y = self.position[edge[0]]
        current = (left + x + half, top + y + out_dy)
        vertices.append(current)
        codes.append(_MOVE)
        for step, item in enumerate(edge[1:], start=1):
            nx, ny = self.position[item]
            last = step == len(edge) - 1
            target = (left + nx - half, top + ny + (in_dy if last else 0.0))
            band = self.band_of_layer[self.layer_of[edge[step - 1]]]
            same_band = band == self.band_of_layer[self.layer_of[item]]
            if same_band:
                bend = (target[0] - current[0]) / 2
                vertices += [(current[0] + bend, current[1]), (target[0] - bend, target[1]), target]
                codes += [_CUBIC] * 3
            else:
                lane = top + self.band_bottoms[band] + _BAND_GAP / 2 + self.wraps[index]
                out_x = current[0] + _COLUMN_GAP / 2
                in_x = target[0] - _COLUMN_GAP / 2
                points = [
                    current,
                    (out_x, current[1]),
                    (out_x, lane),
                    (in_x, lane),
                    (in_x, target[1]),
                    target,
                ]
                _rounded(points, 0.12, vertices, codes)
            current = target
            if not last:
                current = (left + nx + half, top + ny)
                vertices.append(current)
                codes.append(_LINE)
        return Path(vertices, codes)


def _rounded(
    points: Sequence[tuple[float, float]],
    radius: float,
    vertices: list[tuple[float, float]],
    codes: list[int],
) -> None:
    """Append a polyline through ``points`` (the first is the current point) with round corners."""
    for before, corner, after in zip(points, points[1:], points[2:], strict=False):
        r_in = min(radius, _distance(before, corner) / 2)
        r_out = min(radius, _distance(corner, after) / 2)
        vertices += [_towards(corner, before, r_in), corner, _towards(corner, after, r_out)]
        codes += [_LINE, _QUAD, _QUAD]
    vertices.append(points[-1])
    codes.append(_LINE)


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5)


def _towards(a: tuple[float, float], b: tuple[float, float], d: float) -> tuple[float, float]:
    length = _distance(a, b)
    if length == 0:
        return a
    return (a[0] + (b[0] - a[0]) * d / length, a[1] + (b[1] - a[1]) * d / length)


def _ports(
    edges: Sequence[Sequence[Item]],
    position: Mapping[Item, tuple[float, float]],
    heights: Mapping[Item, float],
) -> dict[tuple[Item, Item], tuple[float, float]]:
    """Spread the edges leaving (entering) a box over its right (left) side, in y order."""
    leaving: dict[Item, list[Sequence[Item]]] = {}
    entering: dict[Item, list[Sequence[Item]]] = {}
    for edge in edges:
        leaving.setdefault(edge[0], []).append(edge)
        entering.setdefault(edge[-1], []).append(edge)
    out: dict[tuple[Item, Item], float] = {}
    into: dict[tuple[Item, Item], float] = {}
    for groups, result, neighbour in ((leaving, out, 1), (entering, into, -2)):
        for item, group in groups.items():
            group.sort(key=lambda e: position[e[neighbour]][1])
            count = len(group)
            step = min(0.1, 0.6 * heights[item] / (count - 1)) if 1 < count <= 4 else 0.0
            for index, edge in enumerate(group):
                result[(edge[0], edge[-1])] = (index - (count - 1) / 2) * step
    return {key: (out[key], into[key]) for key in out}


def _column_gaps(
    columns: Sequence[Sequence[Item]],
    downs_of: Mapping[Item, Sequence[Item]],
    ys: Mapping[Item, float],
    band_of_layer: Sequence[int],
) -> list[float]:
    """Space after each layer: wider where edges to the next layer climb or fall far."""
    gaps = []
    for i, column in enumerate(columns):
        rise = [
            abs(ys[b] - ys[a])
            for a in column
            for b in downs_of[a]
            if i + 1 < len(band_of_layer) and band_of_layer[i + 1] == band_of_layer[i]
        ]
        gaps.append(min(2.0, max(_COLUMN_GAP, 0.12 * max(rise, default=0.0))))
    return gaps


def _order_layers(
    columns: list[list[Item]],
    ups_of: Mapping[Item, Sequence[Item]],
    downs_of: Mapping[Item, Sequence[Item]],
) -> list[list[Item]]:
    """Reorder each layer by the mean position of its neighbours to cut edge crossings."""
    best = [list(c) for c in columns]
    best_crossings = _crossings(best, downs_of)
    current = [list(c) for c in columns]
    for _ in range(6):
        for direction in (1, -1):
            if direction == 1:
                indices: Sequence[int] = range(1, len(current))
            else:
                indices = range(len(current) - 2, -1, -1)
            neighbours = ups_of if direction == 1 else downs_of
            for i in indices:
                current[i] = _by_barycentre(current[i], current[i - direction], neighbours)
            crossings = _crossings(current, downs_of)
            if crossings < best_crossings:
                best, best_crossings = [list(c) for c in current], crossings
        if best_crossings == 0:
            break
    return best


def _by_barycentre(
    column: Sequence[Item], fixed: Sequence[Item], neighbours: Mapping[Item, Sequence[Item]]
) -> list[Item]:
    """``column`` sorted by the mean index of each item's neighbours in ``fixed``."""
    where = {item: k for k, item in enumerate(fixed)}
    scale = len(fixed) / max(1, len(column))

    def key(indexed: tuple[int, Item]) -> tuple[float, int]:
        index, item = indexed
        near = [where[n] for n in neighbours[item] if n in where]
        return (sum(near) / len(near) if near else index * scale, index)

    return [item for _, item in sorted(enumerate(column), key=key)]


def _crossings(columns: Sequence[Sequence[Item]], downs_of: Mapping[Item, Sequence[Item]]) -> int:
    total = 0
    for left, right in itertools.pairwise(columns):
        where = {item: k for k, item in enumerate(right)}
        pairs = [(i, where[d]) for i, item in enumerate(left) for d in downs_of[item] if d in where]
        for a in range(len(pairs)):
            for b in range(a + 1, len(pairs)):
                (i1, j1), (i2, j2) = pairs[a], pairs[b]
                if (i1 - i2) * (j1 - j2) < 0:
                    total += 1
    return total


def _place_rows(
    columns: Sequence[Sequence[Item]],
    ups_of: Mapping[Item, Sequence[Item]],
    downs_of: Mapping[Item, Sequence[Item]],
    heights: Mapping[Item, float],
) -> dict[Item, float]:
    """Vertical centres: each item near its neighbours, never overlapping in its layer."""
    ys: dict[Item, float] = {}
    for column in columns:
        ys.update(zip(column, _stack(column, [0.0] * len(column), heights), strict=True))
    for _ in range(4):
        for direction in (1, -1):
            indices = range(1, len(columns)) if direction == 1 else range(len(columns) - 2, -1, -1)
            neighbours = ups_of if direction == 1 else downs_of
            for i in indices:
                column = columns[i]
                wanted = []
                for item in column:
                    near = [ys[n] for n in neighbours[item]]
                    wanted.append(sum(near) / len(near) if near else ys[item])
                ys.update(zip(column, _stack(column, wanted, heights), strict=True))
    return ys


def _stack(
    column: Sequence[Item], wanted: Sequence[float], heights: Mapping[Item, float]
) -> list[float]:
    """Centres as close to ``wanted`` as keeping the order and the gaps allows (least squares)."""
    if not column:
        return []
    offsets = [0.0]
    for a, b in itertools.pairwise(column):
        real = isinstance(a, str) and isinstance(b, str)
        gap = _ROW_GAP if real else _LANE_GAP
        offsets.append(offsets[-1] + (heights[a] + heights[b]) / 2 + gap)
    blocks: list[list[float]] = []  # [base, weight, first index, last index]
    for index, (want, offset) in enumerate(zip(wanted, offsets, strict=True)):
        blocks.append([want - offset, 1.0, index, index])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            base, weight, _, last = blocks.pop()
            previous = blocks[-1]
            total = previous[1] + weight
            previous[0] = (previous[0] * previous[1] + base * weight) / total
            previous[1], previous[3] = total, last
    result = [0.0] * len(column)
    for base, _, first, last in blocks:
        for index in range(int(first), int(last) + 1):
            result[index] = base + offsets[index]
    return result

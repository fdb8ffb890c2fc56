"""Drawing a pipeline's DAG: one box per step, coloured by status, and the edges between.

Drawn from the plain state dicts a controller stores (:meth:`clearnb.pipeline.graph.Node.state`)
with matplotlib's object-oriented API only (no pyplot), so a controller thread can render
while a notebook plots. Where the boxes go is :mod:`clearnb.plot.layout`'s work.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
from matplotlib.textpath import TextToPath

from clearnb.pipeline.progress import (
    cell_text,
    elapsed,
    format_seconds,
    parameter_lines,
    step_counts,
)
from clearnb.plot.layout import MARGIN, Layout
from clearnb.status import STEP_STATUSES

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
_PAD = 0.1
_MIN_BOX = 1.25
_MAX_BOX = 3.0
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
    layout = Layout.build(parents, {n: b.height for n, b in boxes.items()}, box_width)

    legend = [s for s in STEP_STATUSES if any(_status(nodes[n]) == s for n in names)]
    legend += sorted({_status(nodes[n]) for n in names} - set(STEP_STATUSES))
    legend_columns = max(1, min(len(legend), 4 if layout.width < 6 else 8))
    legend_rows = -(-len(legend) // legend_columns) if legend else 0
    legend_band = legend_rows * _LEGEND_ROW
    width = max(layout.width + 2 * MARGIN, 4.2, 1.15 * legend_columns + 0.6)
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
        MARGIN,
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
        MARGIN,
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

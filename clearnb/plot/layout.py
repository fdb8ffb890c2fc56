"""Where a pipeline's boxes go: layers, lanes for long edges, crossing-cutting order, rows.

Pure geometry in inches (y grows downwards): the steps' parents and box heights go in, the
positions of boxes and the paths of edges come out. Steps are placed in layers from left to
right (a layered drawing: long edges get their own lanes, each layer is ordered by the
barycentre of its neighbours to cut crossings, rows are stacked by least squares); a
pipeline too long for one row wraps onto the next rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.path import Path

from clearnb.pipeline.graph import layers

_MOVE, _LINE, _QUAD, _CUBIC = (int(c) for c in (Path.MOVETO, Path.LINETO, Path.CURVE3, Path.CURVE4))

# Sizes in inches (the axes are laid out so that one data unit is one inch).
MARGIN = 0.45
"""Space around the drawing, left and right."""
_COLUMN_GAP = 0.7
_ROW_GAP = 0.28
_LANE_GAP = 0.18
_BAND_GAP = 0.55
_MAX_WIDTH = 19.0
"""Width a pipeline wrapped onto several rows is fitted to."""
_MAX_UNWRAPPED = 27.0
"""Width up to which a pipeline stays on one row."""

Item = str | tuple[str, str, int]
"""A step name, or a lane a long edge takes through a layer: ``(parent, child, layer)``."""


@dataclass
class Layout:
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
    ) -> Layout:
        """Place the steps ``{name: parents}`` with boxes ``box_width`` wide and
        ``heights[name]`` high; the drawing is ``width`` x ``height`` inches."""
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
        if len(columns) * pitch - _COLUMN_GAP <= _MAX_UNWRAPPED - 2 * MARGIN:
            per_band = max(1, len(columns))
        else:
            per_band = max(1, int((_MAX_WIDTH - 2 * MARGIN + _COLUMN_GAP) / pitch))
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
            budget = max(0.0, limit - 2 * MARGIN - len(layers_here) * pitch + _COLUMN_GAP)
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

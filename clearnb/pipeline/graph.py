"""Pure algorithms on a pipeline's graph, given as ``{step: [its parents]}``.

Order, cycles, descendants, layers for drawing, and the problems of the graph itself. No
step objects, no run: the controller, the plot, the widget and the CLI share these.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence

Edges = Mapping[str, Sequence[str]]
"""Each step's name mapped to its parents' names."""


def _sorter(edges: Edges) -> graphlib.TopologicalSorter[str]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, parents in edges.items():
        sorter.add(name, *[p for p in parents if p in edges])
    return sorter


def topological_order(edges: Edges) -> list[str]:
    """Step names, parents before children (ties in insertion order)."""
    return list(_sorter(edges).static_order())


def find_cycle(edges: Edges) -> list[str] | None:
    """A cycle of steps (first step repeated at the end), or None."""
    sorter = _sorter(edges)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return list(reversed(cycle))
    return None


def descendants(edges: Edges, name: str) -> list[str]:
    """Every step below ``name`` (children, their children, ...)."""
    children: dict[str, list[str]] = {n: [] for n in edges}
    for child, parents in edges.items():
        for parent in parents:
            if parent in children:
                children[parent].append(child)
    found: list[str] = []
    stack = list(children.get(name, []))
    while stack:
        current = stack.pop()
        if current not in found:
            found.append(current)
            stack.extend(children.get(current, []))
    return found


def layers(parents: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Steps grouped by depth (longest path from a root), for drawing left to right.

    ``parents`` maps each step name to its parents' names (unknown names are ignored).
    """
    depth: dict[str, int] = {}
    for name in _sorter(parents).static_order():
        known = [p for p in parents[name] if p in depth]
        depth[name] = 1 + max((depth[p] for p in known), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in parents:
        grouped[depth[name]].append(name)
    return grouped


def step_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a step (it could not be referenced or stored), or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a str"
    if not name.strip():
        return "is empty"
    if name != name.strip():
        return "starts or ends with a space"
    if name == "pipeline":
        return "is kept for the pipeline's own parameters (${pipeline.<arg>})"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "holds a control character (such as NUL or a line break)"
    for char in (".", "$", "{", "}", "/", "\\"):
        if char in name:
            return f"holds {char!r}, which references (${{<step>.id}}) or file names cannot carry"
    return None


def structure_problems(edges: Edges, duplicates: Sequence[str] = ()) -> list[str]:
    """Problems of the graph itself: bad or duplicate names, unknown parents, cycles."""
    problems: list[str] = []
    for name in edges:
        problem = step_name_problem(name)
        if problem is not None:
            problems.append(
                f"step name {name!r} {problem}; name steps with letters, digits, '_' "
                "and '-', e.g. 'stage_data'"
            )
    problems += [
        f"step {name!r} is added more than once; give each step its own name" for name in duplicates
    ]
    for name, parents in edges.items():
        for parent in parents:
            if parent not in edges:
                known = ", ".join(edges) or "(none)"
                problems.append(
                    f"step {name!r} has an unknown parent {parent!r}; add a step of that "
                    f"name or fix the parent's name (the steps are: {known})"
                )
    cycle = find_cycle(edges)
    if cycle:
        problems.append(
            "the steps form a cycle: " + " -> ".join(cycle) + "; remove one of these parents"
        )
    return problems

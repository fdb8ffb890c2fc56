"""Words for a pipeline's state: progress lines, step tables, short parameter labels.

Pure functions from a pipeline run's document (:func:`clearnb.store.pipelines.run_document`,
its keys declared in :data:`~clearnb.store.pipelines.RUN_KEYS` and
:data:`~clearnb.store.pipelines.STEP_KEYS`) to text, shared by the CLI, the plot and the
widget so that they describe a run the same way. Colour is left to the caller through a
``style(text, status)`` function.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clearnb.status import STEP_FINISHED as FINISHED
from clearnb.status import STEP_STATUSES, SUCCEEDED
from clearnb.text import printable

Style = Callable[[str, str], str]
"""``style(text, status)`` returns ``text`` decorated for ``status`` (colour, bold, ...)."""

_REFERENCE = re.compile(r"\$\{([^}]*)\}")


TERMINAL_COLOURS: dict[str, str] = {
    "queued": "blue",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "aborted": "yellow",
    "cached": "magenta",
    "skipped": "bright_black",
}
"""A terminal colour (click's names) for step, pipeline and task statuses; none for the rest."""


_ACTIVE = frozenset({"running", "queued", "failed", "aborted"})


def plain(text: str, status: str) -> str:
    """The default :data:`Style`: ``text`` unchanged."""
    return text


# -- reading a state ---------------------------------------------------------------------------


def step_names(state: Mapping[str, Any]) -> list[str]:
    """The steps of a pipeline state, in the order they were added."""
    nodes: Mapping[str, Any] = state.get("nodes") or {}
    ordered = [name for name in state.get("order") or [] if name in nodes]
    return ordered + [name for name in nodes if name not in ordered]


def step_counts(state: Mapping[str, Any]) -> dict[str, int]:
    """How many steps have each status (statuses no step has are left out)."""
    counts: dict[str, int] = {}
    for node in (state.get("nodes") or {}).values():
        status = str(node.get("status") or "pending")
        counts[status] = counts.get(status, 0) + 1
    known = [s for s in STEP_STATUSES if s in counts]
    return {s: counts[s] for s in [*known, *sorted(set(counts) - set(known))]}


def done_text(state: Mapping[str, Any]) -> str:
    """``"3/5"`` steps succeeded (completed or cached), with failures named: ``"3/5, 1 failed"``."""
    counts = step_counts(state)
    total = sum(counts.values())
    done = sum(counts.get(s, 0) for s in SUCCEEDED)
    text = f"{done}/{total}"
    bad = [f"{counts[s]} {s}" for s in ("failed", "aborted") if counts.get(s)]
    return ", ".join([text, *bad])


def elapsed(record: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds between ``started`` and ``ended`` (or ``now`` while it runs), or None."""
    started = record.get("started")
    if not started:
        return None
    ended = record.get("ended") or (now if now is not None else time.time())
    return max(0.0, float(ended) - float(started))


def cell_text(node: Mapping[str, Any]) -> str:
    """``"cell 3/7"`` for a running step that reports progress (1-based); for a step
    waiting on a queue no agent serves, says so; else ``""``."""
    progress = node.get("progress") or {}
    if node.get("status") == "queued" and progress.get("waiting"):
        return f"no agent serves queue {printable(repr(progress.get('queue')))}"
    if node.get("status") != "running":
        return ""
    cells, cell = progress.get("cells"), progress.get("cell")
    if not isinstance(cells, int) or not isinstance(cell, int) or cells <= 0:
        return ""
    return f"cell {min(cell + 1, cells)}/{cells}"


def error_reason(node: Mapping[str, Any]) -> str:
    """The reason a step failed or was aborted (one line), or ``""``."""
    error = node.get("error")
    if not isinstance(error, Mapping):
        return ""
    return printable(" ".join(str(error.get("reason") or "").split()))


def format_seconds(seconds: float | None) -> str:
    """``0.4s``, ``12.3s``, ``2m05s``, ``1h02m``; ``-`` for no value."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


# -- parameters --------------------------------------------------------------------------------


def short_name(key: str) -> str:
    """A parameter key without the default section: ``General/x`` -> ``x``."""
    return key[len("General/") :] if key.startswith("General/") else key


def short_reference(inner: str) -> str:
    """A ``${...}`` reference's inside, shortened for a label.

    ``split.artifacts.X_train.url`` -> ``split.X_train``;
    ``split.parameters.General/test_size`` -> ``split.test_size``; others are kept.
    """
    parts = inner.strip().split(".")
    if len(parts) >= 3 and parts[0] != "pipeline":
        step, kind = parts[0], parts[1]
        if kind == "artifacts":
            rest = parts[2:]
            if len(rest) == 2 and rest[1] == "url":
                rest = rest[:1]
            return ".".join([step, *rest])
        if kind == "parameters":
            return f"{step}.{short_name('.'.join(parts[2:]))}"
    return inner.strip()


def short_value(value: Any, width: int = 24) -> str:
    """A parameter value as a short label: references shortened, long text cut with ``…``."""
    if isinstance(value, str) and "${" in value:
        text = _REFERENCE.sub(lambda m: "${" + short_reference(m.group(1)) + "}", value)
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def parameter_lines(parameters: Mapping[str, Any], limit: int = 3, width: int = 30) -> list[str]:
    """``name=value`` lines for a label: at most ``limit``, then a ``+N more`` line."""
    items = list(parameters.items())
    shown = items[:limit]
    lines = []
    for key, value in shown:
        name = short_name(str(key))
        line = f"{name}={short_value(value, max(6, width - len(name) - 1))}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    if len(shown) < len(items):
        lines.append(f"+{len(items) - len(shown)} more")
    return lines


# -- lines -------------------------------------------------------------------------------------


def pipeline_headline(
    state: Mapping[str, Any], now: float | None = None, *, style: Style = plain
) -> str:
    """``pipeline NAME (project, version 1.0): failed, 2 of 5 steps done (1 failed), 12.3s``."""
    facts = [state.get("project"), state.get("version") and f"version {state['version']}"]
    where = printable(", ".join(str(f) for f in facts if f))
    name = printable(state.get("name") or "pipeline")
    status = str(state.get("status") or "pending")
    took = elapsed(state, now)
    text = f"pipeline {name}" + (f" ({where})" if where else "")
    counts = step_counts(state)
    done = sum(counts.get(s, 0) for s in SUCCEEDED)
    text += f": {style(status, status)}, {done} of {sum(counts.values())} steps done"
    bad = [f"{counts[s]} {s}" for s in ("failed", "aborted") if counts.get(s)]
    text += f" ({', '.join(bad)})" if bad else ""
    return text + (f", {format_seconds(took)}" if took is not None else "")


def progress_lines(
    state: Mapping[str, Any],
    now: float | None = None,
    *,
    style: Style = plain,
    width: int | None = None,
    height: int | None = None,
) -> list[str]:
    """The live view: a headline, then one line per step (name, status, cell i/n, elapsed).

    ``width`` cuts every line to that many characters (before styling), so a terminal
    does not wrap them. ``height`` caps the number of lines: running, queued, failed and
    aborted steps are kept first, and a last line counts the steps left out.
    """
    now = time.time() if now is None else now
    names = step_names(state)
    nodes: Mapping[str, Any] = state.get("nodes") or {}
    shown = names
    if height is not None and len(names) + 1 > height:
        room = max(0, height - 2)
        active = [n for n in names if nodes[n].get("status") in _ACTIVE]
        rest = [n for n in names if n not in active]
        keep = set((active + rest)[:room])
        shown = [n for n in names if n in keep]
    name_width = max([len(printable(n)) for n in shown] + [4])
    lines = [_cut(pipeline_headline(state, now), width)]
    for name in shown:
        node = nodes[name]
        status = str(node.get("status") or "pending")
        took = elapsed(node, now)
        detail = cell_text(node) or (error_reason(node) if status in ("failed", "aborted") else "")
        if status == "running" and node.get("retries"):
            detail = f"{detail} (retry {node['retries']})".strip()
        head = f"  {_mark(status)} {printable(name):<{name_width}}  "
        clock = f"{format_seconds(took) if took is not None else '':>7}"
        line = _cut(f"{head}{status:<9}  {clock}  {detail}".rstrip(), width)
        start, end = len(head), len(head) + len(status)
        if len(line) >= end:
            line = line[:start] + style(line[start:end], status) + line[end:]
        lines.append(line)
    if len(shown) < len(names):
        left = {"nodes": {n: nodes[n] for n in names if n not in shown}}
        counts = ", ".join(f"{v} {k}" for k, v in step_counts(left).items())
        lines.append(_cut(f"  … {len(names) - len(shown)} more steps ({counts})", width))
    return lines


def status_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> list[tuple[str, str | None, str]]:
    """Steps whose status differs between two states: ``(name, old or None, new)``."""
    old_nodes: Mapping[str, Any] = (before or {}).get("nodes") or {}
    changes: list[tuple[str, str | None, str]] = []
    for name in step_names(after):
        new = str(after["nodes"][name].get("status") or "pending")
        old_node = old_nodes.get(name)
        old = None if old_node is None else str(old_node.get("status") or "pending")
        if old != new:
            changes.append((name, old, new))
    return changes


def change_line(
    state: Mapping[str, Any], name: str, now: float | None = None, *, style: Style = plain
) -> str:
    """One log line for a step's new status: ``step train: completed (12.3s)``."""
    node = state["nodes"][name]
    status = str(node.get("status") or "pending")
    facts = []
    if status in FINISHED and status != "skipped":
        took = elapsed(node, now)
        if took is not None:
            facts.append(format_seconds(took))
    if status == "running" and node.get("retries"):
        facts.append(f"retry {node['retries']}")
    if status in ("failed", "aborted") and error_reason(node):
        facts.append(error_reason(node))
    if node.get("executed") and status in ("running", "cached"):
        facts.append(f"task {node['executed']}")
    tail = f" ({'; '.join(facts)})" if facts else ""
    return f"step {printable(name)}: {style(status, status)}{tail}"


def summary_lines(
    state: Mapping[str, Any], now: float | None = None, *, style: Style = plain
) -> list[str]:
    """The step table: step, status, duration, retries, task id, error reason."""
    now = time.time() if now is None else now
    nodes: Mapping[str, Any] = state.get("nodes") or {}
    names = step_names(state)
    rows = []
    for name in names:
        node = nodes[name]
        status = str(node.get("status") or "pending")
        took = elapsed(node, now)
        rows.append(
            (
                printable(name),
                status,
                format_seconds(took) if took is not None else "-",
                str(node.get("retries") or 0),
                str(node.get("executed") or "-"),
                error_reason(node),
            )
        )
    header = ("STEP", "STATUS", "DURATION", "RETRIES", "TASK", "ERROR")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(5)]

    def line(row: Sequence[str], status: str | None) -> str:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].rjust(widths[3]),
            row[4].ljust(widths[4]),
        ]
        if status is not None:
            cells[1] = style(cells[1], status)
        return "  ".join([*cells, row[5]]).rstrip()

    return [line(header, None)] + [line(row, row[1]) for row in rows]


def resolved_lines(state: Mapping[str, Any]) -> list[str]:
    """Each step's parameters as the step received them (as written, where not resolved)."""
    nodes: Mapping[str, Any] = state.get("nodes") or {}
    lines: list[str] = []
    for name in step_names(state):
        node = nodes[name]
        values = dict(node.get("parameters") or {})
        values.update(node.get("resolved") or {})
        if not values:
            continue
        lines.append(f"{printable(name)}:")
        written = node.get("parameters") or {}
        for key, value in values.items():
            line = f"  {printable(key)} = {printable(repr(value))}"
            source = written.get(key)
            if isinstance(source, str) and "${" in source and source != value:
                line += f"  <- {printable(source)}"
            lines.append(line)
    return lines


def _mark(status: str) -> str:
    return {
        "completed": "✓",
        "cached": "✓",
        "failed": "✗",
        "aborted": "✗",
        "running": "▸",
        "queued": "·",
        "skipped": "-",
    }.get(status, " ")


def _cut(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…" if width > 0 else ""


def warning_lines(
    state: Mapping[str, Any] | None, before: Mapping[str, Any] | None = None
) -> list[str]:
    """``warning: step <name>: ...`` for each warning of a step (only those not already in
    ``before``, an earlier state of the run)."""
    nodes: Mapping[str, Any] = (state or {}).get("nodes") or {}
    earlier: Mapping[str, Any] = (before or {}).get("nodes") or {}
    lines = []
    for name in step_names(state or {}):
        seen = set((earlier.get(name) or {}).get("warnings") or [])
        for message in nodes[name].get("warnings") or []:
            if message not in seen:
                lines.append(f"warning: {printable(message)}")
    return lines

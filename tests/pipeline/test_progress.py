"""Words for a pipeline's state: progress lines, change lines, the step table, labels."""

from __future__ import annotations

from typing import Any

import pytest

from clearnb.pipeline.node import Node
from clearnb.pipeline.progress import (
    cell_text,
    change_line,
    done_text,
    format_seconds,
    parameter_lines,
    pipeline_headline,
    progress_lines,
    resolved_lines,
    short_value,
    status_changes,
    step_counts,
    step_names,
    summary_lines,
)

NOW = 1_700_000_100.0


def state(**nodes: dict[str, Any]) -> dict[str, Any]:
    """A pipeline state with the given step states (filled with Node.state() defaults)."""
    filled = {}
    for name, fields in nodes.items():
        base = Node(name).state()
        base.update(fields)
        filled[name] = base
    return {
        "name": "seed",
        "project": "examples",
        "version": "1.0",
        "status": "running",
        "started": NOW - 65,
        "ended": None,
        "order": list(nodes),
        "nodes": filled,
    }


@pytest.fixture
def running() -> dict[str, Any]:
    return state(
        data={"status": "completed", "started": NOW - 60, "ended": NOW - 48, "executed": "a" * 32},
        cached={"status": "cached", "executed": "b" * 32, "parents": ["data"]},
        train={
            "status": "running",
            "started": NOW - 20,
            "progress": {"cell": 2, "cells": 7},
            "parents": ["data"],
            "executed": "c" * 32,
            "parameters": {"General/data": "${data.artifacts.table.url}", "General/C": 1.0},
            "resolved": {"General/data": "/store/table.parquet", "General/C": 1.0},
        },
        report={"status": "pending", "parents": ["train", "cached"]},
    )


def test_names_counts_and_done(running: dict[str, Any]) -> None:
    assert step_names(running) == ["data", "cached", "train", "report"]
    assert step_counts(running) == {"pending": 1, "running": 1, "completed": 1, "cached": 1}
    assert done_text(running) == "2/4"
    running["nodes"]["train"]["status"] = "failed"
    assert done_text(running) == "2/4, 1 failed"


def test_steps_missing_from_order_come_last() -> None:
    current = state(a={}, b={})
    current["order"] = ["b", "gone"]
    assert step_names(current) == ["b", "a"]


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (None, 0.04, 12.34, 125, 3725)] == [
        "-",
        "0.0s",
        "12.3s",
        "2m05s",
        "1h02m",
    ]


def test_cell_text_is_one_based_and_only_for_running_steps(running: dict[str, Any]) -> None:
    assert cell_text(running["nodes"]["train"]) == "cell 3/7"
    assert cell_text(running["nodes"]["data"]) == ""
    assert cell_text({"status": "running", "progress": {"resumed": True}}) == ""


def test_headline(running: dict[str, Any]) -> None:
    assert pipeline_headline(running, NOW) == (
        "pipeline seed (examples, version 1.0): running, 2 of 4 steps done, 1m05s"
    )
    running["nodes"]["train"].update(status="failed")
    running["status"] = "failed"
    marked = pipeline_headline(running, NOW, style=lambda text, status: f"<{text}>")
    assert ": <failed>, 2 of 4 steps done (1 failed)" in marked


def test_progress_lines_one_per_step(running: dict[str, Any]) -> None:
    lines = progress_lines(running, NOW)
    assert lines[0].startswith("pipeline seed")
    assert len(lines) == 5
    train = lines[3]
    assert train.split()[:3] == ["▸", "train", "running"]
    assert train.endswith("20.0s  cell 3/7")
    assert lines[1].split()[:4] == ["✓", "data", "completed", "12.0s"]
    assert lines[4].split() == ["report", "pending"]


def test_progress_lines_fit_a_width_and_style_only_the_status(running: dict[str, Any]) -> None:
    lines = progress_lines(running, NOW, width=30)
    assert all(len(line) <= 30 for line in lines)
    styled = progress_lines(running, NOW, style=lambda text, status: f"[{status}]{text}")
    assert "[running]running  " in styled[3]
    assert "[completed]completed" in styled[1]


def test_failed_steps_show_their_reason(running: dict[str, Any]) -> None:
    running["nodes"]["train"].update(
        status="failed", ended=NOW - 5, error={"reason": "cell In [3]\nraised ValueError"}
    )
    line = progress_lines(running, NOW)[3]
    assert line.endswith("15.0s  cell In [3] raised ValueError")


def test_status_changes_and_change_lines(running: dict[str, Any]) -> None:
    assert status_changes(None, running) == [
        ("data", None, "completed"),
        ("cached", None, "cached"),
        ("train", None, "running"),
        ("report", None, "pending"),
    ]
    after = state(**{n: dict(v) for n, v in running["nodes"].items()})
    after["nodes"]["train"].update(status="failed", ended=NOW, error={"reason": "boom"})
    after["nodes"]["report"]["status"] = "skipped"
    assert status_changes(running, after) == [
        ("train", "running", "failed"),
        ("report", "pending", "skipped"),
    ]
    assert change_line(after, "train", NOW) == "step train: failed (20.0s; boom)"
    assert change_line(after, "report", NOW) == "step report: skipped"
    assert change_line(running, "train", NOW) == f"step train: running (task {'c' * 32})"
    running["nodes"]["train"]["retries"] = 1
    assert "retry 1" in change_line(running, "train", NOW)


def test_summary_table(running: dict[str, Any]) -> None:
    running["nodes"]["report"].update(status="failed", retries=2, error={"reason": "no data"})
    lines = summary_lines(running, NOW)
    assert lines[0].split() == ["STEP", "STATUS", "DURATION", "RETRIES", "TASK", "ERROR"]
    rows = [line.split() for line in lines[1:]]
    assert rows[0] == ["data", "completed", "12.0s", "0", "a" * 32]
    assert rows[1] == ["cached", "cached", "-", "0", "b" * 32]
    assert rows[2] == ["train", "running", "20.0s", "0", "c" * 32]
    assert rows[3] == ["report", "failed", "-", "2", "-", "no", "data"]
    columns = {lines[0].index("TASK"), lines[1].index("a" * 32), lines[2].index("b" * 32)}
    assert len(columns) == 1, "task ids line up under their header"


def test_resolved_lines_show_where_a_value_came_from(running: dict[str, Any]) -> None:
    assert resolved_lines(running) == [
        "train:",
        "  General/data = '/store/table.parquet'  <- ${data.artifacts.table.url}",
        "  General/C = 1.0",
    ]


def test_short_values_and_parameter_lines() -> None:
    assert short_value("${split.artifacts.X_train.url}") == "${split.X_train}"
    assert short_value("${split.artifacts.X_train.hash}") == "${split.X_train.hash}"
    assert short_value("${split.parameters.General/test_size}") == "${split.test_size}"
    assert short_value("${split.parameters.Extra/depth}") == "${split.Extra/depth}"
    assert short_value("${pipeline.url}/data") == "${pipeline.url}/data"
    assert short_value("${split.id}") == "${split.id}"
    assert short_value("text") == "'text'" and short_value(0.25) == "0.25"
    assert short_value("x" * 40, width=10) == "'xxxxxxxx…"
    lines = parameter_lines({f"General/p{i}": i for i in range(5)}, limit=3)
    assert lines == ["p0=0", "p1=1", "p2=2", "+2 more"]
    assert parameter_lines({"General/p": 1, "Sec/q": [1, 2]}) == ["p=1", "Sec/q=[1, 2]"]
    assert all(len(line) <= 12 for line in parameter_lines({"General/name": "y" * 50}, width=12))


def test_progress_lines_fit_a_height_keeping_the_active_steps() -> None:
    current = state(**{f"s{i}": {"status": "completed"} for i in range(10)})
    current["nodes"]["s7"]["status"] = "running"
    current["nodes"]["s8"]["status"] = "failed"
    current["nodes"]["s9"]["status"] = "pending"
    lines = progress_lines(current, NOW, height=5)
    assert len(lines) == 5
    assert [line.split()[1] for line in lines[1:4]] == ["s0", "s7", "s8"]
    assert lines[4] == "  … 7 more steps (1 pending, 6 completed)"
    assert len(progress_lines(current, NOW, height=11)) == 11, "all fit: nothing left out"


def test_a_long_step_name_is_cut_to_the_width() -> None:
    current = state(**{"x" * 60: {"status": "running"}})
    styled = progress_lines(current, NOW, width=40, style=lambda text, status: f"<{text}>")
    assert len(styled[1]) == 40 and styled[1].endswith("…")
    assert "<" not in styled[1], "a status cut away is not styled"


def test_a_step_waiting_on_an_unserved_queue_says_so() -> None:
    waiting = {"status": "queued", "progress": {"waiting": "no agent…", "queue": "gpu"}}
    assert cell_text(waiting) == "no agent serves queue 'gpu'"
    assert cell_text({"status": "queued", "progress": {}}) == ""

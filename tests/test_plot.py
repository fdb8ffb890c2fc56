"""The DAG picture: one box per step, parameters and progress in the labels, a legend."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from clearnb.plot import STATUS_COLOURS, figure_png, plot_pipeline
from clearnb.status import STEP_STATUSES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def node(
    name: str,
    parents: Sequence[str] = (),
    status: str = "pending",
    parameters: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A step's state as the controller stores it."""
    state: dict[str, Any] = {
        "name": name,
        "parents": list(parents),
        "kind": "notebook",
        "source": f"{name}.ipynb",
        "parameters": dict(parameters or {}),
        "resolved": {},
        "status": status,
        "executed": None,
        "started": None,
        "ended": None,
        "retries": 0,
        "error": None,
        "progress": {},
        "queue": None,
        "cache": False,
    }
    state.update(fields)
    return state


def by_name(*steps: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in steps}


def boxes(fig: Figure) -> dict[str, FancyBboxPatch]:
    """The outline of every step's box, by step name."""
    found = {}
    for patch in fig.axes[0].patches:
        gid = patch.get_gid() or ""
        if gid.startswith("step:"):
            assert isinstance(patch, FancyBboxPatch)
            assert gid[5:] not in found, f"two boxes for {gid}"
            found[gid[5:]] = patch
    return found


def arrows(fig: Figure) -> list[str]:
    return sorted(
        str(p.get_gid())[5:] for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)
    )


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def legend_labels(fig: Figure) -> list[str]:
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def extent(box: FancyBboxPatch) -> tuple[float, float, float, float]:
    x, y = box.get_x(), box.get_y()
    return x, y, x + box.get_width(), y + box.get_height()


def assert_no_overlap(fig: Figure) -> None:
    """No two boxes overlap, and every box lies inside the figure."""
    width, height = fig.get_size_inches()
    found = list(boxes(fig).items())
    for name, box in found:
        x0, y0, x1, y1 = extent(box)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, name
    for i, (a, box_a) in enumerate(found):
        for b, box_b in found[i + 1 :]:
            ax0, ay0, ax1, ay1 = extent(box_a)
            bx0, by0, bx1, by1 = extent(box_b)
            apart = ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
            assert apart, f"boxes {a} and {b} overlap"


@pytest.fixture
def chain() -> dict[str, dict[str, Any]]:
    now = time.time()
    return by_name(
        node("stage_data", status="completed", started=now - 30, ended=now - 25),
        node(
            "stage_process",
            ["stage_data"],
            status="running",
            parameters={
                "General/dataset_url": "${stage_data.artifacts.dataset.url}",
                "General/test_size": 0.25,
            },
            progress={"cell": 2, "cells": 7},
            started=now - 10,
        ),
        node(
            "stage_train",
            ["stage_process"],
            parameters={
                "General/X_train": "${stage_process.artifacts.X_train.url}",
                "General/C": 1.0,
                "Model/kernel": "rbf",
                "General/seed": 1,
                "General/max_iter": 100,
            },
        ),
    )


def test_a_chain_has_one_box_per_step_and_an_arrow_per_edge(
    chain: dict[str, dict[str, Any]],
) -> None:
    fig = plot_pipeline(chain, list(chain), title="seed pipeline")
    assert isinstance(fig, Figure)
    assert set(boxes(fig)) == set(chain)
    assert arrows(fig) == ["stage_data->stage_process", "stage_process->stage_train"]
    found = boxes(fig)
    xs = [extent(found[n])[0] for n in ("stage_data", "stage_process", "stage_train")]
    assert xs == sorted(xs) and len(set(xs)) == 3, "layers go left to right"
    assert "seed pipeline" in texts(fig)
    assert_no_overlap(fig)


def test_labels_show_overrides_shortened_references_and_progress(
    chain: dict[str, dict[str, Any]],
) -> None:
    before = time.time()
    labels = texts(plot_pipeline(chain, list(chain)))
    after = time.time()
    assert "test_size=0.25" in labels
    assert "dataset_url=${stage_data.dataset}" in labels
    assert "X_train=${stage_process.X_train}" in labels
    assert "Model/kernel='rbf'" in labels, "a section other than General is named"
    assert "+2 more" in labels, "at most three parameter lines"
    assert "max_iter=100" not in labels
    footer = next(t for t in labels if t.startswith("running"))
    assert "cell 3/7" in footer
    shown = re.search(r"(\d+\.\d)s", footer)
    assert shown, footer
    started = chain["stage_process"]["started"]  # the running step's time so far, as drawn
    assert before - started - 0.05 <= float(shown.group(1)) <= after - started + 0.05, footer
    assert any(t.startswith("completed") and "5.0s" in t for t in labels)
    assert "pending" in labels


def test_the_legend_lists_the_statuses_used_in_order(chain: dict[str, dict[str, Any]]) -> None:
    assert legend_labels(plot_pipeline(chain)) == ["pending", "running", "completed"]


def test_every_status_has_its_own_style_and_legend_entry() -> None:
    steps = by_name(*[node(status, status=status) for status in STEP_STATUSES])
    fig = plot_pipeline(steps)
    assert legend_labels(fig) == list(STEP_STATUSES)
    found = boxes(fig)
    colours = {status: found[status].get_edgecolor() for status in STEP_STATUSES}
    assert len(set(colours.values())) == len(STEP_STATUSES)
    assert found["skipped"].get_linestyle() in ("--", "dashed")
    assert any(p.get_hatch() for p in fig.axes[0].patches), "skipped boxes are hatched"
    assert set(STATUS_COLOURS) == set(STEP_STATUSES)
    for status in STEP_STATUSES:
        assert status in " ".join(texts(fig)), "each box names its status in words"


def test_a_fan_out_with_a_join_stacks_the_wide_layer() -> None:
    fan = [node("split", status="completed")]
    fan += [node(f"fold_{i}", ["split"], parameters={"General/fold": i}) for i in range(8)]
    fan.append(node("join", [f"fold_{i}" for i in range(8)]))
    fig = plot_pipeline(by_name(*fan))
    found = boxes(fig)
    assert len(found) == 10 and len(arrows(fig)) == 16
    lefts = {round(extent(found[f"fold_{i}"])[0], 6) for i in range(8)}
    assert len(lefts) == 1, "the folds share one column"
    tops = [extent(found[f"fold_{i}"])[1] for i in range(8)]
    assert tops == sorted(tops), "in the order they were added"
    width, height = fig.get_size_inches()
    assert height > width, "a tall fan-out makes a tall picture"
    split_y = sum(extent(found["split"])[1::2]) / 2
    join_y = sum(extent(found["join"])[1::2]) / 2
    middle = (tops[0] + extent(found["fold_7"])[3]) / 2
    assert abs(split_y - middle) < 0.05 and abs(join_y - middle) < 0.05, "centred on the fan"
    assert {f"fold={i}" for i in range(8)} <= set(texts(fig))
    assert_no_overlap(fig)


def test_long_edges_do_not_cross_boxes() -> None:
    steps = by_name(
        node("a"), node("b", ["a"]), node("c", ["b"]), node("d", ["c"]), node("e", ["a", "d"])
    )
    fig = plot_pipeline(steps)
    assert "a->e" in arrows(fig)
    edge = next(p for p in fig.axes[0].patches if p.get_gid() == "edge:a->e")
    assert isinstance(edge, FancyArrowPatch)
    path = edge.get_path()
    for name in ("b", "c", "d"):
        x0, y0, x1, y1 = extent(boxes(fig)[name])
        inside = [(x, y) for x, y in path.vertices if x0 < x < x1 and y0 < y < y1]
        assert not inside, f"the edge a->e runs through {name}"


def test_a_30_step_chain_wraps_into_rows() -> None:
    steps = by_name(
        node("s0", status="completed"),
        *[node(f"s{i}", [f"s{i - 1}"], parameters={"General/i": i}) for i in range(1, 30)],
    )
    fig = plot_pipeline(steps, title="long")
    width, height = fig.get_size_inches()
    assert len(boxes(fig)) == 30 and len(arrows(fig)) == 29
    assert width <= 20 and height <= 12, "wrapped instead of 80 inches wide"
    assert_no_overlap(fig)
    assert figure_png(fig).startswith(PNG_SIGNATURE)


def test_a_random_30_step_dag_renders_without_overlaps() -> None:
    rng = random.Random(7)
    steps: list[dict[str, Any]] = []
    for i in range(30):
        names = [s["name"] for s in steps]
        parents = rng.sample(names, k=min(len(names), rng.randint(1, 3))) if names else []
        status = rng.choice(STEP_STATUSES)
        steps.append(node(f"step_{i}", parents, status, {"General/a": i}))
    fig = plot_pipeline(by_name(*steps))
    assert len(boxes(fig)) == 30
    assert len(arrows(fig)) == sum(len(s["parents"]) for s in steps)
    assert_no_overlap(fig)
    assert figure_png(fig).startswith(PNG_SIGNATURE)


def test_png_bytes_and_small_cases() -> None:
    one = plot_pipeline(by_name(node("only", status="completed")))
    assert figure_png(one).startswith(PNG_SIGNATURE)
    assert "Pipeline" in texts(one), "a default title"
    empty = plot_pipeline({})
    assert "no steps" in texts(empty) and not empty.legends
    assert figure_png(empty).startswith(PNG_SIGNATURE)
    unknown_parent = plot_pipeline(by_name(node("a", ["missing"])))
    assert set(boxes(unknown_parent)) == {"a"} and arrows(unknown_parent) == []


def test_text_is_not_read_as_mathtext_and_long_names_are_cut() -> None:
    name = "a_step_with_a_name_far_too_long_to_fit_in_any_box_at_all"
    steps = by_name(node(name, parameters={"General/price": "$5 and $6", "General/x": "${a"}))
    fig = plot_pipeline(steps, title="costs in $ and $")
    labels = texts(fig)
    assert "price='$5 and $6'" in labels
    assert any(t.endswith("…") and name.startswith(t[:-1]) for t in labels)
    assert figure_png(fig).startswith(PNG_SIGNATURE)


def test_order_breaks_ties_within_a_layer() -> None:
    steps = by_name(node("root"), node("x", ["root"]), node("y", ["root"]))
    first = boxes(plot_pipeline(steps, ["root", "x", "y"]))
    second = boxes(plot_pipeline(steps, ["root", "y", "x"]))
    assert extent(first["x"])[1] < extent(first["y"])[1]
    assert extent(second["y"])[1] < extent(second["x"])[1]


def test_figures_render_on_several_threads_at_once(chain: dict[str, dict[str, Any]]) -> None:
    results: list[bytes] = []
    errors: list[BaseException] = []

    def render() -> None:
        try:
            for _ in range(3):
                results.append(figure_png(plot_pipeline(chain, title="threads")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=render) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(results) == 12 and all(r.startswith(PNG_SIGNATURE) for r in results)


def test_a_pipeline_of_a_few_layers_stays_on_one_row() -> None:
    wide = {"General/target": "s3://bucket/models/" + "x" * 40}
    steps = by_name(
        node("s0", parameters=wide),
        *[node(f"s{i}", [f"s{i - 1}"], parameters=wide) for i in range(1, 7)],
    )
    found = boxes(plot_pipeline(steps))
    lefts = [extent(found[f"s{i}"])[0] for i in range(7)]
    tops = {round(extent(found[f"s{i}"])[1], 6) for i in range(7)}
    assert lefts == sorted(lefts) and len(tops) == 1

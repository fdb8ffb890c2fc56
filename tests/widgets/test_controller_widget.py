"""The controller widget without a browser: synced state, buttons, details."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController
from clearnb.events import STEP_STATUS, PipelineEvent
from clearnb.widgets.dag import layout
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.timeout(240)
STEPS = NOTEBOOKS / "pipeline"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path


def pipeline(fail: bool = False) -> PipelineController:
    pipe = PipelineController(name="widget demo", project="tests")
    pipe.add_step("data", notebook=str(STEPS / "data_step.ipynb"))
    pipe.add_step(
        "process",
        notebook=str(STEPS / "process_step.ipynb"),
        parameter_override={
            "General/dataset_url": "${data.artifacts.dataset.url}",
            "General/test_size": 0.25,
        },
    )
    pipe.add_step(
        "check",
        notebook=str(STEPS / "maybe_fail.ipynb"),
        parents=["process"],
        parameter_override={"General/fail": fail},
    )
    return pipe


def eventually(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def statuses(widget: Any) -> dict[str, str]:
    return {node["name"]: node["status"] for node in widget.canvas.graph["nodes"]}


def test_layout_places_layers_left_to_right() -> None:
    nodes = {
        "a": {"parents": [], "status": "completed", "parameters": {}},
        "b": {"parents": ["a"], "status": "running", "parameters": {"General/x": 1}},
        "c": {"parents": ["a"], "status": "pending", "parameters": {}},
    }
    graph = layout(nodes, ["a", "b", "c"])
    by_name = {n["name"]: n for n in graph["nodes"]}
    assert by_name["a"]["x"] < by_name["b"]["x"] == by_name["c"]["x"]
    assert by_name["b"]["y"] != by_name["c"]["y"]
    assert by_name["b"]["overrides"] == ["General/x = 1"]
    assert sorted(graph["edges"]) == [["a", "b"], ["a", "c"]]


def test_the_widget_follows_a_scripted_sequence_of_events(home: Path) -> None:
    pipe = pipeline()
    widget = pipe.widget()
    assert statuses(widget) == {"data": "pending", "process": "pending", "check": "pending"}
    node = pipe.get_pipeline_dag()["data"]
    for previous, status in [("pending", "queued"), ("queued", "running"), ("running", "failed")]:
        node.status = status
        for listener in pipe.listeners:
            listener(PipelineEvent(STEP_STATUS, "data", status, previous))
        eventually(lambda status=status: statuses(widget)["data"] == status)
    node.progress = {"cell": 1, "cells": 4}
    widget.refresh()
    assert widget.canvas.graph["nodes"][0]["progress"] == {"cell": 1, "cells": 4}
    widget.close()


def test_buttons_details_and_retry(home: Path) -> None:
    pipe = pipeline(fail=True)
    widget = pipe.widget()
    assert pipe.widget() is widget
    assert not widget.run_button.disabled and widget.stop_button.disabled
    assert widget.retry_button.disabled and widget.step_button.disabled
    widget.run_button.click()
    assert pipe.wait(timeout=1.5)  # minutes: twice 90 s fits in the test's 240 s
    widget.refresh()
    assert statuses(widget) == {"data": "completed", "process": "completed", "check": "failed"}
    assert not widget.retry_button.disabled, "a failed run can be retried"
    assert widget.step_button.disabled, "no step selected yet"
    widget.canvas.selected = "process"
    assert not widget.step_button.disabled and not widget.below_button.disabled
    details = widget.details.value
    assert "General/test_size" in details and "0.25" in details and "★" in details
    assert "${data.artifacts.dataset.url}" in details
    assert "seen" in details, "artifacts are listed"
    assert "open the executed notebook" in details
    pipe.get_pipeline_dag()["check"].parameters["General/fail"] = False
    widget.retry_button.click()
    assert pipe.wait(timeout=1.5)  # minutes
    widget.refresh()
    assert statuses(widget) == {"data": "completed", "process": "completed", "check": "completed"}
    widget.close()


def test_the_display_has_the_widget_and_a_picture(home: Path) -> None:
    pipe = pipeline()
    bundle = pipe._repr_mimebundle_()
    assert bundle is not None
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"].startswith("iVBOR"), "static viewers get the DAG picture"
    pipe.widget().close()


def test_the_builder_makes_the_same_dag_as_code(home: Path) -> None:
    built = PipelineController(name="built", project="tests")
    widget = built.widget()
    builder = widget.builder
    builder.folder.value = str(STEPS)
    builder.notebook.value = "data_step.ipynb"
    builder.name.value = "data"
    rows = {row.key: row for row in builder.rows}
    assert isinstance(rows["General/rows"].value.value, int), "inputs typed like the defaults"
    assert type(rows["General/fail"].value.value) is bool
    rows["General/rows"].value.value = 7
    builder.add_step()
    builder.notebook.value = "process_step.ipynb"
    builder.name.value = "process"
    rows = {row.key: row for row in builder.rows}
    rows["General/dataset_url"].reference.value = "${nope.artifacts.dataset.url}"
    assert "✗ no step nope" in rows["General/dataset_url"].check.value
    builder.add_step()
    assert "fix the references" in builder.message.value
    rows["General/dataset_url"].reference.value = "${data.artifacts.dataset.url}"
    assert "✓" in rows["General/dataset_url"].check.value
    builder.parents.value = ("data",)
    builder.add_step()

    code = PipelineController(name="built", project="tests")
    code.add_step(
        "data", notebook=str(STEPS / "data_step.ipynb"), parameter_override={"General/rows": 7}
    )
    code.add_step(
        "process",
        notebook=str(STEPS / "process_step.ipynb"),
        parents=["data"],
        parameter_override={"General/dataset_url": "${data.artifacts.dataset.url}"},
    )
    assert built.to_dict() == code.to_dict()
    assert [n["name"] for n in widget.canvas.graph["nodes"]] == ["data", "process"]

    builder.path.value = str(home / "built.json")
    builder._guard(lambda: built.save(builder.path.value))
    widget.canvas.selected = "process"
    builder.remove_selected()
    assert list(built.get_pipeline_dag()) == ["data"]
    builder.load()
    assert built.to_dict() == code.to_dict(), "loading the saved file restores the steps"
    builder.show_code()
    assert "pipe.add_step(name='process'" in builder.code.value
    widget.close()


def test_history_shows_earlier_runs(home: Path) -> None:
    pipe = pipeline()
    widget = pipe.widget()
    pipe.start(wait=True)
    first = pipe.id
    pipe.get_pipeline_dag()["check"].parameters["General/fail"] = True
    pipe.start(wait=True)
    widget.refresh()
    runs = [value for _, value in widget.history.options if value]
    assert first in runs and pipe.id in runs
    labels = dict((value, label) for label, value in widget.history.options)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  failed  \d", labels[pipe.id]), labels
    assert labels[pipe.id].endswith(pipe.id[:8]) and "completed" in labels[first]
    assert not widget.run_button.disabled
    widget.history.value = first
    assert statuses(widget)["check"] == "completed", "the earlier run's DAG"
    assert "earlier run" in widget.title.value and first[:8] in widget.title.value
    assert widget.run_button.disabled and widget.force_button.disabled, "view only"
    widget.history.value = ""
    assert statuses(widget)["check"] == "failed", "back to the live run"
    assert "earlier run" not in widget.title.value and not widget.run_button.disabled
    widget.close()


def test_a_past_run_opens_by_id(home: Path) -> None:
    pipe = pipeline(fail=True)
    pipe.start(wait=True)
    opened = PipelineController.from_run(pipe.id)
    assert opened.id == pipe.id
    assert {n: node.status for n, node in opened.get_pipeline_dag().items()} == {
        "data": "completed",
        "process": "completed",
        "check": "failed",
    }
    widget = opened.widget()
    assert statuses(widget)["check"] == "failed"
    assert not widget.retry_button.disabled
    opened.get_pipeline_dag()["check"].parameters["General/fail"] = False
    widget.retry_button.click()
    assert opened.wait(timeout=1.5)  # minutes: inside the test's 240 s, after the first run
    widget.refresh()
    assert statuses(widget)["check"] == "completed"
    widget.close()


def test_the_builder_edits_a_step_in_place(home: Path) -> None:
    pipe = pipeline()
    widget = pipe.widget()
    builder = widget.builder
    widget.canvas.selected = "process"
    builder.edit_selected()
    assert builder.notebook.value == "process_step.ipynb" and builder.name.value == "process"
    rows = {row.key: row for row in builder.rows}
    assert rows["General/dataset_url"].reference.value == "${data.artifacts.dataset.url}"
    assert rows["General/test_size"].value.value == 0.25
    rows["General/test_size"].value.value = 0.5
    builder.add_step()
    assert list(pipe.get_pipeline_dag()) == ["data", "process", "check"], "kept in place"
    assert pipe.get_pipeline_dag()["process"].parameters["General/test_size"] == 0.5
    assert pipe.get_pipeline_dag()["check"].parents == ["process"]
    widget.close()


def test_an_untouched_build_form_overrides_nothing(home: Path) -> None:
    """Defaults the inputs cannot hold (None, an expression, None for an int) and the ones
    they can stay the notebook's own unless the user changes the input."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    cell = nbformat.v4.new_code_cell(
        'nothing = None\nproduct = 2 * 5\ncount: int = None\nlabel = "text"\n'
        "items = [1, 2]\nsize = 3\nratio = 0.5\nflag = True"
    )
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, home / "defaults.ipynb")
    built = PipelineController(name="built", project="tests")
    widget = built.widget()
    builder = widget.builder
    builder.folder.value = str(home)
    builder.notebook.value = "defaults.ipynb"
    builder.name.value = "untouched"
    builder.add_step()
    assert built.get_pipeline_dag()["untouched"].parameters == {}, builder.message.value

    builder.name.value = "changed"
    rows = {row.key: row for row in builder.rows}
    rows["General/size"].value.value = 4
    rows["General/nothing"].value.value = "7"
    rows["General/items"].value.value = "[3]"
    builder.add_step()
    expected = {"General/size": 4, "General/nothing": 7, "General/items": [3]}
    assert built.get_pipeline_dag()["changed"].parameters == expected, builder.message.value

    widget.canvas.selected = "changed"
    builder.edit_selected()
    builder.add_step()  # replaces the step with what the form holds: the same overrides
    assert built.get_pipeline_dag()["changed"].parameters == expected, builder.message.value
    widget.close()


def test_remove_with_no_step_selected_says_to_select_one(home: Path) -> None:
    pipe = pipeline()
    widget = pipe.widget()
    widget.canvas.selected = ""
    widget.builder.remove_selected()
    assert "click it in the DAG first" in widget.builder.message.value
    assert set(pipe.get_pipeline_dag()) == {"data", "process", "check"}
    widget.canvas.selected = "check"
    widget.builder.remove_selected()
    assert set(pipe.get_pipeline_dag()) == {"data", "process"}
    widget.close()


def test_a_step_added_in_a_later_cell_reaches_the_shown_widget(home: Path) -> None:
    pipe = pipeline()
    widget = pipe.widget()
    widget.builder.show_code()
    assert "'extra'" not in widget.builder.code.value
    pipe.add_step("extra", notebook=str(STEPS / "maybe_fail.ipynb"), parents=["check"])
    eventually(lambda: "extra" in statuses(widget))
    eventually(lambda: "'extra'" in widget.builder.code.value)
    pipe.remove_step("extra")
    eventually(lambda: "extra" not in statuses(widget))
    widget.close()

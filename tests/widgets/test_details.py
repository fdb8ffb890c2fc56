"""A step's details in the widget: readable sizes, values, figures once, metrics apart, the
traceback of a failure, and an executed notebook Jupyter can open."""

from __future__ import annotations

import base64
import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from PIL import Image

from clearnb import PipelineController, Task
from clearnb.backend import Backend
from clearnb.pipeline.functions import artifact_input
from clearnb.widgets.details import served_copy, shown_value, step_details
from tests.helpers import NOTEBOOKS, notebook

STEPS = NOTEBOOKS / "pipeline"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "home"


def details(task: Task, **node: object) -> str:
    pipe = PipelineController(name="details", project="tests")
    pipe.add_step("train", notebook=str(STEPS / "trivial.ipynb"))
    state = pipe.state()
    state["nodes"]["train"].update({"status": "completed", "executed": task.id, **node})
    return step_details(pipe, "train", state)


def a_figure() -> Figure:
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([1, 2, 3])
    return figure


def test_sizes_and_values_are_shown_whole(home: Path) -> None:
    task = Task.create(project_name="tests", task_name="t", notebook=notebook("params"))
    task.upload_artifact("table", {"rows": list(range(4000))})
    html = details(task, resolved={"General/count": artifact_input("abcdef123456", "data")})
    size = re.search(r"white-space:nowrap;text-align:right'>([^<]+)</td>", html)
    assert size and re.fullmatch(r"\d+\.\d kB", size.group(1)), "one unbreakable size"
    assert "artifact &#x27;data&#x27; of task abcdef12" in html
    assert "__clearnb_artifact__" not in html


def test_a_figure_shows_once_as_a_picture(home: Path) -> None:
    task = Task.create(project_name="tests", task_name="t", notebook=notebook("params"))
    backend = Backend.for_config()
    captured = backend.artifacts.save(task.id, "figure_c2_0", a_figure())
    backend.store.put_artifact(captured)
    task.get_logger().report_matplotlib_figure("loss curve", "train", a_figure(), iteration=1)
    html = details(task)
    assert "cnb-artifacts" not in html, "no table row for a figure"
    assert html.count("<figure class='cnb-figure'") == 1
    assert html.count("class='cnb-report-image'") == 1


def test_metrics_of_different_titles_get_their_own_axes(home: Path) -> None:
    task = Task.create(project_name="tests", task_name="t", notebook=notebook("params"))
    logger = task.get_logger()
    for i in range(3):
        logger.report_scalar("loss", "train", 1.0 / (i + 1), iteration=i)
    logger.flush()
    one = _metrics_picture(details(task))
    for i in range(3):
        logger.report_scalar("accuracy", "test", 0.5 + i / 10, iteration=i)
    logger.flush()
    two = _metrics_picture(details(task))
    assert two.height > 1.7 * one.height and two.width == one.width


def _metrics_picture(html: str) -> Image.Image:
    found = re.search(r"class='cnb-metrics'[^>]*src='data:image/png;base64,([^']+)'", html)
    assert found, html
    return Image.open(io.BytesIO(base64.b64decode(found.group(1))))


def test_a_failed_step_shows_its_traceback(home: Path) -> None:
    task = Task.create(project_name="tests", task_name="t", notebook=notebook("raises"))
    Backend.for_config().store.update_task(
        task.id,
        status="failed",
        error={
            "reason": "code cell 2 raised ValueError: boom",
            "traceback": [
                "Traceback (most recent call last):",
                '  raise ValueError("boom <1>")',
                "ValueError: boom <1>",
            ],
        },
    )
    html = details(task, status="failed", error={"reason": "code cell 2 raised ValueError: boom"})
    assert "code cell 2 raised ValueError: boom" in html
    trace = re.search(r"class='cnb-traceback' open>.*?<pre[^>]*>(.*?)</pre>", html, re.S)
    assert trace and "ValueError: boom &lt;1&gt;" in trace.group(1)
    assert 'raise ValueError("boom' in trace.group(1).replace("&quot;", '"')


def test_an_executed_notebook_in_a_hidden_folder_is_linked_through_a_served_copy(
    home: Path, tmp_path: Path
) -> None:
    hidden = tmp_path / ".clearnb" / "artifacts" / "abcdef1234" / "notebook" / "step.ipynb"
    hidden.parent.mkdir(parents=True)
    hidden.write_text("{}")
    copy = served_copy(hidden, tmp_path)
    assert copy is not None and copy.parent == tmp_path / "clearnb-runs"
    assert not any(part.startswith(".") for part in copy.relative_to(tmp_path).parts)
    assert copy.read_text() == "{}" and not copy.stat().st_mode & stat.S_IWUSR
    os.utime(hidden, (hidden.stat().st_mtime + 10,) * 2)
    hidden.write_text('{"cells": []}')
    os.utime(hidden, (copy.stat().st_mtime + 10,) * 2)
    assert served_copy(hidden, tmp_path) == copy and copy.read_text() == '{"cells": []}'
    visible = tmp_path / "runs" / "step.ipynb"
    visible.parent.mkdir()
    visible.write_text("{}")
    assert served_copy(visible, tmp_path) == visible.resolve(), "served where it is"


def test_shown_value_is_a_repr_otherwise() -> None:
    assert shown_value([1, "a"]) == "[1, 'a']"

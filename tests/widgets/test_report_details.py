"""The reports of a step in the widget's details: plots drawn, images, media, tables, text."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clearnb import PipelineController, Task
from clearnb.widgets.details import step_details
from clearnb.widgets.reports import DRAWN_PLOTS, PictureCache
from tests.helpers import NOTEBOOKS, notebook
from tests.reporting import EXPECTED, report_every_kind

pytestmark = pytest.mark.timeout(240)
STEPS = NOTEBOOKS / "pipeline"
PLOT_KINDS = ("histogram", "scatter2d", "line", "scatter3d", "confusion_matrix", "surface")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    yield tmp_path / "home"


def details_of(task: Task, pictures: PictureCache | None = None) -> str:
    """The details HTML of a one-step pipeline whose step ran as ``task``."""
    pipe = PipelineController(name="reports", project="tests")
    pipe.add_step("train", notebook=str(STEPS / "trivial.ipynb"))
    state = pipe.state()
    state["nodes"]["train"].update(status="completed", executed=task.id)
    return step_details(pipe, "train", state, pictures)


def pictures_in(details: str, css_class: str) -> dict[str, Image.Image]:
    """The base64 PNG pictures of elements of ``css_class``, by their data-kind."""
    found = {}
    pattern = rf"<img class='{css_class}' data-kind='(\w+)'[^>]*src='data:image/png;base64,([^']+)'"
    for kind, data in re.findall(pattern, details):
        found[kind] = Image.open(io.BytesIO(base64.b64decode(data)))
    return found


def test_every_report_kind_is_in_the_details(home: Path, tmp_path: Path) -> None:
    task = Task.create(project_name="tests", task_name="reports", notebook=notebook("params"))
    report_every_kind(task.get_logger(), tmp_path)
    details = details_of(task)

    plots = pictures_in(details, "cnb-report-plot")
    assert set(plots) == {*PLOT_KINDS, "plotly"}
    for picture in plots.values():
        assert 100 < picture.width <= 400 and 100 < picture.height <= 300, "small pictures"

    images = re.findall(
        r"<figure class='cnb-report-image' data-kind='(\w+)'[^>]*><img src='data:image/png;"
        r"base64,([^']+)' alt='([^']+)'",
        details,
    )
    assert {(kind, alt) for kind, _, alt in images} == {
        ("figure", "curve / loss (it 2)"),
        ("image", "samples / red (it 10)"),
    }
    red = next(Image.open(io.BytesIO(base64.b64decode(d))) for k, d, _ in images if k == "image")
    assert red.convert("RGB").getpixel((0, 0)) == (255, 0, 0), "the reported pixels"

    media = re.findall(r"<tr class='cnb-report-media'>(.*?)</tr>", details)
    assert len(media) == 2
    assert "audio / clip (it 11)" in media[0] and "audio/x-wav" in media[0]
    assert ">clip.wav</a>" in media[0]
    assert "text/html" in media[1] and "page_html.html</a>" in media[1]

    assert "<div class='cnb-report-table'><b>scores / final (it 1)</b>" in details
    assert "<td>3</td><td>4</td>" in details
    assert "[INFO] epoch done" in details
    listed = re.findall(r"<tr data-kind='(\w+)'>.*?<td>([^<]*)</td></tr>", details)
    for kind, (_, _, summary) in EXPECTED.items():
        assert any(kind == k and summary in text for k, text in listed), kind


def test_series_under_one_title_and_iteration_share_a_picture(home: Path) -> None:
    task = Task.create(project_name="tests", task_name="shared", notebook=notebook("params"))
    logger = task.get_logger()
    logger.report_scatter2d("curves", "a", [[0, 0], [1, 1]], iteration=1)
    logger.report_scatter2d("curves", "b", [[0, 1], [1, 0]], iteration=1)
    logger.report_scatter2d("curves", "a", [[0, 2], [1, 2]], iteration=2)
    details = details_of(task)
    drawn = re.findall(
        r"<img class='cnb-report-plot' data-kind='scatter2d' title='([^']+)'", details
    )
    assert drawn == ["scatter2d: curves / a (it 1)", "scatter2d: curves / a (it 2)"]


def test_only_the_latest_plots_are_drawn_and_each_once(home: Path) -> None:
    task = Task.create(project_name="tests", task_name="many", notebook=notebook("params"))
    for index in range(DRAWN_PLOTS + 2):
        task.get_logger().report_histogram("hist", f"s{index}", [index, 1], iteration=index)
    pictures = PictureCache()
    details = details_of(task, pictures)
    titles = re.findall(
        r"<img class='cnb-report-plot' data-kind='histogram' title='([^']+)'", details
    )
    assert (
        len(titles) == DRAWN_PLOTS
        and titles[-1] == f"histogram: hist / s{DRAWN_PLOTS + 1} (it {DRAWN_PLOTS + 1})"
    )
    assert "2 earlier plots not drawn" in details
    assert details.count("<tr data-kind='histogram'>") == DRAWN_PLOTS + 2, "all are listed"
    drawn = dict(pictures.pictures)
    assert len(drawn) == DRAWN_PLOTS
    assert details_of(task, pictures) == details
    assert all(pictures.pictures[key] is drawn[key] for key in drawn), "not drawn again"


def test_the_picture_cache_draws_once_and_keeps_a_bounded_number() -> None:
    calls: list[str] = []

    def draw(name: str) -> Any:
        def png() -> bytes:
            calls.append(name)
            return name.encode()

        return png

    cache = PictureCache(size=2)
    assert cache.get("a", draw("a")) == base64.b64encode(b"a").decode()
    cache.get("a", draw("a"))
    cache.get("b", draw("b"))
    cache.get("a", draw("a"))  # a used last: b is the oldest now
    cache.get("c", draw("c"))
    assert list(cache.pictures) == ["a", "c"] and calls == ["a", "b", "c"]
    assert cache.get("none", lambda: None) is None


def test_a_step_run_by_the_widget_shows_its_reports(home: Path) -> None:
    pipe = PipelineController(name="report widget", project="tests")
    pipe.add_step("report", notebook=str(STEPS / "report_step.ipynb"))
    widget = pipe.widget()
    widget.run_button.click()
    assert pipe.wait(timeout=1.5)  # minutes
    widget.refresh()
    widget.canvas.selected = "report"
    details = widget.details.value
    assert set(pictures_in(details, "cnb-report-plot")) == {"histogram", "confusion_matrix"}
    assert "<figure class='cnb-report-image' data-kind='image'" in details
    assert "samples / green (it 1)" in details
    assert "text/html" in details and "page_html.html</a>" in details
    kept = dict(widget.pictures.pictures)
    widget.refresh()
    assert widget.details.value == details and dict(widget.pictures.pictures) == kept
    widget.close()

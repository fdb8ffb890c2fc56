"""``task.get_logger()``: scalars, tables, text and figures, in this process and in a kernel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from clearnb import Logger, Task
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.execution.runner import NotebookRunner
from clearnb.logger import MAX_TABLE_ROWS
from clearnb.store import ReportRecord
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clearnb home for the module, set as CLEARNB_HOME for code reading the environment."""
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        patch.delenv("CLEARNB_TASK_ID", raising=False)
        yield path


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[NotebookRunner]:
    with NotebookRunner(Config.at(home), pool_size=1) as shared:
        yield shared


@pytest.fixture
def task(home: Path) -> Task:
    return Task.create(project_name="tests", task_name="logger", notebook=notebook("params"))


def reports(task: Task, kind: str) -> list[ReportRecord]:
    return Backend.for_config().store.get_reports(task.id, kind=kind)


def test_scalars_come_back_by_title_and_series(task: Task) -> None:
    logger = task.get_logger()
    assert task.get_logger() is logger
    for iteration in range(3):
        logger.report_scalar("loss", "train", 1.0 / (iteration + 1), iteration)
        logger.report_scalar("loss", "val", 2.0 / (iteration + 1), iteration=iteration)
    logger.report_scalar("accuracy", "val", 0.5, 10)
    logger.report_scalar("accuracy", "val", 0.75, 20)
    logger.flush()  # scalars are written in batches; another handle sees them once flushed
    scalars = Task.get_task(task_id=task.id).get_reported_scalars()
    assert scalars == {
        "loss": {
            "train": {"x": [0, 1, 2], "y": [1.0, 0.5, 1.0 / 3]},
            "val": {"x": [0, 1, 2], "y": [2.0, 1.0, 2.0 / 3]},
        },
        "accuracy": {"val": {"x": [10, 20], "y": [0.5, 0.75]}},
    }


def test_numpy_numbers_and_infinity_are_plain_scalars(task: Task) -> None:
    import numpy as np

    logger = task.get_logger()
    logger.report_scalar("loss", "train", np.float32(0.5), np.int64(1))  # type: ignore[arg-type]
    logger.report_scalar("loss", "train", float("inf"), 2)
    series = task.get_reported_scalars()["loss"]["train"]
    assert series == {"x": [1, 2], "y": [0.5, float("inf")]}
    assert all(type(x) is int for x in series["x"])


def test_a_single_value_is_a_summary_scalar(task: Task) -> None:
    task.get_logger().report_single_value("accuracy", 0.93)
    assert task.get_reported_scalars() == {"Summary": {"accuracy": {"x": [0], "y": [0.93]}}}


def test_tables_from_a_dataframe_rows_and_csv(task: Task, tmp_path: Path) -> None:
    logger = task.get_logger()
    frame = pd.DataFrame({"name": ["a", "b"], "score": [0.5, 0.25], "n": [1, 2]})
    logger.report_table("frame", "plain", iteration=1, table_plot=frame)
    indexed = frame.set_index("name")
    logger.report_table("frame", "indexed", table_plot=indexed)
    logger.report_table("rows", "list", table_plot=[["x", "y"], [1, 2.5], [3, None]])
    logger.report_table("csv", "text", csv="a,b\n1,2\n3,4\n")
    csv_file = tmp_path / "table.csv"
    csv_file.write_text("p,q\nfrom,file\n")
    logger.report_table("csv", "file", csv=str(csv_file))
    tables = {(r.title, r.series): r for r in reports(task, "table")}
    assert tables[("frame", "plain")].payload == {
        "columns": ["name", "score", "n"],
        "rows": [["a", 0.5, 1], ["b", 0.25, 2]],
        "total_rows": 2,
        "truncated": False,
    }
    assert tables[("frame", "plain")].iteration == 1
    assert tables[("frame", "indexed")].payload["columns"] == ["name", "score", "n"]
    assert tables[("frame", "indexed")].payload["rows"][1] == ["b", 0.25, 2]
    assert tables[("rows", "list")].payload["columns"] == ["x", "y"]
    assert tables[("rows", "list")].payload["rows"] == [[1, 2.5], [3, None]]
    assert tables[("csv", "text")].payload["columns"] == ["a", "b"]
    assert tables[("csv", "text")].payload["rows"] == [["1", "2"], ["3", "4"]]
    assert tables[("csv", "file")].payload["rows"] == [["from", "file"]]


def test_csv_text_with_long_lines_is_a_table_not_a_path(task: Task) -> None:
    header = ",".join(f"column_{i}" for i in range(60))
    values = ",".join(str(i) for i in range(60))
    assert len(header) > 255, "longer than a file name may be"
    task.get_logger().report_table("wide", "csv", csv=f"{header}\n{values}\n")
    task.get_logger().report_table("wide", "header only", csv=header)
    tables = {r.series: r.payload for r in reports(task, "table")}
    assert tables["csv"]["columns"][59] == "column_59"
    assert tables["csv"]["rows"] == [[str(i) for i in range(60)]]
    assert len(tables["header only"]["columns"]) == 60 and tables["header only"]["rows"] == []


def test_a_large_table_is_cut_and_says_so(task: Task) -> None:
    rows = [["i"], *([i] for i in range(MAX_TABLE_ROWS + 5))]
    task.get_logger().report_table("big", "rows", table_plot=rows)
    (table,) = reports(task, "table")
    assert table.payload["truncated"] is True
    assert table.payload["total_rows"] == MAX_TABLE_ROWS + 5
    assert len(table.payload["rows"]) == MAX_TABLE_ROWS


def test_report_table_refuses_what_is_not_a_table(task: Task) -> None:
    with pytest.raises(TypeError, match="DataFrame or a list of rows"):
        task.get_logger().report_table("bad", "value", table_plot=42)
    assert reports(task, "table") == []


def test_text_is_recorded_and_printed(task: Task, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    logger = task.get_logger()
    logger.report_text("first line")
    logger.report_text("careful", level=logging.WARNING, print_console=False)
    assert capsys.readouterr().out == "first line\n"
    texts = [(r.title, r.payload) for r in reports(task, "text")]
    assert texts == [
        ("INFO", {"text": "first line", "level": logging.INFO}),
        ("WARNING", {"text": "careful", "level": logging.WARNING}),
    ]


def _figure() -> Figure:
    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])
    return figure


def test_a_matplotlib_figure_is_stored_as_a_png_artifact(task: Task) -> None:
    task.get_logger().report_matplotlib_figure("curve", "loss", _figure(), iteration=3)
    (figure_report,) = reports(task, "figure")
    assert (figure_report.title, figure_report.series, figure_report.iteration) == (
        "curve",
        "loss",
        3,
    )
    name = figure_report.payload["artifact"]
    artifact = Task.get_task(task_id=task.id).artifacts[name]
    assert artifact.type == "matplotlib.figure.Figure" and artifact.url.endswith(".png")
    assert artifact.metadata == {"title": "curve", "series": "loss", "iteration": 3}
    assert Path(artifact.get_local_copy()).read_bytes().startswith(b"\x89PNG")
    image = artifact.get()
    assert isinstance(image, Image.Image) and image.width > 10 and image.height > 10


def test_the_pyplot_module_reports_its_current_figure(task: Task) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(2, 2), dpi=40)
    plt.plot([1, 2, 3])
    try:
        task.get_logger().report_matplotlib_figure("pyplot", "current", plt)
    finally:
        plt.close("all")
    (figure_report,) = reports(task, "figure")
    artifact = task.artifacts[figure_report.payload["artifact"]]
    assert artifact.type == "matplotlib.figure.Figure"
    assert artifact.preview == "Figure 80x80 px, 1 axes", "the figure made by plt.figure"
    assert isinstance(artifact.get(), Image.Image)


def test_current_logger_needs_a_task() -> None:
    assert Task.current_task() is None
    with pytest.raises(RuntimeError, match=r"Task\.init"):
        Logger.current_logger()


def test_reports_made_in_a_kernel_are_read_from_here(runner: NotebookRunner) -> None:
    run = runner.execute(notebook("reports"), {"steps": 4}, project_name="tests")
    assert run.status == "completed", run.error
    task = Task.get_task(task_id=run.id)
    scalars = task.get_reported_scalars()
    assert scalars["loss"]["train"] == {"x": [0, 1, 2, 3], "y": [1.0, 0.5, 1 / 3, 0.25]}
    assert scalars["loss"]["val"]["y"] == [2.0, 1.0, 2 / 3, 0.5]
    assert scalars["Summary"] == {"accuracy": {"x": [0], "y": [0.75]}}
    (text,) = reports(task, "text")
    assert text.payload["text"] == "trained 4 steps"
    (table,) = reports(task, "table")
    assert table.iteration == 4 and table.payload["rows"] == [[3, 0.25]]
    (figure_report,) = reports(task, "figure")
    assert figure_report.title == "curve" and figure_report.iteration == 4
    png = task.artifacts[figure_report.payload["artifact"]]
    assert Path(png.get_local_copy()).read_bytes().startswith(b"\x89PNG")
    logs = {r.title: r.payload["text"] for r in reports(task, "log")}
    assert "trained 4 steps" in logs["stdout"], "report_text prints as well"


def test_a_nan_scalar_is_kept_as_nan(home: Path) -> None:
    import math

    task = Task.create(project_name="tests", task_name="nan", notebook=notebook("params"))
    logger = task.get_logger()
    logger.report_scalar("loss", "train", float("nan"), iteration=0)
    logger.report_scalar("loss", "train", 0.5, iteration=1)
    series = task.get_reported_scalars()["loss"]["train"]
    assert series["x"] == [0, 1]
    assert math.isnan(series["y"][0]) and series["y"][1] == 0.5


def test_the_current_logger_of_a_run_is_the_one_its_task_reports_through(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from clearnb import Logger, Task\n"
            "early = Logger.current_logger()\n"
            "assert Logger.current_logger() is early\n"
            "early.report_scalar('loss', 'train', 0.5, iteration=0)"
        ),
        nbformat.v4.new_code_cell(
            "task = Task.init()\n"
            "assert task.get_logger() is early, 'Task.init takes the logger over'\n"
            "assert Logger.current_logger() is early and Task.current_task() is task\n"
            "early.report_scalar('loss', 'train', 0.25, iteration=1)"
        ),
    ]
    path = tmp_path / "logger_first.ipynb"
    nbformat.write(nb, path)
    run = runner.execute(path, project_name="tests")
    assert run.status == "completed", run.error
    scalars = Task.get_task(task_id=run.id).get_reported_scalars()
    assert scalars == {"loss": {"train": {"x": [0, 1], "y": [0.5, 0.25]}}}

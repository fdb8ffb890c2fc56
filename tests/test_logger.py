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


# -- plots -------------------------------------------------------------------------------


def only(task: Task, kind: str) -> ReportRecord:
    (report,) = reports(task, kind)
    return report


def test_a_histogram_keeps_its_rows_labels_and_mode(task: Task) -> None:
    import numpy as np

    logger = task.get_logger()
    counts = np.array([[1, 2, 3], [4, 5, 6]])
    logger.report_histogram(
        "hist", "counts", counts, iteration=2, labels=["a", "b"], xlabels=["x", "y", "z"],
        xaxis="bin", yaxis="count", mode="stack",
    )  # fmt: skip
    report = only(task, "histogram")
    assert (report.title, report.series, report.iteration) == ("hist", "counts", 2)
    assert report.payload == {
        "values": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        "labels": ["a", "b"],
        "xlabels": ["x", "y", "z"],
        "xaxis": "bin",
        "yaxis": "count",
        "mode": "stack",
        "shape": [2, 3],
        "truncated": False,
    }
    logger.report_histogram("hist", "flat", [0.5, 1.5])
    flat = reports(task, "histogram")[1].payload
    assert flat["values"] == [[0.5, 1.5]] and flat["mode"] == "group" and flat["labels"] is None


def test_numpy_histogram_output_is_its_counts_labelled_by_bin(task: Task) -> None:
    import numpy as np

    counts, edges = np.histogram([1, 2, 2, 3, 3, 3], bins=3, range=(0.5, 3.5))
    task.get_logger().report_histogram("histogram", "age", values=(counts, edges))
    payload = only(task, "histogram").payload
    assert payload["values"] == [[1.0, 2.0, 3.0]]
    assert payload["xlabels"] == ["0.5 to 1.5", "1.5 to 2.5", "2.5 to 3.5"]


def test_a_histogram_refuses_a_bad_mode_or_labels(task: Task) -> None:
    logger = task.get_logger()
    with pytest.raises(ValueError, match="mode must be one of group, stack, relative"):
        logger.report_histogram("h", "s", [1, 2], mode="side")
    with pytest.raises(ValueError, match="xlabels"):
        logger.report_histogram("h", "s", [1, 2], xlabels=["only one"])
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        logger.report_histogram("h", "s", [[1], [2]], labels=["a", "b", "c"])
    assert reports(task, "histogram") == []


def test_plotly_settings_are_recorded_and_named_in_a_warning(task: Task) -> None:
    from clearnb.errors import CompatibilityWarning

    with pytest.warns(CompatibilityWarning, match=r"data_args=.*extra_layout=.*matplotlib"):
        task.get_logger().report_histogram(
            "h", "s", [1, 2], data_args={"orientation": "h"}, extra_layout={"height": 600}
        )
    assert only(task, "histogram").payload["unused_arguments"] == {
        "data_args": {"orientation": "h"},
        "extra_layout": {"height": 600},
    }


def test_report_vector_is_a_deprecated_histogram(task: Task) -> None:
    with pytest.warns(DeprecationWarning, match="report_histogram"):
        task.get_logger().report_vector("v", "s", [3, 1], labels=["row"])
    assert only(task, "histogram").payload["values"] == [[3.0, 1.0]]


def test_a_2d_scatter_keeps_points_labels_and_mode(task: Task) -> None:
    import numpy as np

    points = np.array([[0, 1.5], [1, 2.5], [2, 0.5]])
    task.get_logger().report_scatter2d(
        "scatter", "s1", points, iteration=1, xaxis="x", yaxis="y",
        labels=["p", "q", "r"], mode="markers", comment="three points",
    )  # fmt: skip
    assert only(task, "scatter2d").payload == {
        "series": [
            {"name": "s1", "x": [0.0, 1.0, 2.0], "y": [1.5, 2.5, 0.5], "labels": ["p", "q", "r"]}
        ],
        "xaxis": "x",
        "yaxis": "y",
        "mode": "markers",
        "comment": "three points",
        "points": 3,
        "truncated": False,
    }
    with pytest.raises(ValueError, match=r"rows of \(x, y\)"):
        task.get_logger().report_scatter2d("scatter", "bad", [1, 2, 3])
    with pytest.raises(ValueError, match="mode must be one of lines, markers"):
        task.get_logger().report_scatter2d("scatter", "bad", points, mode="dots")


def test_a_long_series_is_thinned_evenly_and_says_so(task: Task) -> None:
    from clearnb.reports import MAX_POINTS

    count = MAX_POINTS * 3 + 7
    pairs = [(i, i * 2) for i in range(count)]
    task.get_logger().report_scatter2d("long", "s", pairs)
    payload = only(task, "scatter2d").payload
    (series,) = payload["series"]
    assert payload["truncated"] is True and payload["points"] == count
    assert len(series["x"]) == MAX_POINTS
    assert series["x"][0] == 0 and series["x"][-1] == count - 1, "both ends kept"
    assert series["y"] == [2 * x for x in series["x"]], "x and y thinned together"


def test_a_line_plot_holds_several_series(task: Task) -> None:
    from clearnb import Logger

    lines = [
        Logger.SeriesInfo(name="up", data=[[0, 0], [1, 1]], labels=["start", "end"]),
        {"name": "down", "data": [[0, 1], [1, 0]]},
    ]
    with pytest.warns(DeprecationWarning, match="report_scatter2d"):
        task.get_logger().report_line_plot(
            "lines", lines, xaxis="t", yaxis="v", mode="lines+markers", iteration=4,
            reverse_xaxis=True, comment="two",
        )  # fmt: skip
    report = only(task, "line")
    assert report.series == "up" and report.iteration == 4
    assert [s["name"] for s in report.payload["series"]] == ["up", "down"]
    assert report.payload["series"][1]["y"] == [1.0, 0.0]
    assert report.payload["series"][0]["labels"] == ["start", "end"]
    assert report.payload["reverse_xaxis"] is True and report.payload["points"] == 4
    with pytest.raises(ValueError, match=r"rows of \(x, y\) pairs"):
        Logger.SeriesInfo(name="bad", data=[[0, 1, 2]])


def test_3d_scatters_of_one_or_several_series(task: Task) -> None:
    import numpy as np

    from clearnb.errors import CompatibilityWarning

    logger = task.get_logger()
    logger.report_scatter3d("cloud", "one", np.arange(9).reshape(3, 3), zaxis="depth")
    several = [[[0, 0, 0], [1, 1, 1]], [[2, 2, 2], [3, 3, 3], [4, 4, 4]]]
    with pytest.warns(CompatibilityWarning, match=r"fill=True.*do not fill"):
        logger.report_scatter3d("cloud", "many", several, mode="lines", fill=True)
    one, many = (r.payload for r in reports(task, "scatter3d"))
    assert one["series"] == [
        {"name": "one", "x": [0.0, 3.0, 6.0], "y": [1.0, 4.0, 7.0], "z": [2.0, 5.0, 8.0],
         "labels": None}
    ]  # fmt: skip
    assert one["zaxis"] == "depth" and one["mode"] == "markers"
    assert [s["name"] for s in many["series"]] == ["many 1", "many 2"]
    assert many["series"][1]["z"] == [2.0, 3.0, 4.0] and many["points"] == 5
    assert many["unused_arguments"] == {"fill": True}


def test_a_confusion_matrix_and_a_surface(task: Task) -> None:
    logger = task.get_logger()
    logger.report_confusion_matrix(
        "confusion", "val", [[5, 1], [2, 7]], iteration=3, xaxis="predicted",
        yaxis="actual", xlabels=["cat", "dog"], ylabels=["cat", "dog"], yaxis_reversed=True,
    )  # fmt: skip
    matrix = only(task, "confusion_matrix")
    assert matrix.payload == {
        "matrix": [[5.0, 1.0], [2.0, 7.0]],
        "xaxis": "predicted",
        "yaxis": "actual",
        "xlabels": ["cat", "dog"],
        "ylabels": ["cat", "dog"],
        "comment": None,
        "shape": [2, 2],
        "truncated": False,
        "yaxis_reversed": True,
    }
    with pytest.warns(DeprecationWarning, match="report_confusion_matrix"):
        logger.report_matrix("confusion", "old", [[1]])
    assert reports(task, "confusion_matrix")[1].series == "old"
    logger.report_surface("heights", "s", [[0, 1, 2], [1, 2, 3]], zaxis="h", camera=(2, 0, 1))
    surface = only(task, "surface").payload
    assert surface["matrix"][1] == [1.0, 2.0, 3.0] and surface["camera"] == [2.0, 0.0, 1.0]
    assert surface["zaxis"] == "h"
    with pytest.raises(ValueError, match="ylabels"):
        logger.report_confusion_matrix("c", "s", [[1, 2]], ylabels=["a", "b"])
    with pytest.raises(ValueError, match="2D matrix"):
        logger.report_surface("c", "s", [1, 2, 3])


def test_a_large_matrix_is_cut_and_says_so(task: Task) -> None:
    import numpy as np

    from clearnb.reports import MAX_MATRIX_SIDE

    side = MAX_MATRIX_SIDE + 4
    task.get_logger().report_confusion_matrix("big", "s", np.ones((side, 3)))
    payload = only(task, "confusion_matrix").payload
    assert payload["truncated"] is True and payload["shape"] == [side, 3]
    assert len(payload["matrix"]) == MAX_MATRIX_SIDE and len(payload["matrix"][0]) == 3


class PlotlyLike:
    """What a plotly Figure offers to ClearML: its plotly.js dict, numpy arrays inside."""

    def to_plotly_json(self) -> dict[str, object]:
        import numpy as np

        return {
            "data": [{"type": "bar", "x": np.array(["a", "b"]), "y": np.array([1, 2])}],
            "layout": {"title": {"text": "bars"}},
        }


def test_a_plotly_figure_is_stored_as_json(task: Task) -> None:
    import numpy as np

    logger = task.get_logger()
    figure = {"data": [{"type": "scatter", "x": (1, 2), "y": np.array([0.5, 0.25])}]}
    logger.report_plotly("plotly", "dict", figure, iteration=1)
    logger.report_plotly("plotly", "object", PlotlyLike())
    first, second = (r.payload["figure"] for r in reports(task, "plotly"))
    assert first == {"data": [{"type": "scatter", "x": [1, 2], "y": [0.5, 0.25]}]}
    assert second["data"][0] == {"type": "bar", "x": ["a", "b"], "y": [1, 2]}
    assert second["layout"] == {"title": {"text": "bars"}}
    with pytest.raises(TypeError, match="plotly Figure or a dict"):
        logger.report_plotly("plotly", "bad", [1, 2, 3])


def test_extra_text_arguments_are_recorded_and_named(
    task: Task, capsys: pytest.CaptureFixture[str]
) -> None:
    from clearnb.errors import CompatibilityWarning

    with pytest.warns(CompatibilityWarning, match=r"report_text: args=\['x'\], flush=True"):
        task.get_logger().report_text("hello", 20, False, "x", flush=True)
    assert capsys.readouterr().out == ""
    assert only(task, "text").payload == {
        "text": "hello",
        "level": 20,
        "unused_arguments": {"args": ["x"], "flush": True},
    }


def test_table_layout_is_recorded_and_one_source_is_needed(task: Task, bucket_csv: str) -> None:
    from clearnb.errors import CompatibilityWarning

    logger = task.get_logger()
    with pytest.warns(CompatibilityWarning, match="extra_data="):
        logger.report_table("t", "s", csv="a\n1\n", extra_data={"columnwidth": [1]})
    assert only(task, "table").payload["unused_arguments"] == {"extra_data": {"columnwidth": [1]}}
    with pytest.raises(TypeError, match=r"exactly one of table_plot=, csv=, url= \(got csv=, url="):
        logger.report_table("t", "s", csv="a\n1\n", url=bucket_csv)
    with pytest.raises(TypeError, match="got none"):
        logger.report_table("t", "s")
    logger.report_table("t", "remote", url=bucket_csv)
    assert reports(task, "table")[1].payload["rows"] == [["1", "2"]]


@pytest.fixture
def bucket_csv() -> Iterator[str]:
    import uuid

    import fsspec

    url = f"memory://logger-{uuid.uuid4().hex}/table.csv"
    fs = fsspec.filesystem("memory")
    fs.pipe_file(url, b"p,q\n1,2\n")
    yield url
    fs.rm(url)


# -- images and media --------------------------------------------------------------------


def stored_file(task: Task, report: ReportRecord) -> Path:
    return Path(task.artifacts[report.payload["artifact"]].get_local_copy())


def test_images_from_arrays_and_pil_round_trip_as_png(task: Task) -> None:
    import numpy as np

    logger = task.get_logger()
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255
    rgb[1, 2] = (1, 2, 3)
    logger.report_image("samples", "rgb", iteration=1, image=rgb)
    grey = np.linspace(0.0, 1.0, 12).reshape(3, 4)
    logger.report_image("samples", "grey", iteration=1, image=grey)
    picture = Image.new("RGBA", (5, 2), (10, 20, 30, 40))
    logger.report_image("samples", "pil", iteration=2, image=picture)
    by_series = {r.series: r for r in reports(task, "image")}
    for report in by_series.values():
        assert stored_file(task, report).read_bytes().startswith(b"\x89PNG")
        assert report.payload["content_type"] == "image/png"
    assert by_series["rgb"].payload | {"size": 0} == {
        "artifact": "image_samples_rgb_1",
        "content_type": "image/png",
        "size": 0,
        "width": 6,
        "height": 4,
        "mode": "RGB",
    }
    back = task.artifacts["image_samples_rgb_1"].get()
    assert np.array_equal(np.asarray(back), rgb), "the same pixels come back"
    grey_back = np.asarray(task.artifacts[by_series["grey"].payload["artifact"]].get())
    assert grey_back.shape == (3, 4) and grey_back[0, 0] == 0 and grey_back[-1, -1] == 255
    pil_back = task.artifacts[by_series["pil"].payload["artifact"]].get()
    assert pil_back.mode == "RGBA" and pil_back.getpixel((4, 1)) == (10, 20, 30, 40)


def test_an_image_file_is_stored_as_it_is(task: Task, tmp_path: Path) -> None:
    from clearnb.errors import CompatibilityWarning

    source = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 3), (0, 128, 255)).save(source, format="JPEG")
    original = source.read_bytes()
    with pytest.warns(CompatibilityWarning, match="max_image_history=3"):
        task.get_logger().report_image(
            "photos", "jpg", local_path=str(source), max_image_history=3, delete_after_upload=True
        )
    report = only(task, "image")
    assert stored_file(task, report).read_bytes() == original
    assert stored_file(task, report).name == "photo.jpg"
    assert report.payload["content_type"] == "image/jpeg"
    assert (report.payload["width"], report.payload["height"]) == (8, 3)
    assert report.payload["unused_arguments"] == {"max_image_history": 3}
    assert not source.exists(), "delete_after_upload removes the local file once stored"


def test_an_image_needs_exactly_one_source_of_a_known_type(task: Task, tmp_path: Path) -> None:
    import numpy as np

    logger = task.get_logger()
    with pytest.raises(TypeError, match="exactly one of local_path=, url=, image=, matrix="):
        logger.report_image("i", "s")
    with pytest.raises(TypeError, match=r"\(got url=, image=\)"):
        logger.report_image("i", "s", url="https://example.org/a.png", image=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="numpy array or a PIL image"):
        logger.report_image("i", "s", image=[[0, 1]])
    with pytest.raises(ValueError, match="height x width"):
        logger.report_image("i", "s", image=np.zeros((2, 2, 2)))
    with pytest.raises(FileNotFoundError, match="no file at"):
        logger.report_image("i", "s", local_path=str(tmp_path / "absent.png"))
    assert reports(task, "image") == []
    with pytest.warns(DeprecationWarning, match="image="):
        logger.report_image("i", "old", matrix=np.zeros((2, 2), dtype=np.uint8))
    logger.report_image("i", "linked", url="https://example.org/a.png")
    old, linked = reports(task, "image")
    assert old.payload["mode"] == "L"
    assert linked.payload == {"url": "https://example.org/a.png", "content_type": "image/png"}


def test_a_figure_can_be_reported_as_an_image(task: Task) -> None:
    task.get_logger().report_matplotlib_figure("curve", "debug", _figure(), report_image=True)
    assert reports(task, "figure") == []
    report = only(task, "image")
    assert report.payload["content_type"] == "image/png"
    assert stored_file(task, report).read_bytes().startswith(b"\x89PNG")


def test_media_from_a_file_a_stream_and_a_url(task: Task, tmp_path: Path) -> None:
    import io

    from clearnb.errors import CompatibilityWarning

    logger = task.get_logger()
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF....WAVEfmt ")
    logger.report_media("audio", "clip", iteration=1, local_path=str(clip))
    logger.report_media("page", "html", stream=io.StringIO("<b>hi</b>"), file_extension="html")
    with pytest.warns(CompatibilityWarning, match="max_history=2"):
        logger.report_media(
            "bytes", "mp4", stream=io.BytesIO(b"\x00\x00\x00\x18ftypmp42"),
            file_extension=".mp4", max_history=2,
        )  # fmt: skip
    logger.report_media("remote", "video", url="https://example.org/v.webm")
    clip_report, page, video, remote = reports(task, "media")
    assert clip_report.payload == {
        "artifact": "media_audio_clip_1",
        "file": "clip.wav",
        "content_type": "audio/x-wav",
        "size": 16,
    }
    assert stored_file(task, clip_report).read_bytes() == clip.read_bytes()
    assert clip.exists(), "kept without delete_after_upload"
    assert page.payload["content_type"] == "text/html" and page.payload["file"] == "page_html.html"
    assert stored_file(task, page).read_text() == "<b>hi</b>"
    assert video.payload["content_type"] == "video/mp4"
    assert stored_file(task, video).read_bytes() == b"\x00\x00\x00\x18ftypmp42"
    assert remote.payload == {"url": "https://example.org/v.webm", "content_type": "video/webm"}
    with pytest.raises(ValueError, match="file_extension"):
        logger.report_media("bytes", "bad", stream=io.BytesIO(b"x"))
    with pytest.raises(TypeError, match="exactly one of local_path=, url=, stream="):
        logger.report_media("bytes", "bad", local_path=str(clip), stream=io.BytesIO(b"x"))
    logger.report_media("audio", "gone", local_path=str(clip), delete_after_upload=True)
    assert not clip.exists()


def test_a_media_file_takes_the_extension_it_is_given(task: Task, tmp_path: Path) -> None:
    recording = tmp_path / "recording.dat"
    recording.write_bytes(b"OggS")
    task.get_logger().report_media("audio", "ogg", local_path=str(recording), file_extension="ogg")
    report = only(task, "media")
    assert report.payload["file"] == "recording.ogg"
    assert report.payload["content_type"] == "audio/ogg"
    assert stored_file(task, report).name == "recording.ogg"
    assert stored_file(task, report).read_bytes() == b"OggS" and recording.exists()

"""The example controller notebooks run end to end (real kernels, scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearnb import Task
from clearnb.config import Config
from clearnb.execution.runner import NotebookRunner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).parent.parent / "notebooks"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NotebookRunner:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    return NotebookRunner(Config.at(tmp_path), pool_size=0)


def test_the_seed_pipeline_notebook_runs(runner: NotebookRunner) -> None:
    with runner:
        task = runner.execute(EXAMPLES / "pipeline_controller.ipynb")
    assert task.status == "completed", task.error
    state = task.record.runtime["pipeline"]
    assert state["status"] == "completed"
    assert [n["status"] for n in state["nodes"].values()] == ["completed"] * 3
    assert task.project == "examples" and task.name == "pipeline demo"
    train = Task.get_task(task_id=state["nodes"]["stage_train"]["executed"])
    accuracy = train.get_reported_scalars()["accuracy"]["test"]["y"][-1]
    assert accuracy > 0.8
    process = Task.get_task(task_id=state["nodes"]["stage_process"]["executed"])
    assert process.get_parameter("General/test_size") == 0.25
    # the widget is shown before the run starts, so that Run All shows the DAG live
    import nbformat

    cells = nbformat.read(task.artifacts["notebook"].get_local_copy(), as_version=4).cells
    shown = next(i for i, c in enumerate(cells) if c.source.strip().endswith("display(pipe)"))
    started = next(i for i, c in enumerate(cells) if "pipe.start()" in c.source)
    assert shown < started
    kinds = {kind for output in cells[shown].outputs for kind in output.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in kinds and "image/png" in kinds


def test_the_concurrent_pipeline_notebook_runs(runner: NotebookRunner) -> None:
    with runner:
        task = runner.execute(EXAMPLES / "pipeline_concurrent.ipynb")
    assert task.status == "completed", task.error
    nodes = task.record.runtime["pipeline"]["nodes"]
    assert all(n["status"] == "completed" for n in nodes.values())
    trains = [n for name, n in nodes.items() if name.startswith("train_")]
    assert len(trains) == 4
    assert all(n["parents"] == ["stage_process"] for n in trains)
    best = Task.get_task(task_id=nodes["pick_best"]["executed"])
    assert best.artifacts["best_task_id"].get() in {n["executed"] for n in trains}


def test_the_decorator_pipeline_notebook_runs(runner: NotebookRunner) -> None:
    with runner:
        task = runner.execute(EXAMPLES / "pipeline_from_decorator.ipynb")
    assert task.status == "completed", task.error
    assert task.project == "examples" and task.name == "pipeline"
    state = task.record.runtime["pipeline"]
    assert state["status"] == "completed"
    nodes = state["nodes"]
    assert list(nodes) == ["step_one", "step_two", "step_three", "step_four"]
    assert all(n["status"] == "completed" for n in nodes.values())
    assert sorted(nodes["step_four"]["parents"]) == ["step_three", "step_two"]
    parameters = task.record.parameters
    assert set(parameters) == {"General", "Mock"}
    assert parameters["General"]["pickle_url"].endswith("iris.csv")
    assert parameters["Mock"] == {"mock_parameter": "mock"}
    logs = runner.backend.store.get_reports(task.id, kind="log")
    stdout = "".join(r.payload["text"] for r in logs if r.title == "stdout")
    printed = [line for line in stdout.splitlines() if line.startswith("Accuracy=")]
    assert len(printed) == 1, stdout
    assert float(printed[0].removeprefix("Accuracy=").removesuffix("%")) > 80

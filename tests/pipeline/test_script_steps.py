"""ClearML's pipeline from tasks, with step *scripts*: registered by ``python step.py``, run
as notebooks by a PipelineController, overridden in ``General`` and ``Args``, cached."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from clearnb import PipelineController, Task
from clearnb.errors import ParameterWarning, PipelineError
from clearnb.pipeline.node import Node
from tests.notebook.test_scripts import run_python, write

pytestmark = pytest.mark.timeout(300)

DATA_STEP = """
    from clearnb import Task

    task = Task.init(project_name="scripted", task_name="step 1 data")
    args = {"x": 1, "label": "from the script"}
    task.connect(args)
    task.execute_remotely()

    task.upload_artifact("seen", {"x": args["x"], "type": type(args["x"]).__name__,
                                  "label": args["label"]})
"""

TRAIN_STEP = """
    import argparse

    from clearnb import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--y", type=float, default=0.5)
    parser.add_argument("--data_task", default="")
    options = parser.parse_args()

    task = Task.init(project_name="scripted", task_name="step 2 train")
    task.execute_remotely()

    data = Task.get_task(task_id=options.data_task).artifacts["seen"].get()
    task.upload_artifact("seen", {"y": options.y, "type": type(options.y).__name__,
                                  "x_of_data": data["x"]})
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"


def register(home: Path, folder: Path, name: str, code: str, *arguments: str) -> Path:
    """Write a step script and run it once with ``python``, as ClearML's examples are."""
    script = write(folder / name, code)
    done = run_python(script, home, *arguments)
    assert done.returncode == 0, done.stderr
    return script


def from_tasks(**options: bool) -> PipelineController:
    """ClearML's pipeline_from_tasks.py shape, on the two registered scripts."""
    pipe = PipelineController(name="scripted pipeline", project="scripted", **options)
    pipe.add_step(
        name="stage_data",
        base_task_project="scripted",
        base_task_name="step 1 data",
        parameter_override={"General/x": 7},
        cache_executed_step=True,
    )
    pipe.add_step(
        name="stage_train",
        parents=["stage_data"],
        base_task_project="scripted",
        base_task_name="step 2 train",
        parameter_override={"Args/y": "0.75", "Args/data_task": "${stage_data.id}"},
        cache_executed_step=True,
    )
    return pipe


def run(pipe: PipelineController) -> dict[str, Node]:
    pipe.start()
    pipe.wait()
    with contextlib.suppress(PipelineError):  # a failed run is what some tests want
        pipe.stop()
    return pipe.get_pipeline_dag()


def executed(task: Task) -> nbformat.NotebookNode:
    return nbformat.read(task.artifacts["notebook"].get_local_copy(), as_version=4)


def injected_sources(nb: nbformat.NotebookNode) -> list[str]:
    return [
        cell.source
        for cell in nb.cells
        if "injected-parameters" in cell.get("metadata", {}).get("tags", [])
    ]


def test_registered_scripts_run_as_steps_with_their_overrides_then_cached(
    home: Path, tmp_path: Path
) -> None:
    data_script = register(home, tmp_path, "step1_data.py", DATA_STEP)
    register(home, tmp_path, "step2_train.py", TRAIN_STEP, "--y", "0.25")
    template = Task.get_task(project_name="scripted", task_name="step 2 train")
    assert template.get_parameters_as_dict() == {"Args": {"y": 0.25, "data_task": ""}}

    dag = run(from_tasks())
    assert {name: node.status for name, node in dag.items()} == {
        "stage_data": "completed",
        "stage_train": "completed",
    }, {name: node.error for name, node in dag.items()}
    data = Task.get_task(task_id=dag["stage_data"].executed)
    assert data.artifacts["seen"].get() == {"x": 7, "type": "int", "label": "from the script"}
    assert data.notebook == str(data_script)
    assert injected_sources(executed(data)) == ["# Parameters\nx = 7\n"]
    train = Task.get_task(task_id=dag["stage_train"].executed)
    assert train.artifacts["seen"].get() == {"y": 0.75, "type": "float", "x_of_data": 7}
    assert train.get_parameters_as_dict()["Args"] == {"y": 0.75, "data_task": data.id}
    assert [cell.cell_type for cell in executed(train).cells][:1] == ["code"]

    for name in ("step 1 data", "step 2 train"):
        (registered,) = Task.get_tasks(project_name="scripted", task_name=name)
        assert registered.status == "created", "the templates were copied, not run"
    assert Task.get_task(template.id).get_parameters_as_dict()["Args"]["y"] == 0.25

    again = run(from_tasks())
    assert {name: node.status for name, node in again.items()} == {
        "stage_data": "cached",
        "stage_train": "cached",
    }
    assert again["stage_train"].executed == train.id


def test_overrides_of_a_script_template_are_checked_against_what_it_recorded(
    home: Path, tmp_path: Path
) -> None:
    register(home, tmp_path, "step1_data.py", DATA_STEP)
    register(home, tmp_path, "step2_train.py", TRAIN_STEP)

    def typo_pipeline(**options: bool) -> PipelineController:
        pipe = PipelineController(name="typo", project="checks", **options)
        pipe.add_step(
            "train",
            base_task_project="scripted",
            base_task_name="step 2 train",
            parameter_override={"Args/yy": 1.0},
        )
        return pipe

    with pytest.raises(PipelineError) as refused:
        typo_pipeline(strict=True).start(wait=True)
    assert "'yy' in section Args; it declares: data_task, y" in str(refused.value)

    mistyped = PipelineController(name="mistyped", project="checks")
    mistyped.add_step(
        "train",
        base_task_project="scripted",
        base_task_name="step 2 train",
        parameter_override={"Args/y": "fast"},
    )
    with pytest.raises(PipelineError) as wrong:
        mistyped.start(wait=True)
    assert "'Args/y'" in str(wrong.value) and "is a float" in str(wrong.value)
    assert Task.get_tasks(project_name="checks") == [], "nothing ran"

    warned = typo_pipeline()
    with pytest.warns(ParameterWarning, match=r"'Args/yy'; it declares: data_task, y"):
        warned.start(wait=True)


PERCENT_STEP = """
    # %% tags=["parameters"]
    rows = 2

    # %% [markdown]
    # A step written in cells, straight from a file.

    # %%
    from clearnb import Task

    task = Task.init()
    task.upload_artifact("rows", {"rows": rows})
"""


RAISING_STEP = """
    from clearnb import Task

    task = Task.init()
    values = [1, 2, 3]

    total = sum(values) / (len(values) - 3)
"""


def test_script_files_as_steps_one_percent_format_one_that_raises(
    home: Path, tmp_path: Path
) -> None:
    percent = write(tmp_path / "cells.py", PERCENT_STEP)
    raising = write(tmp_path / "raising.py", RAISING_STEP)
    pipe = PipelineController(name="files", project="files")
    pipe.add_step("cells", notebook=str(percent), parameter_override={"General/rows": "5"})
    pipe.add_step("broken", notebook=str(raising))
    pipe.add_step("after", notebook=str(percent), parents=["broken"])
    dag = run(pipe)
    assert {name: node.status for name, node in dag.items()} == {
        "cells": "completed",
        "broken": "failed",
        "after": "skipped",
    }
    cells = Task.get_task(task_id=dag["cells"].executed)
    assert cells.artifacts["rows"].get() == {"rows": 5}
    nb = executed(cells)
    assert [cell.cell_type for cell in nb.cells] == ["code", "code", "markdown", "code"]
    assert nb.cells[0].metadata["tags"] == ["parameters"]
    assert injected_sources(nb) == ["# Parameters\nrows = 5\n"], "after the parameters cell"

    broken = Task.get_task(task_id=dag["broken"].executed)
    assert broken.status == "failed" and broken.error is not None
    assert broken.error["ename"] == "ZeroDivisionError"
    failing = [
        cell
        for cell in executed(broken).cells
        if cell.get("metadata", {}).get("papermill", {}).get("exception")
    ]
    assert [cell.source for cell in failing] == ["total = sum(values) / (len(values) - 3)"]
    assert not pipe.is_successful()

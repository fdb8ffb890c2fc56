"""The example step scripts (examples/scripts/) register themselves and run as a pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from clearnb import Task
from tests.notebook.test_scripts import script_environment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SCRIPTS = Path(__file__).resolve().parent.parent / "examples" / "scripts"


def test_the_script_pipeline_registers_its_steps_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "pipeline_from_tasks.py")],
        env=script_environment(tmp_path),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("registered ") == 3, done.stdout
    for name in ("step 1 dataset artifact", "step 2 process dataset", "step 3 train model"):
        template = Task.get_task(project_name="script examples", task_name=name)
        assert template.status == "created" and template.notebook is not None
        assert Path(template.notebook).parent == SCRIPTS
    template = Task.get_task(project_name="script examples", task_name="step 3 train model")
    assert template.get_parameters_as_dict()["Args"] == {
        "hidden_units": 16,
        "max_iter": 300,
        "learning_rate": 0.001,
    }
    (train,) = Task.get_tasks(project_name="script examples", task_name="stage_train")
    assert train.status == "completed", train.error
    assert train.get_parameter("Args/max_iter") == 400
    accuracy = train.get_reported_scalars()["accuracy"]["test"]["y"][-1]
    assert accuracy > 0.8
    (process,) = Task.get_tasks(project_name="script examples", task_name="stage_process")
    nb = nbformat.read(process.artifacts["notebook"].get_local_copy(), as_version=4)
    assert [cell.cell_type for cell in nb.cells[:3]] == ["code", "markdown", "code"]
    assert "injected-parameters" in nb.cells[0].metadata.tags, "then step 2's # %% cells"
    assert nb.cells[1].source.startswith("# Pipeline step 2, as a script in cells")

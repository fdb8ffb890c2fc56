"""What callbacks receive, with ClearML's field names, through a real pipeline run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController, Task
from clearnb.pipeline.node import Node
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.timeout(240)

STEPS = NOTEBOOKS / "pipeline"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    for name in ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


def test_callbacks_see_the_template_the_job_and_the_overrides(home: Path) -> None:
    template = Task.create(
        project_name="templates", task_name="make data", notebook=str(STEPS / "data_step.ipynb")
    )
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []

    def pre(pipeline: PipelineController, node: Node, params: dict[str, Any]) -> bool:
        before.append(
            {
                "pipeline": pipeline,
                "name": node.name,
                "base_task_id": node.base_task_id,
                "parameters": dict(node.parameters),
                "params": dict(params),
                "executed": node.executed,
            }
        )
        return True

    def post(pipeline: PipelineController, node: Node) -> None:
        assert node.job is not None
        after.append(
            {
                "pipeline": pipeline,
                "name": node.name,
                "base_task_id": node.base_task_id,
                "executed": node.executed,
                "job_task_id": node.job.task.id,
                "job_status": node.job.task.status,
                "completed": node.job.is_completed(),
                "override": dict(node.job.task_parameter_override),
                "parameters": dict(node.parameters),
            }
        )

    pipe = PipelineController(name="callbacks", project="tests")
    pipe.add_parameter("rows", 4)
    pipe.add_step(
        name="stage_data",
        base_task_project="templates",
        base_task_name="make data",
        parameter_override={"General/rows": "${pipeline.rows}"},
        pre_execute_callback=pre,
        post_execute_callback=post,
    )
    pipe.start()
    pipe.wait()
    pipe.stop()
    assert pipe.is_successful()

    (seen_before,) = before
    assert seen_before["pipeline"] is pipe
    assert seen_before["name"] == "stage_data"
    assert seen_before["base_task_id"] == template.id
    assert seen_before["parameters"] == {"General/rows": "${pipeline.rows}"}
    assert seen_before["params"] == {"General/rows": 4}
    assert seen_before["executed"] is None, "nothing has run when the step is about to"

    (seen_after,) = after
    ran = pipe.get_pipeline_dag()["stage_data"]
    assert seen_after["pipeline"] is pipe
    assert seen_after["base_task_id"] == template.id
    assert seen_after["executed"] == ran.executed
    assert seen_after["job_task_id"] == ran.executed != template.id
    assert seen_after["job_status"] == "completed" and seen_after["completed"]
    assert seen_after["override"] == {"General/rows": 4}
    assert seen_after["parameters"] == {"General/rows": "${pipeline.rows}"}
    assert Task.get_task(task_id=ran.executed).get_parameter("General/rows") == 4

    definition = pipe.get_pipeline_dag()["stage_data"].spec
    assert definition.base_task_id is None, "the template is found per run, not written back"


def test_a_template_given_by_id_is_the_node_base_task_id(home: Path) -> None:
    template = Task.create(
        project_name="templates", task_name="make data", notebook=str(STEPS / "data_step.ipynb")
    )
    pipe = PipelineController(name="by id", project="tests")
    pipe.add_step(name="stage_data", base_task_id=template.id)
    node = pipe.get_pipeline_dag()["stage_data"]
    assert node.base_task_id == template.id, "known before any run"

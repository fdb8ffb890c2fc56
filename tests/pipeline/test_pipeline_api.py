"""The rest of ClearML's PipelineController API, on real kernels: is_successful, the run's
time limit, drafts, configuration objects, run numbers, base task factories, monitors, and
the arguments that only record."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController, Task
from clearnb.errors import CodecError, PipelineError, TaskNotFoundError
from clearnb.pipeline.node import Node
from tests.executors.agents import Agents, agent_environ
from tests.helpers import NOTEBOOKS, kernel_pids_of, wait_until
from tests.test_cli import invoke

pytestmark = pytest.mark.timeout(240)

STEPS = NOTEBOOKS / "pipeline"


def step(name: str) -> str:
    return str(STEPS / f"{name}.ipynb")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path


def run(pipe: PipelineController, **start: Any) -> dict[str, Node]:
    pipe.start(**start)
    pipe.wait()
    with contextlib.suppress(PipelineError):
        pipe.stop()
    return pipe.get_pipeline_dag()


def verdicts(pipe: PipelineController) -> dict[tuple[bool, str], bool]:
    """``is_successful`` for every combination of its arguments."""
    return {
        (on_steps, condition): pipe.is_successful(
            fail_on_step_fail=on_steps, fail_condition=condition
        )
        for on_steps in (True, False)
        for condition in ("all", "failed", "aborted")
    }


def in_last_cell(node: Node) -> bool:
    cells = node.progress.get("cells")
    return node.status == "running" and cells is not None and node.progress.get("cell") == cells - 1


def test_is_successful_judges_by_the_fail_condition(home: Path) -> None:
    fine = PipelineController(name="fine", project="tests")
    fine.add_step("one", notebook=step("trivial"))
    assert not fine.is_successful(), "a pipeline that has not run has not succeeded"
    run(fine)
    assert set(verdicts(fine).values()) == {True}

    failing = PipelineController(name="failing", project="tests")
    failing.add_step("broken", notebook=step("maybe_fail"))
    run(failing)
    assert failing.status == "failed"
    assert verdicts(failing) == {
        (True, "all"): False,
        (True, "failed"): False,
        (True, "aborted"): True,
        (False, "all"): False,
        (False, "failed"): False,
        (False, "aborted"): True,
    }

    stopped = PipelineController(name="stopped", project="tests", max_workers=2)
    stopped.add_step("broken", notebook=step("maybe_fail"))
    stopped.add_step("slow", notebook=step("sleepy"), parameter_override={"General/seconds": 60})
    stopped.start()
    dag = stopped.get_pipeline_dag()
    wait_until(
        lambda: dag["broken"].status == "failed" and in_last_cell(dag["slow"]),
        120,
        "one step to fail while the other sleeps",
    )
    stopped.abort("stopped by the test")
    stopped.wait()
    assert stopped.status == "aborted" and dag["slow"].status == "aborted"
    assert verdicts(stopped) == {
        (True, "all"): False,
        (True, "failed"): False,  # the controller was aborted, but a step failed
        (True, "aborted"): False,
        (False, "all"): False,
        (False, "failed"): True,  # only the controller counts: it was aborted, not failed
        (False, "aborted"): False,
    }
    with pytest.raises(PipelineError, match="fail_condition must be one of"):
        stopped.is_successful(fail_condition="sometimes")


def test_the_time_limit_aborts_a_long_step_and_fails_the_run(home: Path) -> None:
    pipe = PipelineController(name="limited", project="tests")
    pipe.set_pipeline_execution_time_limit(0.05)  # minutes, as in ClearML: 3 s
    pipe.add_step("slow", notebook=step("sleepy"), parameter_override={"General/seconds": 90})
    pipe.add_step("after", notebook=step("trivial"), parents=["slow"])
    dag = run(pipe)
    assert dag["slow"].status == "aborted"
    assert "time limit of 0.05 minutes" in (dag["slow"].error or {}).get("reason", "")
    assert dag["after"].status == "skipped"
    assert "time limit" in (dag["after"].error or {}).get("reason", "")
    assert pipe.elapsed() < 60, "the 90 s step was stopped at the limit"
    assert pipe.status == "failed" and not pipe.is_successful()
    record = pipe.store.get_task(pipe.id)
    assert record.status == "failed"
    assert "time limit" in (record.error or {}).get("reason", "")
    assert record.runtime["pipeline"]["time_limit"] == 3.0
    assert pipe.store.get_task(dag["slow"].executed or "").status == "aborted"
    wait_until(lambda: kernel_pids_of(home) == [], 60, "the step's kernel to end")
    assert pipe.to_dict()["time_limit"] == 3.0
    assert "pipe.set_pipeline_execution_time_limit(0.05)" in pipe.to_code()


def test_update_execution_plot_stores_draws_and_tells_now(home: Path) -> None:
    pipe = PipelineController(name="plotted", project="tests")
    pipe.add_step("one", notebook=step("trivial"))
    pipe.add_step("two", notebook=step("trivial"), parents=["one"])
    heard: list[Any] = []
    pipe.add_listener(heard.append)
    pipe.update_execution_plot()
    assert [(e.kind, e.status) for e in heard] == [("pipeline_state", "pending")]
    assert set(heard[0].payload["nodes"]) == {"one", "two"}
    stored = pipe.store.get_task(pipe.id).runtime["pipeline"]
    assert [n["status"] for n in stored["nodes"].values()] == ["pending", "pending"]
    assert pipe.wait_for_picture(60)
    picture = pipe.store.get_artifacts(pipe.id)["pipeline_dag"]
    run(pipe)
    assert pipe.wait_for_picture(60)
    heard.clear()
    pipe.update_execution_plot()
    assert [(e.kind, e.status) for e in heard] == [("pipeline_state", "completed")]
    assert pipe.wait_for_picture(60)
    redrawn = pipe.store.get_artifacts(pipe.id)["pipeline_dag"]
    assert redrawn.hash != picture.hash, "the picture shows the finished run now"


def configurations(pipe: PipelineController) -> dict[str, Any]:
    stored: dict[str, Any] = pipe.store.get_task(pipe.id).runtime["configuration"]
    return stored


def test_configuration_objects_are_stored_with_every_run(home: Path, tmp_path: Path) -> None:
    pipe = PipelineController(name="configured", project="tests")
    pipe.add_step("one", notebook=step("trivial"))
    params = {"lr": 0.1, "layers": [8, 4]}
    assert pipe.connect_configuration(params, description="training") is params
    settings = tmp_path / "settings.yaml"
    settings.write_text("batch: 32\n")
    assert pipe.connect_configuration(settings, name="Settings") == settings
    assert configurations(pipe) == {
        "General": {"value": params, "type": "dictionary", "description": "training"},
        "Settings": {"value": "batch: 32\n", "type": "file", "description": None},
    }
    first = pipe.id
    run(pipe)
    run(pipe)
    assert pipe.id != first, "a second run is its own Task"
    assert configurations(pipe)["General"]["value"] == params, "later runs hold it too"
    with pytest.raises(PipelineError, match="cannot be read"):
        pipe.connect_configuration(tmp_path / "missing.yaml")


def test_a_stored_configuration_overrides_the_code_s(home: Path, tmp_path: Path) -> None:
    pipe = PipelineController(name="edited", project="tests")
    pipe.add_step("one", notebook=step("trivial"))
    settings = tmp_path / "settings.txt"
    settings.write_text("old")
    pipe.connect_configuration({"lr": 0.1})
    pipe.connect_configuration(str(settings), name="Settings")

    def edit(stored: dict[str, Any]) -> dict[str, Any]:  # as a person edits the draft
        stored["General"]["value"] = {"lr": 0.5}
        stored["Settings"]["value"] = "new"
        return stored

    pipe.store.update_runtime(pipe.id, "configuration", edit)
    again = PipelineController.from_definition(pipe.to_dict(), task=pipe.id)
    params = {"lr": 0.1}
    assert again.connect_configuration(params) is params and params == {"lr": 0.5}
    copy = again.connect_configuration(str(settings), name="Settings")
    assert isinstance(copy, str) and copy != str(settings)
    assert Path(copy).read_text() == "new" and settings.read_text() == "old"
    assert configurations(again)["General"]["value"] == {"lr": 0.5}


def drafted(version: str) -> PipelineController:
    pipe = PipelineController(name="drafted", project="tests", version=version)
    pipe.add_parameter("x", 4)
    pipe.add_step(
        "one", notebook=step("trivial"), parameter_override={"General/x": "${pipeline.x}"}
    )
    pipe.add_step("two", notebook=step("trivial"), parents=["one"])
    return pipe


def test_a_draft_is_stored_not_run_and_runs_later(home: Path) -> None:
    pipe = drafted("1.0.2")
    pipe.connect_configuration({"lr": 0.1})
    pipe.create_draft()
    store = pipe.store
    record = store.get_task(pipe.id)
    assert (record.task_type, record.status) == ("controller", "created")
    assert record.parameters["Args"] == {"x": 4}
    assert [s["name"] for s in record.runtime["definition"]["steps"]] == ["one", "two"]
    assert record.runtime["configuration"]["General"]["value"] == {"lr": 0.1}
    assert store.find_tasks(parent=pipe.id) == [], "a draft runs nothing"
    older = drafted("1.0.10")
    older.create_draft()
    newest = drafted("0.9")
    newest.create_draft()

    found = PipelineController.get(pipeline_project="tests", pipeline_name="drafted")
    assert found.id == older.id, "the highest semantic version, not the newest draft"
    found = PipelineController.get(
        pipeline_project="tests", pipeline_name="drafted", pipeline_version="1.0.2"
    )
    assert found.id == pipe.id and list(found.get_pipeline_dag()) == ["one", "two"]
    with pytest.raises(TaskNotFoundError, match="no pipeline with"):
        PipelineController.get(pipeline_project="tests", pipeline_name="missing")

    found.start(wait=True)
    found.stop()
    assert found.id == pipe.id and found.is_successful(), "the draft's own Task runs"
    assert store.get_task(pipe.id).status == "completed"
    one = Task.get_task(task_id=found.get_pipeline_dag()["one"].executed)
    assert one.get_parameter("General/x") == 4 and one.parent == pipe.id


def test_a_draft_and_its_clone_run_on_an_agent(home: Path, tmp_path: Path) -> None:
    pipe = drafted("2.0")
    pipe.create_draft()
    copy = PipelineController.clone(pipe.id, name="drafted copy", version="2.1")
    store = pipe.store
    cloned = store.get_task(copy.id)
    assert (cloned.name, cloned.status, cloned.parent) == ("drafted copy", "created", pipe.id)
    assert cloned.runtime["definition"]["version"] == "2.1"
    with Agents(store, agent_environ(home), tmp_path) as agents:
        agents.start("services-agent", ["services"])
        assert PipelineController.enqueue(pipe, queue_name="services")["queued"] == 1
        enqueued = invoke(home, "task", "enqueue", copy.id, "--queue", "services")
        assert enqueued.returncode == 0, enqueued.output  # a draft goes to a queue from the CLI
        for task_id in (pipe.id, copy.id):
            done = Task.get_task(task_id=task_id).wait_for_status(timeout=180)
            assert done.status == "completed", agents.output()
    for task_id in (pipe.id, copy.id):
        state = store.get_task(task_id).runtime["pipeline"]
        assert [n["status"] for n in state["nodes"].values()] == ["completed", "completed"]
        assert store.get_task(task_id).runtime["agent"] == "services-agent"


def framed(value: Any) -> bytes:
    import pickle

    return b"FRAME" + pickle.dumps(value)


def unframed(data: bytes) -> Any:
    import pickle

    assert data.startswith(b"FRAME"), data[:10]
    return pickle.loads(data[5:])


def squares(count: int) -> set[int]:
    return {i * i for i in range(count)}


def largest(numbers: set[int]) -> int:
    return max(numbers)


def careless(value: Any) -> bytes:
    return pickle.dumps(value)  # type: ignore[name-defined]  # noqa: F821


def test_function_steps_pass_values_with_the_pipelines_functions(home: Path) -> None:
    pipe = PipelineController(
        name="framed",
        project="tests",
        artifact_serialization_function=framed,
        artifact_deserialization_function=unframed,
    )
    pipe.add_function_step(
        "squares", squares, function_kwargs={"count": 4}, function_return=["numbers"]
    )
    pipe.add_function_step(
        "largest",
        largest,
        function_kwargs={"numbers": "${squares.numbers}"},
        function_return=["top"],
    )
    dag = run(pipe)
    assert pipe.is_successful(), {n: d.error for n, d in dag.items()}
    numbers = Task.get_task(task_id=dag["squares"].executed).artifacts["numbers"]
    assert Path(numbers.get_local_copy()).read_bytes().startswith(b"FRAME")
    assert numbers.get(deserialization_function=unframed) == {0, 1, 4, 9}
    top = Task.get_task(task_id=dag["largest"].executed).artifacts["top"]
    assert top.codec == "serialized" and top.get(deserialization_function=unframed) == 9

    portable = pipe.to_dict(portable=True)
    assert portable["serialization"]["serialize"]["function"].endswith(":framed")
    again = PipelineController.from_definition(portable)
    serialize, deserialize = again.spec.serialization.pair()
    assert serialize is not None and deserialize is not None and serialize is not framed
    assert deserialize(serialize({1})) == {1}, "an agent gets the functions from their source"

    sloppy = PipelineController(
        name="sloppy", project="tests", artifact_serialization_function=careless
    )
    sloppy.add_function_step("squares", squares, function_kwargs={"count": 2})
    with pytest.raises(PipelineError, match="careless uses 'pickle', which it neither imports"):
        sloppy.validate()


def test_a_base_task_factory_makes_the_template_when_the_step_runs(home: Path) -> None:
    made: list[tuple[str, str]] = []

    def factory(node: Node) -> Task:
        template = Task.create(
            project_name="templates", task_name=f"for {node.name}", notebook=step("data_step")
        )
        made.append((node.name, template.id))
        return template

    pipe = PipelineController(
        name="factory", project="tests", target_project=False, add_pipeline_tags=True
    )
    pipe.add_step(
        "data",
        base_task_factory=factory,
        parameter_override={"General/rows": 3},
        configuration_overrides={"Settings": {"depth": 2}, "Notes": "hello"},
    )
    assert made == [], "the template is made when the step is to run"
    with pytest.raises(PipelineError, match="callbacks run in the process that defines them"):
        pipe.start(queue="services")
    dag = run(pipe)
    assert pipe.is_successful(), {n: d.error for n, d in dag.items()}
    assert [name for name, _ in made] == ["data"]
    node = dag["data"]
    assert node.base_task_id == made[0][1]
    ran = pipe.store.get_task(node.executed or "")
    assert ran.id != made[0][1] and ran.parent == pipe.id
    assert ran.project == "templates", "target_project=False: the template's project"
    assert ran.parameters["General"]["rows"] == 3
    assert f"pipe: {pipe.id}" in ran.tags
    assert ran.runtime["configuration"] == {
        "Settings": {"value": {"depth": 2}, "type": "dictionary", "description": None},
        "Notes": {"value": "hello", "type": "text", "description": None},
    }
    assert pipe.store.get_task(made[0][1]).status == "created", "the template never runs"


def test_run_numbers_name_the_pipelines_tasks(home: Path) -> None:
    names = []
    for _ in range(3):
        pipe = PipelineController(name="numbered", project="tests")
        names.append(pipe.task.name)
    assert names == ["numbered", "numbered #2", "numbered #3"]
    assert PipelineController(name="numbered", project="elsewhere").task.name == "numbered"
    plain = PipelineController(name="numbered", project="tests", add_run_number=False)
    assert plain.task.name == "numbered"
    pipe.add_step("one", notebook=step("trivial"))
    run(pipe)
    first = pipe.id
    pipe.add_tags(["nightly"])
    assert "nightly" in pipe.tags
    run(pipe)
    assert pipe.id != first and pipe.task.name == "numbered #3", "a rerun keeps its number"
    assert "nightly" in pipe.tags, "a later run's Task has the tags too"
    assert pipe.task.record.runtime["pipeline"]["name"] == "numbered"


def test_a_retry_callback_that_raises_means_no_retry(home: Path) -> None:
    pipe = PipelineController(name="retry raises", project="tests")
    pipe.add_step("broken", notebook=step("maybe_fail"), retry_on_failure=lambda *a: 1 / 0)
    pipe.add_step("other", notebook=step("trivial"))
    dag = run(pipe)
    assert dag["broken"].status == "failed" and dag["broken"].retries == 0
    assert "asked to fail" in (dag["broken"].error or {})["reason"], "the step's own failure"
    assert dag["other"].status == "completed"


def reports_then_fails(x: int) -> int:
    from clearnb import Task

    Task.current_task().get_logger().report_scalar("loss", "train", value=0.25, iteration=1)
    raise RuntimeError(f"failed after reporting {x}")


def test_a_failed_step_s_monitored_metrics_reach_the_pipeline(home: Path) -> None:
    pipe = PipelineController(name="monitor failure", project="tests")
    pipe.add_function_step(
        "reports",
        reports_then_fails,
        function_kwargs={"x": 1},
        monitor_metrics=[(("loss", "train"), ("step loss", "reports"))],
    )
    dag = run(pipe)
    assert dag["reports"].status == "failed"
    scalars = Task.get_task(task_id=pipe.id).get_reported_scalars()
    assert scalars["step loss"]["reports"] == {"x": [1], "y": [0.25]}


class Opaque:
    """A value only pickle can store."""


def test_auto_pickle_false_refuses_what_only_pickle_stores(home: Path) -> None:
    pipe = PipelineController(name="uploads", project="tests")
    with pytest.raises(CodecError, match="auto_pickle=False refuses"):
        pipe.upload_artifact("opaque", Opaque(), auto_pickle=False)
    assert "opaque" not in pipe.task.artifacts
    assert pipe.upload_artifact("table", {"a": 1}, auto_pickle=False)
    assert pipe.upload_artifact(
        "opaque", Opaque(), auto_pickle=False, serialization_function=lambda v: b"x"
    )
    assert pipe.upload_artifact("pickled", Opaque())
    assert pipe.task.artifacts["pickled"].codec == "pickle"

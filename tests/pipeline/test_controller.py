"""PipelineController on real kernels: references, callbacks, failures, cache, resume."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController, Task
from clearnb.backend import Backend
from clearnb.errors import PipelineError
from clearnb.pipeline.node import Node
from tests.helpers import NOTEBOOKS, child_kernel_pids, wait_until, wait_until_gone

pytestmark = pytest.mark.timeout(240)

STEPS = NOTEBOOKS / "pipeline"


def step(name: str) -> str:
    return str(STEPS / f"{name}.ipynb")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path


def seed_pipeline(**options: Any) -> PipelineController:
    """The seed's three steps, with the seed's overrides."""
    pipe = PipelineController(name="pipeline demo", project="examples", version="0.0.1", **options)
    pipe.add_parameter("rows", 6, "rows of the dataset")
    pipe.add_step(
        name="stage_data",
        notebook=step("data_step"),
        parameter_override={"General/rows": "${pipeline.rows}"},
    )
    pipe.add_step(
        name="stage_process",
        parents=["stage_data"],
        notebook=step("process_step"),
        parameter_override={
            "General/dataset_url": "${stage_data.artifacts.dataset.url}",
            "General/test_size": 0.25,
        },
    )
    pipe.add_step(
        name="stage_train",
        parents=["stage_process"],
        notebook=step("train_step"),
        parameter_override={"General/dataset_task_id": "${stage_process.id}"},
    )
    return pipe


def run(pipe: PipelineController, **start: Any) -> dict[str, Node]:
    pipe.start(**start)
    pipe.wait()
    with contextlib.suppress(PipelineError):  # a failed pipeline is what some tests want
        pipe.stop()
    return pipe.get_pipeline_dag()


def test_references_pass_outputs_from_step_to_step(home: Path) -> None:
    pipe = seed_pipeline()
    dag = run(pipe)
    assert pipe.is_successful(), {n: d.error for n, d in dag.items()}
    assert [n.status for n in dag.values()] == ["completed"] * 3
    data = Task.get_task(task_id=dag["stage_data"].executed)
    process = Task.get_task(task_id=dag["stage_process"].executed)
    seen = process.artifacts["seen"].get()
    assert seen["dataset_url"] == data.artifacts["dataset"].url
    assert seen["test_size"] == 0.25 and seen["type"] == "float"
    train = Task.get_task(task_id=dag["stage_train"].executed)
    assert train.get_parameter("General/dataset_task_id") == process.id
    assert train.artifacts["total"].get() == sum(range(6))
    assert dag["stage_process"].resolved["General/dataset_url"] == data.artifacts["dataset"].url
    assert process.parent == pipe.id and process.runtime["pipeline_step"] == "stage_process"
    assert child_kernel_pids() == []


def test_the_pipeline_is_a_task_with_its_dag(home: Path) -> None:
    pipe = seed_pipeline()
    run(pipe)
    record = Backend.for_config().store.get_task(pipe.id)
    assert record.task_type == "controller" and record.status == "completed"
    assert record.parameters["Args"] == {"rows": 6}
    state = record.runtime["pipeline"]
    assert state["status"] == "completed" and state["order"] == [
        "stage_data",
        "stage_process",
        "stage_train",
    ]
    assert state["nodes"]["stage_process"]["parents"] == ["stage_data"]
    assert pipe.wait_for_picture(60)
    picture = Task.get_task(task_id=pipe.id).artifacts["pipeline_dag"]
    assert Path(picture.get_local_copy()).read_bytes().startswith(b"\x89PNG")


def test_a_reference_makes_a_parent(home: Path) -> None:
    pipe = PipelineController(name="auto parents", project="tests")
    pipe.add_step("a", notebook=step("data_step"))
    pipe.add_step(
        "b",
        notebook=step("process_step"),
        parameter_override={"General/dataset_url": "${a.artifacts.dataset.url}"},
    )
    assert pipe.get_pipeline_dag()["b"].parents == ["a"]


def test_callbacks_get_their_arguments_and_can_skip(home: Path) -> None:
    calls: list[tuple[Any, ...]] = []

    def before(pipeline: PipelineController, node: Node, params: dict[str, Any]) -> bool:
        calls.append(("pre", pipeline is pipe, node.name, dict(params)))
        return node.name != "stage_process"

    def after(pipeline: PipelineController, node: Node) -> None:
        calls.append(("post", node.name, node.status, node.executed is not None))

    def changed(pipeline: PipelineController, node: Node, previous: str) -> None:
        calls.append(("status", node.name, previous, node.status))

    pipe = seed_pipeline()
    for node in pipe.get_pipeline_dag().values():
        node.status_change_callback = changed
    created: list[str] = []
    dag = run(
        pipe,
        step_task_created_callback=before,
        step_task_completed_callback=lambda p, n: created.append(n.name),
    )
    assert ("pre", True, "stage_data", {"General/rows": 6}) in calls
    assert dag["stage_data"].status == "completed"
    assert dag["stage_process"].status == "skipped" and dag["stage_process"].skip_job
    assert dag["stage_train"].status == "skipped", "a skip reaches the steps below"
    assert created == ["stage_data"]
    transitions = [c[2:] for c in calls if c[0] == "status" and c[1] == "stage_data"]
    assert transitions == [("pending", "queued"), ("queued", "running"), ("running", "completed")]
    assert pipe.is_successful(), "a skip asked for by a callback is not a failure"

    pipe2 = seed_pipeline()
    pipe2.get_pipeline_dag()["stage_data"].post_execute_callback = after
    run(pipe2)
    assert ("post", "stage_data", "completed", True) in calls


def test_retries_count_and_a_callable_policy(home: Path, tmp_path: Path) -> None:
    pipe = PipelineController(name="retries", project="tests")
    pipe.add_step(
        "flaky",
        notebook=step("flaky"),
        parameter_override={"General/counter": str(tmp_path / "a"), "General/succeed_on": 3},
        retry_on_failure=2,
    )
    pipe.add_step(
        "gives_up",
        notebook=step("flaky"),
        parameter_override={"General/counter": str(tmp_path / "b"), "General/succeed_on": 5},
        retry_on_failure=lambda pipeline, node, retries: retries < 1,
    )
    dag = run(pipe)
    assert dag["flaky"].status == "completed" and dag["flaky"].retries == 2
    assert (tmp_path / "a").read_text() == "3"
    assert dag["gives_up"].status == "failed" and dag["gives_up"].retries == 1
    assert (tmp_path / "b").read_text() == "2"
    assert not pipe.is_successful()


def test_a_failure_skips_below_and_unrelated_branches_go_on(home: Path) -> None:
    pipe = PipelineController(name="failure", project="tests")
    pipe.add_step("broken", notebook=step("maybe_fail"))
    pipe.add_step("below", notebook=step("trivial"), parents=["broken"])
    pipe.add_step("further", notebook=step("trivial"), parents=["below"])
    pipe.add_step("unrelated", notebook=step("trivial"))
    pipe.add_step("after_unrelated", notebook=step("trivial"), parents=["unrelated"])
    dag = run(pipe)
    assert dag["broken"].status == "failed"
    assert dag["broken"].error is not None and "asked to fail" in dag["broken"].error["reason"]
    assert dag["below"].status == "skipped" and dag["further"].status == "skipped"
    assert dag["unrelated"].status == "completed"
    assert dag["after_unrelated"].status == "completed"
    assert pipe.status == "failed" and not pipe.is_successful()
    assert Backend.for_config().store.get_task(pipe.id).status == "failed"


def test_continue_on_fail_lets_children_run(home: Path) -> None:
    pipe = PipelineController(name="continue", project="tests")
    pipe.add_step("broken", notebook=step("maybe_fail"), continue_on_fail=True)
    pipe.add_step("child", notebook=step("trivial"), parents=["broken"])
    dag = run(pipe)
    assert dag["broken"].status == "failed" and dag["child"].status == "completed"
    assert pipe.is_successful(), "an allowed failure does not fail the pipeline"


def test_abort_on_failure_aborts_running_steps(home: Path) -> None:
    pipe = PipelineController(name="abort", project="tests", abort_on_failure=True, max_workers=2)
    pipe.add_step("slow", notebook=step("sleepy"), parameter_override={"General/seconds": 60})
    pipe.add_step(
        "broken",
        notebook=step("sleepy"),
        parameter_override={"General/seconds": "boom"},
    )
    with pytest.raises(PipelineError) as info:
        pipe.validate()
    assert "'boom' cannot be converted" in str(info.value)
    pipe = PipelineController(name="abort", project="tests", abort_on_failure=True, max_workers=2)
    pipe.add_step("slow", notebook=step("sleepy"), parameter_override={"General/seconds": 60})
    pipe.add_step("broken", notebook=step("maybe_fail"))
    pipe.add_step("after", notebook=step("trivial"), parents=["broken"])
    dag = run(pipe)
    assert dag["broken"].status == "failed"
    assert dag["slow"].status == "aborted"
    assert dag["slow"].elapsed is not None and dag["slow"].elapsed < 50
    assert dag["after"].status == "skipped"
    assert pipe.status == "failed"
    assert child_kernel_pids() == []


def in_last_cell(node: Node) -> bool:
    """True once ``node`` runs the last cell of its notebook (for sleepy: the sleep)."""
    cells = node.progress.get("cells")
    return node.status == "running" and cells is not None and node.progress.get("cell") == cells - 1


def test_stop_aborts_the_run(home: Path) -> None:
    pipe = PipelineController(name="stopped", project="tests")
    pipe.add_step("slow", notebook=step("sleepy"), parameter_override={"General/seconds": 60})
    pipe.add_step("after", notebook=step("trivial"), parents=["slow"])
    pipe.start()
    wait_until(
        lambda: in_last_cell(pipe.get_pipeline_dag()["slow"]), 120, "step slow to start sleeping"
    )
    kernels = child_kernel_pids()
    assert kernels, "the sleeping step runs on a kernel of this process"
    began = time.monotonic()
    pipe.stop()
    took = time.monotonic() - began
    dag = pipe.get_pipeline_dag()
    assert dag["slow"].status == "aborted" and dag["after"].status == "skipped"
    assert took < 30, f"stop() took {took:.1f} s: the 60 s step was not stopped at once"
    assert dag["slow"].elapsed is not None and dag["slow"].elapsed < 50
    assert pipe.status == "aborted"
    store = Backend.for_config().store
    assert store.get_task(pipe.id).status == "aborted"
    assert store.get_task(dag["slow"].executed or "").status == "aborted"
    assert [pid for pid in kernels if not wait_until_gone(pid, timeout=30)] == []
    assert child_kernel_pids() == [], "stop() leaves no kernel behind"


def chain(cache: bool = True) -> PipelineController:
    pipe = PipelineController(name="chain", project="tests")
    previous = None
    for index in range(3):
        overrides: dict[str, Any] = {"General/x": index}
        if previous:
            overrides["General/parent_id"] = "${" + previous + ".id}"
        pipe.add_step(
            f"s{index}",
            notebook=step("trivial"),
            parameter_override=overrides,
            cache_executed_step=cache,
        )
        previous = f"s{index}"
    return pipe


def started_runs() -> int:
    return len([e for e in Backend.for_config().store.get_events() if e.kind == "task_started"])


def test_a_cache_hit_starts_no_kernel_and_force_runs_again(home: Path) -> None:
    first = run(chain())
    ids = {name: node.executed for name, node in first.items()}
    runs = started_runs()
    again = chain()
    second = run(again)
    assert [n.status for n in second.values()] == ["cached"] * 3
    assert {name: node.executed for name, node in second.items()} == ids
    assert started_runs() == runs, "a cached step runs nothing"
    assert not again.kernels_started
    forced = run(chain(), force=True)
    assert [n.status for n in forced.values()] == ["completed"] * 3
    assert all(forced[name].executed != ids[name] for name in ids)
    assert started_runs() == runs + 3


def test_a_cached_run_whose_files_are_lost_or_altered_runs_again(home: Path) -> None:
    first = run(chain())
    store = Backend.for_config().store
    lost = store.get_artifacts(first["s1"].executed)
    assert lost, "the step stores its executed notebook at least"
    for record in lost.values():
        Path(record.url).unlink()
    altered = next(iter(store.get_artifacts(first["s0"].executed).values()))
    Path(altered.url).write_bytes(b"x" * altered.size)  # same size, other bytes
    again = run(chain())
    assert again["s0"].status == "completed" and again["s0"].executed != first["s0"].executed
    assert again["s1"].status == "completed" and again["s1"].executed != first["s1"].executed
    assert again["s2"].status in ("completed", "cached"), again["s2"].status
    third = run(chain())
    assert [n.status for n in third.values()] == ["cached"] * 3, "the new runs are reused"
    assert third["s1"].executed == again["s1"].executed


def test_a_changed_parameter_misses_the_cache(home: Path) -> None:
    run(chain())
    changed = chain()
    changed.get_pipeline_dag()["s1"].parameters["General/x"] = 10
    dag = run(changed)
    assert dag["s0"].status == "cached"
    assert dag["s1"].status == "completed"
    assert dag["s2"].status == "cached", "same inputs by content: the child stays cached"


def test_resume_runs_only_what_did_not_complete(home: Path) -> None:
    def pipeline(fail: bool) -> PipelineController:
        pipe = PipelineController(name="resumable", project="tests")
        pipe.add_step("first", notebook=step("trivial"))
        pipe.add_step(
            "second",
            notebook=step("maybe_fail"),
            parents=["first"],
            parameter_override={"General/fail": fail},
        )
        pipe.add_step("third", notebook=step("trivial"), parents=["second"])
        return pipe

    failed = run(pipeline(fail=True))
    assert [n.status for n in failed.values()] == ["completed", "failed", "skipped"]
    runs = started_runs()
    resumed = run(pipeline(fail=False), resume=True)
    assert resumed["first"].executed == failed["first"].executed, "completed steps are kept"
    assert resumed["second"].status == "completed" and resumed["third"].status == "completed"
    assert started_runs() == runs + 2


def bad_pipeline(home: Path, strict: bool) -> PipelineController:
    pipe = PipelineController(name="bad", project="tests", strict=strict)
    pipe.add_step("a", notebook=step("trivial"), parents=["ghost"])
    pipe.add_step("a", notebook=step("trivial"))
    pipe.add_step("b", notebook=step("trivial"), parents=["c"])
    pipe.add_step("c", notebook=step("trivial"), parents=["b"])
    pipe.add_step("d", notebook=step("trivial"), parameter_override={"General/nope": 1})
    pipe.add_step("e", notebook=step("trivial"), parameter_override={"General/x": "${zzz.id}"})
    pipe.add_step("f", base_task_project="tests", base_task_name="never registered")
    pipe.add_step("g", notebook=step("trivial"), parameter_override={"General/x": "${pipeline.q}"})
    pipe.add_step("h", notebook=str(home / "missing.ipynb"))
    return pipe


def test_validation_lists_every_problem(home: Path) -> None:
    # an undeclared override is set and warned about, as ClearML sets it; strict refuses it
    with pytest.raises(PipelineError) as info:
        bad_pipeline(home, strict=False).start()
    assert str(info.value).startswith("8 problems found")
    assert "'nope'" not in str(info.value)
    pipe = bad_pipeline(home, strict=True)
    with pytest.raises(PipelineError) as info:
        pipe.start()
    message = str(info.value)
    assert message.startswith("9 problems found")
    for expected in (
        "step 'a' is added more than once",
        "unknown parent 'ghost'",
        "cycle: b -> c -> b" if "b -> c -> b" in message else "cycle: c -> b -> c",
        "does not declare a parameter 'nope'; it declares: parent_id, x",
        "there is no step 'zzz'",
        "run the step notebook once",
        "no parameter 'q'",
        "Notebook not found",
    ):
        assert expected in message, expected
    assert not Backend.for_config().store.find_tasks(task_type="notebook")


def helper_offset() -> int:
    return 100


def make_numbers(count: int = 3) -> list[int]:
    return [index + helper_offset() for index in range(count)]


def summarize(numbers: list[int], scale: float = 1.0) -> tuple[float, int]:
    import statistics

    return statistics.mean(numbers) * scale, len(numbers)


def test_function_steps_pass_return_values(home: Path) -> None:
    pipe = PipelineController(name="functions", project="tests")
    pipe.add_function_step(
        "numbers",
        make_numbers,
        function_kwargs={"count": 4},
        function_return=["numbers"],
        helper_functions=[helper_offset],
    )
    pipe.add_function_step(
        "summary",
        summarize,
        function_kwargs={"numbers": "${numbers.numbers}", "scale": 2.0},
        function_return=["mean", "count"],
    )
    dag = run(pipe)
    assert dag["summary"].parents == ["numbers"]
    assert pipe.is_successful(), {n: d.error for n, d in dag.items()}
    summary = Task.get_task(task_id=dag["summary"].executed)
    assert summary.artifacts["mean"].get() == 203.0
    assert summary.artifacts["count"].get() == 4
    assert summary.get_parameter("kwargs/scale") == 2.0
    executed = Path(summary.artifacts["notebook"].get_local_copy()).read_text()
    assert "def summarize" in executed, "the step leaves a notebook a person can open"


def test_monitored_artifacts_and_metrics_reach_the_pipeline(home: Path) -> None:
    pipe = seed_pipeline()
    node = pipe.get_pipeline_dag()["stage_train"]
    node.monitor_artifacts = [("total", "train_total")]
    node.monitor_metrics = [("total", "train")]
    run(pipe)
    own = Task.get_task(task_id=pipe.id)
    assert own.artifacts["train_total"].get() == 15
    assert own.get_reported_scalars()["total"]["train"]["y"] == [15.0]


def test_a_pipeline_runs_inside_a_pipeline(home: Path) -> None:
    outer = PipelineController(name="outer", project="tests")
    outer.add_step("inner", notebook=step("inner_controller"))
    outer.add_step("after", notebook=step("trivial"), parents=["inner"])
    dag = run(outer)
    assert outer.is_successful(), {n: d.error for n, d in dag.items()}
    inner = Backend.for_config().store.get_task(dag["inner"].executed)
    assert inner.task_type == "controller"
    state = inner.runtime["pipeline"]
    assert state["status"] == "completed"
    assert [n["status"] for n in state["nodes"].values()] == ["completed", "completed"]
    steps = Backend.for_config().store.find_tasks(parent=inner.id)
    assert sorted(r.runtime["pipeline_step"] for r in steps) == ["one", "two"]


def test_template_steps_clone_the_template_with_its_values(home: Path) -> None:
    template = Task.create(
        project_name="examples", task_name="data template", notebook=step("data_step")
    )
    template.set_parameter("General/rows", 4)  # the template's own value, not the default 5
    pipe = PipelineController(name="from templates", project="examples")
    pipe.add_step("data", base_task_project="examples", base_task_name="data template")
    pipe.add_step(
        "process",
        base_task_id=Task.create(
            project_name="examples", task_name="process template", notebook=step("process_step")
        ).id,
        parameter_override={
            "General/dataset_url": "${data.artifacts.dataset.url}",
            "General/test_size": "${data.parameters.General/rows}",
        },
    )
    dag = run(pipe)
    assert pipe.is_successful(), {n: d.error for n, d in dag.items()}
    data = Task.get_task(task_id=dag["data"].executed)
    assert data.id != template.id and data.parent == pipe.id
    assert data.get_parameter("General/rows") == 4
    assert template.reload().status == "created", "the template itself never runs"
    seen = Task.get_task(task_id=dag["process"].executed).artifacts["seen"].get()
    assert seen["test_size"] == 4.0, "a step parameter reference, typed like the default"


def test_independent_steps_run_at_the_same_time_within_max_workers(home: Path) -> None:
    pipe = PipelineController(name="fan-out", project="tests", max_workers=2)
    for index in range(4):
        pipe.add_step(
            f"wait{index}", notebook=step("sleepy"), parameter_override={"General/seconds": 1.0}
        )
    dag = run(pipe)
    assert pipe.is_successful()
    store = Backend.for_config().store
    spans = [
        (store.get_task(node.executed).started, store.get_task(node.executed).completed)
        for node in dag.values()
    ]
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 2, f"expected two steps at a time, saw at most {most}"


OFFSET = 5


def uses_a_global(count: int) -> int:
    return count + OFFSET


def test_a_function_using_an_undefined_name_is_refused(home: Path) -> None:
    pipe = PipelineController(name="unbound", project="tests")
    pipe.add_function_step("bad", uses_a_global, function_kwargs={"count": 1})
    with pytest.raises(PipelineError, match=r"uses 'OFFSET', which it neither imports"):
        pipe.start()


def test_a_killed_controller_leaves_no_step_running(home: Path) -> None:
    import threading

    from clearnb.execution.runner import NotebookRunner, RunHandle

    handle = RunHandle()
    results: list[Task] = []
    with NotebookRunner(pool_size=0) as runner:
        worker = threading.Thread(
            target=lambda: results.append(runner.execute(step("slow_controller"), handle=handle))
        )
        worker.start()
        store = Backend.for_config().store

        def slow_runs() -> bool:
            running = store.find_tasks(status="running", task_type="notebook")
            return any(r.runtime.get("pipeline_step") == "slow" for r in running)

        wait_until(slow_runs, 120, "step slow to run in the controller notebook")
        handle.abort("killed by the test")
        worker.join(120)
    controller = results[0]
    assert controller.status == "aborted"
    state = store.get_task(controller.id).runtime["pipeline"]
    assert state["status"] == "aborted"
    assert state["nodes"]["quick"]["status"] == "completed"
    assert state["nodes"]["slow"]["status"] == "aborted"
    assert state["nodes"]["after"]["status"] == "skipped"
    steps = store.find_tasks(parent=controller.id)
    assert all(r.status != "running" for r in steps)
    deadline = time.monotonic() + 30
    while child_kernel_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child_kernel_pids() == []


def test_the_controller_api_reports_its_run(home: Path) -> None:
    pipe = seed_pipeline()
    seen_running: list[list[str]] = []
    pipe.add_listener(lambda event: seen_running.append([n.name for n in pipe.get_running_nodes()]))
    assert not pipe.is_running() and pipe.elapsed() == 0.0
    assert pipe.get_parameters() == {"rows": 6}
    pipe.start()
    assert pipe.status == "running" and pipe.is_running(), "a started run reports it runs"
    assert pipe.wait(timeout=3) is True  # minutes, as in ClearML (the test's limit is 240 s)
    assert not pipe.is_running() and pipe.is_successful()
    assert [n.name for n in pipe.get_processed_nodes()] == [
        "stage_data",
        "stage_process",
        "stage_train",
    ]
    assert pipe.get_running_nodes() == []
    assert ["stage_process"] in seen_running, "running steps are reported while they run"
    assert pipe.elapsed() > 0
    pipe.upload_artifact("summary", {"steps": 3})
    pipe.get_logger().report_scalar("pipeline", "steps", 3, iteration=0)
    own = Task.get_task(task_id=pipe.id)
    assert own.artifacts["summary"].get() == {"steps": 3}
    assert own.get_reported_scalars()["pipeline"]["steps"]["y"] == [3.0]
    node = pipe.get_pipeline_dag()["stage_train"]
    assert node.job is not None and node.job.task_id() == node.executed
    assert isinstance(node, PipelineController.Node)  # type: ignore[attr-defined]
    pipe.stop()


def test_run_one_step_run_from_a_step_and_retry_failed(home: Path, tmp_path: Path) -> None:
    pipe = PipelineController(name="partial runs", project="tests")
    pipe.add_step("a", notebook=step("trivial"))
    pipe.add_step(
        "b",
        notebook=step("flaky"),
        parents=["a"],
        parameter_override={"General/counter": str(tmp_path / "count"), "General/succeed_on": 2},
    )
    pipe.add_step("c", notebook=step("trivial"), parents=["b"])
    pipe.add_step("d", notebook=step("trivial"), parents=["a"])
    first = {n: (node.status, node.executed) for n, node in run(pipe).items()}
    assert [s for s, _ in first.values()] == ["completed", "failed", "skipped", "completed"]
    first_id = pipe.id

    def snapshot() -> dict[str, tuple[str, str | None]]:
        return {n: (node.status, node.executed) for n, node in pipe.get_pipeline_dag().items()}

    pipe.retry_failed(wait=True)
    retried = snapshot()
    assert pipe.id != first_id, "every run is its own Task"
    assert retried["a"] == first["a"] and retried["d"] == first["d"]
    assert retried["b"][0] == "completed" and retried["c"][0] == "completed"

    pipe.run_step("c", wait=True)
    only = snapshot()
    assert only["c"][0] == "completed" and only["c"][1] != retried["c"][1]
    assert only["b"] == retried["b"], "other steps come from the last run"

    pipe.run_from_step("b", wait=True)
    below = snapshot()
    assert below["b"][1] != only["b"][1] and below["c"][1] != only["c"][1]
    assert below["a"] == only["a"] and below["d"] == only["d"]
    history = Backend.for_config().store.find_tasks(task_type="controller", name="partial runs")
    assert len(history) == 4


def test_a_run_is_resumed_by_one_run_at_a_time(home: Path) -> None:
    def pipeline(second: str, **override: Any) -> PipelineController:
        pipe = PipelineController(name="resumed once", project="tests")
        pipe.add_step("first", notebook=step("trivial"))
        pipe.add_step(
            "second", notebook=step(second), parents=["first"], parameter_override=override
        )
        return pipe

    failed = pipeline("maybe_fail", **{"General/fail": True})
    run(failed)
    killed = failed.id
    first = pipeline("sleepy", **{"General/seconds": 120.0})
    first.start(resume=killed)
    try:
        wait_until(
            lambda: first.get_pipeline_dag()["second"].status == "running",
            60,
            "the first resume's step to run",
        )
        second = pipeline("maybe_fail", **{"General/fail": False})
        with pytest.raises(PipelineError) as info:
            second.start(resume=killed)
        message = str(info.value)
        assert f"run {killed} of pipeline 'resumed once' is being resumed already, by run " in (
            message
        )
        assert first.id in message and f"clearnb task abort {first.id}" in message
        assert second.get_pipeline_dag()["second"].status == "pending", "nothing ran"
        with pytest.raises(PipelineError, match="is still running"):
            pipeline("maybe_fail", **{"General/fail": False}).start(resume=True)
    finally:
        first.stop()
    assert first.status == "aborted"
    again = pipeline("maybe_fail", **{"General/fail": False})
    dag = run(again, resume=killed)
    assert [n.status for n in dag.values()] == ["completed", "completed"]
    assert dag["first"].executed == failed.get_pipeline_dag()["first"].executed


def picture_processes(task_id: str) -> list[int]:
    """Pids of the processes drawing the picture of pipeline run ``task_id``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().split(b"\0")
                if b"clearnb.pipeline.picture" in command and task_id.encode() in command:
                    found.append(int(entry.name))
    return found


def test_stop_returns_with_the_final_picture_stored(home: Path) -> None:
    pipe = chain(cache=False)
    pipe.start()
    pipe.wait()
    pipe.stop()
    store = Backend.for_config().store
    assert "pipeline_dag" in store.get_artifacts(pipe.id), "stored before stop() returns"
    assert picture_processes(pipe.id) == []


SCRIPT = """
import sys
from clearnb import PipelineController
pipe = PipelineController(name="script picture", project="tests")
pipe.add_step("a", notebook=sys.argv[1])
pipe.add_step("b", notebook=sys.argv[1], parents=["a"])
pipe.start()
pipe.wait()
print(pipe.id, flush=True)
"""


def test_a_script_that_ends_after_wait_leaves_no_drawing_behind(home: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(step("trivial"))],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "CLEARNB_HOME": str(home)},
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    assert picture_processes(run_id) == [], "the picture is drawn before the script ends"
    store = Backend.for_config().store
    assert "pipeline_dag" in store.get_artifacts(run_id)

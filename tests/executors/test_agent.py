"""Agents serving queues, as separate processes, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from clearnb import PipelineController, Task
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import ParameterError, PipelineError, TaskFailedError
from clearnb.executors.queue import QueueWarning, enqueue
from clearnb.status import COMPLETED, FAILED, QUEUED, SKIPPED
from tests.executors.agents import APPEND, Agents, agent_environ
from tests.helpers import wait_until_gone

pytestmark = pytest.mark.timeout(300)


@dataclass
class Team:
    """A store shared by this process and the agents a test starts."""

    backend: Backend
    env: dict[str, str]
    folder: Path

    def agents(self) -> Agents:
        return Agents(self.backend.store, self.env, self.folder)


def team_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str | None) -> Team:
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    if store_url is not None:
        monkeypatch.setenv("CLEARNB_STORE_URL", store_url)
    else:
        monkeypatch.delenv("CLEARNB_STORE_URL", raising=False)
    return Team(Backend.for_config(Config.from_env()), agent_environ(home, store_url), tmp_path)


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Team:
    """A SQLite store under a fresh CLEARNB_HOME."""
    return team_at(tmp_path, monkeypatch, None)


@pytest.fixture
def any_team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Team:
    """A fresh store on SQLite, then on PostgreSQL."""
    return team_at(tmp_path, monkeypatch, store_url)


def appended(side: Path) -> list[tuple[str, str, int]]:
    """The ``(label, task id, pid)`` lines the append notebook wrote."""
    if not side.exists():
        return []
    rows = [line.split() for line in side.read_text(encoding="utf-8").splitlines()]
    return [(label, task_id, int(pid)) for label, task_id, pid in rows]


def wait_for(condition: object, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def append_step(side: Path, label: str, **options: object) -> dict[str, object]:
    return {
        "notebook": str(APPEND),
        "parameter_override": {
            "General/side_file": str(side),
            "General/label": label,
            **{f"General/{k}": v for k, v in options.items()},
        },
    }


def finish(pipe: PipelineController) -> None:
    assert pipe.wait(timeout=4), "the pipeline ended"  # minutes: inside the tests' 300 s
    with contextlib.suppress(PipelineError):
        pipe.stop()


def test_a_pipeline_runs_each_step_once_on_an_agent_of_its_queue(any_team: Team) -> None:
    side = any_team.folder / "side.txt"
    store = any_team.backend.store
    with any_team.agents() as agents:
        agents.start("cpu-agent", ["cpu"])
        agents.start("gpu-agent", ["gpu"])
        pipe = PipelineController(
            name="two queues", project="queues", default_execution_queue="cpu"
        )
        pipe.add_step(name="prepare", **append_step(side, "prepare"))
        pipe.add_step(
            name="train", parents=["prepare"], execution_queue="gpu", **append_step(side, "train")
        )
        pipe.add_step(name="report", parents=["prepare"], **append_step(side, "report"))
        pipe.start()
        finish(pipe)
        output = agents.output()
    assert pipe.is_successful(), output
    assert not pipe.kernels_started, "no kernel was started in the controller's process"
    nodes = pipe.get_pipeline_dag()
    expected = {"prepare": "cpu", "train": "gpu", "report": "cpu"}
    for name, queue in expected.items():
        record = store.get_task(nodes[name].executed or "")
        assert record.status == "completed"
        assert record.queue == queue and record.runtime["agent"] == f"{queue}-agent"
        assert record.worker is None and record.lease_expires is None, "the lease is released"
        assert [e.kind for e in store.get_events(record.id)].count("task_started") == 1
    runs = appended(side)
    assert Counter(label for label, _, _ in runs) == dict.fromkeys(expected, 1)
    assert {task_id for _, task_id, _ in runs} == {nodes[n].executed for n in expected}
    assert os.getpid() not in {pid for _, _, pid in runs}


def total(numbers: list[int]) -> int:
    return sum(numbers) * 10


def test_a_pipeline_sent_to_the_services_queue_runs_on_an_agent(team: Team) -> None:
    side = team.folder / "side.txt"
    store = team.backend.store
    with team.agents() as agents:
        agents.start("services-agent", ["services"])
        agents.start("worker-agent", ["default"])
        pipe = PipelineController(
            name="remote controller", project="queues", default_execution_queue="default"
        )
        pipe.add_parameter("label", "first")
        pipe.add_step(
            name="first",
            notebook=str(APPEND),
            parameter_override={
                "General/side_file": str(side),
                "General/label": "${pipeline.label}",
            },
        )
        pipe.add_function_step(
            name="add_up",
            function=total,
            function_kwargs={"numbers": [1, 2, 3]},
            function_return=["total"],
            parents=["first"],
        )
        assert pipe.start(queue="services")
        assert pipe.status == QUEUED
        finish(pipe)
        output = agents.output()
    assert pipe.is_successful(), output
    controller = store.get_task(pipe.id)
    assert (controller.task_type, controller.status) == ("controller", "completed")
    assert controller.runtime["agent"] == "services-agent"
    assert controller.parameters["Args"] == {"label": "first"}
    nodes = pipe.get_pipeline_dag()
    assert {n.status for n in nodes.values()} == {COMPLETED}
    for node in nodes.values():
        record = store.get_task(node.executed or "")
        assert record.runtime["agent"] == "worker-agent" and record.parent == pipe.id
    assert nodes["add_up"].job is not None
    assert nodes["add_up"].job.task.artifacts["total"].get() == 60
    assert [label for label, _, _ in appended(side)] == ["first"]


def test_clone_enqueue_wait_and_decide_what_next(team: Team) -> None:
    side = team.folder / "side.txt"
    with team.agents() as agents:
        agents.start("agent", ["default"])
        template = Task.create(project_name="queues", task_name="append", notebook=APPEND)
        first = Task.clone(template, name="append a")
        first.set_parameters({"General/side_file": str(side), "General/label": "a"})
        assert Task.enqueue(first, queue_name="default")["queued"] == 1
        assert first.wait_for_status(check_interval_sec=0.05) is first
        assert first.status == "completed" and "notebook" in first.artifacts
        assert first.get_parameters()["General/label"] == "a"

        # the next task depends on what the first one did
        second = Task.clone(template, name="append b")
        runs = appended(side)
        label = f"after-{runs[0][0]}"
        second.set_parameters({"General/side_file": str(side), "General/label": label})
        Task.enqueue(second, queue_name="default")
        second.wait_for_status()

        broken = Task.clone(template, name="broken")
        broken.set_parameters({"General/side_file": str(team.folder), "General/label": "x"})
        Task.enqueue(broken, queue_name="default")
        with pytest.raises(TaskFailedError, match="IsADirectoryError"):
            broken.wait_for_status()
        output = agents.output()
    assert [label for label, _, _ in appended(side)] == ["a", "after-a"], output
    assert template.get_status() == "created", "the template itself never runs"
    assert "append a" in output and "completed" in output


def test_an_unknown_parameter_is_refused_before_queueing(team: Team) -> None:
    template = Task.create(project_name="queues", task_name="append", notebook=APPEND)
    clone = Task.clone(template)
    clone.set_parameters({"General/seconds": "soon"})
    with pytest.raises(ParameterError, match="seconds"):
        Task.enqueue(clone, queue_name="default")
    assert clone.get_status() == "created"
    assert team.backend.store.queued_tasks() == []


@pytest.mark.slow
@pytest.mark.timeout(900)  # 200 notebook runs on a loaded 2-core machine: minutes, not seconds
def test_200_tasks_on_4_agents_each_run_exactly_once(any_team: Team) -> None:
    side = any_team.folder / "side.txt"
    store = any_team.backend.store
    template = Task.create(project_name="bulk", task_name="append", notebook=APPEND)
    ids = []
    for index in range(200):
        clone = Task.clone(template, name=f"task {index}")
        clone.set_parameters({"General/side_file": str(side), "General/label": f"t{index}"})
        ids.append(clone.id)
    with any_team.agents() as agents:
        for number in range(4):
            agents.start(f"agent-{number}", ["bulk"])
        for task_id in ids:
            enqueue(any_team.backend, task_id, "bulk", warn=False)

        def all_done() -> bool:
            finished = store.find_tasks(project="bulk", status=["completed", "failed", "aborted"])
            return len(finished) >= len(ids)

        wait_for(all_done, timeout=840, what="200 tasks to finish")
        output = agents.output()
    records = {task_id: store.get_task(task_id) for task_id in ids}
    assert Counter(r.status for r in records.values()) == {"completed": 200}, output
    runs = appended(side)
    assert len(runs) == 200
    assert Counter(task_id for _, task_id, _ in runs) == dict.fromkeys(ids, 1)
    assert {label for label, _, _ in runs} == {f"t{i}" for i in range(200)}
    starts = Counter(e.task_id for e in store.get_events() if e.kind == "task_started")
    assert starts == dict.fromkeys(ids, 1)
    by_agent = Counter(r.runtime["agent"] for r in records.values())
    assert set(by_agent) <= {f"agent-{n}" for n in range(4)} and len(by_agent) >= 2


def test_a_killed_agent_loses_its_task_which_fails_with_the_reason(any_team: Team) -> None:
    side = any_team.folder / "side.txt"
    with any_team.agents() as agents:
        doomed = agents.start("doomed", ["fragile"], lease=2)
        template = Task.create(project_name="queues", task_name="append", notebook=APPEND)
        task = Task.clone(template, name="long")
        task.set_parameters(
            {"General/side_file": str(side), "General/label": "long", "General/seconds": 60.0}
        )
        Task.enqueue(task, queue_name="fragile")
        wait_for(lambda: appended(side), what="the kernel to run the task")
        (_, _, kernel_pid) = appended(side)[0]
        killed_at = time.monotonic()
        doomed.kill()
        with pytest.raises(TaskFailedError, match="doomed running it stopped responding"):
            task.wait_for_status(check_interval_sec=0.1)
        noticed = time.monotonic() - killed_at
        assert task.error is not None and task.error["ename"] == "LeaseExpired"
        assert noticed < 15, f"the lease of 2 s expired after {noticed:.1f} s"
        assert wait_until_gone(kernel_pid), "the dead agent's kernel does not live on"
    assert len(appended(side)) == 1, "the task was not run twice"


def test_a_pipeline_retries_a_step_lost_with_its_agent(team: Team) -> None:
    side = team.folder / "side.txt"
    store = team.backend.store
    with team.agents() as agents:
        doomed = agents.start("doomed", ["fragile"], workers=2, lease=2)
        pipe = PipelineController(name="lost steps", project="queues")
        pipe.add_step(
            name="retried",
            execution_queue="fragile",
            retry_on_failure=1,
            **append_step(side, "retried", seconds=60.0),
        )
        pipe.add_step(
            name="not_retried", execution_queue="fragile", **append_step(side, "lost", seconds=60.0)
        )
        pipe.add_step(
            name="after_retried",
            parents=["retried"],
            execution_queue="fragile",
            **append_step(side, "after"),
        )
        pipe.add_step(
            name="after_lost",
            parents=["not_retried"],
            execution_queue="fragile",
            **append_step(side, "never"),
        )
        pipe.start()
        wait_for(lambda: len(appended(side)) == 2, what="both long steps to run")
        doomed.kill()
        agents.start("backup", ["fragile"], lease=2)
        finish(pipe)
        output = agents.output()
    nodes = pipe.get_pipeline_dag()
    statuses = {name: node.status for name, node in nodes.items()}
    assert statuses == {
        "retried": COMPLETED,
        "not_retried": FAILED,
        "after_retried": COMPLETED,
        "after_lost": SKIPPED,
    }, output
    assert nodes["retried"].retries == 1
    assert "stopped responding" in (nodes["not_retried"].error or {}).get("reason", "")
    assert store.get_task(nodes["retried"].executed or "").runtime["agent"] == "backup"
    labels = Counter(label for label, _, _ in appended(side))
    assert labels == {"retried": 2, "lost": 1, "after": 1}
    assert pipe.status == FAILED


def test_abort_from_the_command_line_stops_the_kernel_on_the_agent(team: Team) -> None:
    side = team.folder / "side.txt"
    with team.agents() as agents:
        agents.start("agent", ["default"])
        template = Task.create(project_name="queues", task_name="append", notebook=APPEND)
        task = Task.clone(template, name="to abort")
        task.set_parameters(
            {"General/side_file": str(side), "General/label": "long", "General/seconds": 60.0}
        )
        Task.enqueue(task, queue_name="default")
        wait_for(lambda: appended(side), what="the kernel to run the task")
        (_, _, kernel_pid) = appended(side)[0]
        done = subprocess.run(
            [sys.executable, "-m", "clearnb", "task", "abort", task.id],
            env=team.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "asked agent agent to stop it" in done.stdout
        task.wait_for_status(raise_on_status=(), timeout=30)
        output = agents.output()
    assert task.status == "aborted", output
    assert "aborted from the command line" in str(task.error)
    assert wait_until_gone(kernel_pid)
    assert "stopping task" in output


def test_a_step_waiting_on_a_queue_nobody_serves_says_so(team: Team) -> None:
    pipe = PipelineController(name="unserved", project="queues")
    pipe.add_step(name="waiting", execution_queue="nobody", notebook=str(APPEND))
    with pytest.warns(QueueWarning, match="no agent serves queue 'nobody'"):
        pipe.start()
        wait_for(lambda: pipe.get_pipeline_dag()["waiting"].progress.get("waiting"))
    node = pipe.get_pipeline_dag()["waiting"]
    assert node.status == QUEUED
    assert "clearnb agent --queue nobody" in node.progress["waiting"]
    listed = subprocess.run(
        [sys.executable, "-m", "clearnb", "queue", "ls"],
        env=team.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "nobody" in listed.stdout and "no agent serves it" in listed.stdout
    with contextlib.suppress(PipelineError):
        pipe.stop()
    record = team.backend.store.get_task(node.executed or "")
    assert record.status == "aborted" and not team.backend.store.queued_tasks()


def test_execute_remotely_sends_an_interactive_notebook_to_an_agent(team: Team) -> None:
    from tests.test_interactive import HandKernel

    side = team.folder / "side.txt"
    step = APPEND.parent / "remote_step.ipynb"
    kernel = HandKernel(
        {**team.env, "JPY_SESSION_NAME": str(step)}, step.parent, team.folder / "kernel"
    )
    with team.agents() as agents:
        agents.start("agent", ["default"])
        try:
            kernel.run(
                "from clearnb import Task\n"
                "task = Task.init(project_name='queues', task_name='remote step')\n"
                f"args = {{'label': 'remote', 'side_file': {str(side)!r}}}\n"
                "task.connect(args)"
            )
            with pytest.raises(AssertionError, match="ExecutedRemotely") as failed:
                kernel.run("task.execute_remotely(queue_name='default')\nprint('still here')")
            assert "sent to queue 'default'" in str(failed.value)
            assert "still here" not in str(failed.value)
        finally:
            kernel.shutdown()
        task = Task.get_task(project_name="queues", task_name="remote step")
        task.wait_for_status()
        output = agents.output()
    assert task.runtime["agent"] == "agent", output
    assert appended(side) == [("remote", task.id, appended(side)[0][2])]
    assert task.get_parameters()["General/side_file"] == str(side)


DECORATED = """
import json
from clearnb import PipelineDecorator

@PipelineDecorator.component(return_values=["doubled"], execution_queue="gpu")
def double(x):
    return x * 2

@PipelineDecorator.component(return_values=["text"])
def describe(value):
    return f"value {value}"

@PipelineDecorator.pipeline(name="decorated", project="queues", default_queue="default")
def pipeline(x=21):
    return describe(double(x))

if __name__ == "__main__":
    print(json.dumps(pipeline()))
"""


def test_decorator_components_go_to_their_queues(team: Team) -> None:
    script = team.folder / "decorated.py"
    script.write_text(DECORATED, encoding="utf-8")
    store = team.backend.store
    with team.agents() as agents:
        agents.start("gpu-agent", ["gpu"])
        agents.start("default-agent", ["default"])
        done = subprocess.run(
            [sys.executable, str(script)],
            env=team.env,
            capture_output=True,
            text=True,
            timeout=240,
            cwd=team.folder,
        )
        output = agents.output()
    assert done.returncode == 0, done.stderr + output
    assert json.loads(done.stdout.strip().splitlines()[-1]) == "value 42"
    ran = {r.name: r.runtime.get("agent") for r in store.find_tasks(project="queues")}
    assert ran["double"] == "gpu-agent" and ran["describe"] == "default-agent"


def test_an_agent_runs_a_notebook_it_cannot_reach_from_the_artifact_storage(team: Team) -> None:
    side = team.folder / "side.txt"
    moving = team.folder / "elsewhere" / "moving.ipynb"
    moving.parent.mkdir()
    moving.write_bytes(APPEND.read_bytes())
    template = Task.create(project_name="queues", task_name="moving", notebook=moving)
    task = Task.clone(template)
    task.set_parameters({"General/side_file": str(side), "General/label": "shipped"})
    with pytest.warns(QueueWarning):
        Task.enqueue(task, queue_name="default")
    moving.unlink()  # as on an agent's machine, where this path does not exist
    with team.agents() as agents:
        agents.start("agent", ["default"])
        task.wait_for_status()
        output = agents.output()
    assert task.runtime["notebook_from"] == task.artifacts["source_notebook"].url, output
    assert task.notebook == str(moving), "the task still names its notebook"
    assert [label for label, _, _ in appended(side)] == ["shipped"]

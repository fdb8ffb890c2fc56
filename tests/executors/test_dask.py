"""Pipelines on a Dask cluster: real schedulers and worker processes on 127.0.0.1.

Clusters are a ``LocalCluster(processes=True)`` of two workers, or ``dask scheduler`` and
``dask worker`` processes (without a nanny, so that a killed worker stays dead). The store
is a SQLite file, and a PostgreSQL database where the test says so. Every test ends with
no kernel, worker or scheduler process left.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController, PipelineDecorator, Task
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import PipelineError
from clearnb.events import PipelineEvent
from clearnb.executors.queue import QueueWarning
from clearnb.pipeline.decorator import DecoratorSettings
from clearnb.status import ABORTED, COMPLETED, FAILED, SKIPPED
from tests.executors.agents import APPEND, agent_environ
from tests.executors.daskcluster import DaskProcesses, wait_for_no_leftovers
from tests.helpers import NOTEBOOKS, kernel_pids_of, require_module, wait_until, wait_until_gone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STEPS = NOTEBOOKS / "pipeline"
WORKER_DIED = re.compile(
    r"the Dask worker tcp://127\.0\.0\.1:\d+ died while running cell \d+ of \d+"
)


@dataclass
class Place:
    """A store shared by this process and the Dask workers a test starts."""

    backend: Backend
    env: dict[str, str]
    folder: Path
    home: Path

    def processes(self) -> DaskProcesses:
        return DaskProcesses(self.env, self.folder)


def place_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str | None) -> Place:
    require_module("distributed", "dask")
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    monkeypatch.delenv("CLEARNB_EXECUTOR", raising=False)
    if store_url is not None:
        monkeypatch.setenv("CLEARNB_STORE_URL", store_url)
    else:
        monkeypatch.delenv("CLEARNB_STORE_URL", raising=False)
    backend = Backend.for_config(Config.from_env())
    return Place(backend, agent_environ(home, store_url), tmp_path, home)


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    """A SQLite store under a fresh CLEARNB_HOME; nothing of Dask left afterwards."""
    found = place_at(tmp_path, monkeypatch, None)
    yield found
    assert_nothing_left(found)


@pytest.fixture
def any_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Iterator[Place]:
    """A fresh store on SQLite, then on PostgreSQL; nothing of Dask left afterwards."""
    found = place_at(tmp_path, monkeypatch, store_url)
    yield found
    assert_nothing_left(found)


def assert_nothing_left(place: Place) -> None:
    left = wait_for_no_leftovers(timeout=30)
    assert left == [], f"processes left: {left}"
    kernels = wait_until_kernels_gone(place.home)
    assert kernels == [], f"kernels left: {kernels}"


def wait_until_kernels_gone(home: Path, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := kernel_pids_of(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


@contextlib.contextmanager
def local_cluster(threads_per_worker: int = 1) -> Iterator[Any]:
    """Two worker processes (each with a nanny) and a scheduler in this process."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        processes=True,
        n_workers=2,
        threads_per_worker=threads_per_worker,
        dashboard_address=":0",
        host="127.0.0.1",
    )
    try:
        yield cluster
    finally:
        cluster.close(timeout=60)


def worker_addresses(cluster: Any) -> set[str]:
    return set(cluster.scheduler_info["workers"])


def seed_pipeline(**options: Any) -> PipelineController:
    """The seed's three steps (data, process, train), each reading its parent's output."""
    pipe = PipelineController(name="seed on dask", project="dask", version="0.0.1", **options)
    pipe.add_parameter("rows", 6)
    pipe.add_step(
        name="stage_data",
        notebook=str(STEPS / "data_step.ipynb"),
        parameter_override={"General/rows": "${pipeline.rows}"},
    )
    pipe.add_step(
        name="stage_process",
        parents=["stage_data"],
        notebook=str(STEPS / "process_step.ipynb"),
        parameter_override={
            "General/dataset_url": "${stage_data.artifacts.dataset.url}",
            "General/test_size": 0.25,
        },
    )
    pipe.add_step(
        name="stage_train",
        parents=["stage_process"],
        notebook=str(STEPS / "train_step.ipynb"),
        parameter_override={"General/dataset_task_id": "${stage_process.id}"},
    )
    return pipe


def append_step(side: Path, label: str, seconds: float = 0.0) -> dict[str, Any]:
    """A step that appends ``label task-id kernel-pid`` to ``side`` (sleeping ``seconds``
    the first time ``label`` runs)."""
    return {
        "notebook": str(APPEND),
        "parameter_override": {
            "General/side_file": str(side),
            "General/label": label,
            "General/seconds": seconds,
        },
    }


def appended(side: Path) -> list[tuple[str, str, int]]:
    """The ``(label, task id, kernel pid)`` lines the append notebook wrote."""
    if not side.exists():
        return []
    rows = [line.split() for line in side.read_text(encoding="utf-8").splitlines()]
    return [(label, task_id, int(pid)) for label, task_id, pid in rows]


def finish(pipe: PipelineController, minutes: float = 3.0) -> None:
    assert pipe.wait(timeout=minutes), "the pipeline ended"
    with contextlib.suppress(PipelineError):
        pipe.stop()


def test_the_seed_pipeline_runs_on_two_workers(any_place: Place) -> None:
    store = any_place.backend.store
    with local_cluster() as cluster:
        workers = worker_addresses(cluster)
        pipe = seed_pipeline(executor=cluster)
        pipe.start()
        finish(pipe)
        dag = pipe.get_pipeline_dag()
        assert pipe.is_successful(), {name: node.error for name, node in dag.items()}
        assert not pipe.kernels_started, "no kernel was started in the controller's process"
        train = Task.get_task(task_id=dag["stage_train"].executed)
        assert train.artifacts["total"].get() == sum(range(6)), "outputs went step to step"
        for name, node in dag.items():
            record = store.get_task(node.executed or "")
            assert record.status == COMPLETED and record.parent == pipe.id
            assert record.runtime["dask_worker"] in workers, name
            assert record.runtime["kernel_pid"] not in (None, record.runtime["worker_pid"])
            assert record.runtime["executor"] == f"dask://{cluster.scheduler_address[6:]}"
            assert record.worker is None and record.lease_expires is None, "lease released"
            starts = [e for e in store.get_events(record.id) if e.kind == "task_started"]
            assert len(starts) == 1, f"{name} ran once"
        facts = store.get_task(pipe.id).runtime["executor"]
        assert facts["kind"] == "dask" and facts["scheduler"] == cluster.scheduler_address
        assert facts["dashboard"] == pipe.dashboard_link == cluster.dashboard_link
        from clearnb.widgets.controller import PipelineWidget

        widget = PipelineWidget(pipe)
        try:
            assert f"href='{cluster.dashboard_link}'" in widget.title.value
        finally:
            widget.close()


def test_an_eight_way_fan_out_runs_on_both_workers(place: Place) -> None:
    side = place.folder / "side.txt"
    store = place.backend.store
    from distributed import Client

    with local_cluster(threads_per_worker=2) as cluster, Client(cluster) as client:
        workers = worker_addresses(cluster)
        pipe = PipelineController(name="fan out", project="dask", executor=client, max_workers=4)
        pipe.add_step(name="root", **append_step(side, "root"))
        for n in range(8):
            pipe.add_step(name=f"leaf{n}", parents=["root"], **append_step(side, f"leaf{n}", 1.0))
        pipe.start()
        finish(pipe)
    assert pipe.is_successful()
    records = [store.get_task(node.executed or "") for node in pipe.get_pipeline_dag().values()]
    leaves = [r for r in records if r.name.startswith("leaf")]
    assert {r.runtime["dask_worker"] for r in leaves} == workers, "both workers ran leaves"
    kernels = {r.runtime["kernel_pid"] for r in records}
    assert len(kernels) == 9, "a kernel of its own for every step"
    runs = appended(side)
    assert Counter(label for label, _, _ in runs) == {r.name: 1 for r in records}
    assert {pid for _, _, pid in runs} == kernels, "the recorded kernel is the one that ran"
    assert {r.runtime["worker_pid"] for r in records}.isdisjoint(kernels)
    overlapping = max(
        sum(1 for other in leaves if other.started < leaf.completed < other.completed)  # type: ignore[operator]
        for leaf in leaves
    )
    assert overlapping >= 1, "leaves ran at the same time"


def test_a_worker_killed_mid_step_fails_it_and_the_retry_completes_on_the_other(
    any_place: Place,
) -> None:
    side = any_place.folder / "side.txt"
    store = any_place.backend.store
    with any_place.processes() as dask:
        address = dask.start_scheduler()
        started = {name: dask.start_worker(name) for name in ("w1", "w2")}
        pipe = PipelineController(
            name="killed worker", project="dask", executor=f"dask://{address[6:]}"
        )
        pipe.add_step(name="doomed", retry_on_failure=1, **append_step(side, "doomed", 120.0))
        pipe.add_step(name="after", parents=["doomed"], **append_step(side, "after"))
        pipe.start()
        first_task = wait_until(lambda: appended(side), 120, "the first attempt to run")[0][1]
        first = store.get_task(first_task)
        victim = next(w for w in started.values() if w.pid == first.runtime["worker_pid"])
        victim.kill()
        finish(pipe)
        output = dask.output()
    assert pipe.is_successful(), output
    node = pipe.get_pipeline_dag()["doomed"]
    assert node.status == COMPLETED and node.job is not None
    assert node.job.task.id != first_task
    lost = store.get_task(first_task)
    assert lost.status == FAILED and lost.error is not None
    assert WORKER_DIED.fullmatch(lost.error["reason"]), lost.error
    assert lost.error["reason"].startswith(f"the Dask worker {first.runtime['dask_worker']} ")
    retried = store.get_task(node.executed or "")
    assert retried.runtime["dask_worker"] != first.runtime["dask_worker"], "run on the other"
    runs = appended(side)
    attempts = [task_id for label, task_id, _ in runs if label == "doomed"]
    assert attempts == [first_task, retried.id], "once per attempt, one after the other"
    assert lost.completed is not None and retried.started is not None
    assert retried.started >= lost.completed, "never two attempts at once"
    for task_id in attempts:
        starts = [e for e in store.get_events(task_id) if e.kind == "task_started"]
        assert len(starts) == 1
    assert wait_until_gone(runs[0][2]), "the dead worker's kernel does not live on"


def test_a_step_needing_a_resource_runs_on_the_worker_that_has_it(place: Place) -> None:
    side = place.folder / "side.txt"
    store = place.backend.store
    with place.processes() as dask:
        address = dask.start_scheduler()
        dask.start_worker("plain", nthreads=2)
        dask.start_worker("gpu", resources="gpu=1")
        pipe = PipelineController(
            name="resources", project="dask", executor=f"dask://{address[6:]}"
        )
        pipe.add_step(name="prepare", **append_step(side, "prepare"))
        pipe.add_step(
            name="train", parents=["prepare"], execution_queue="gpu", **append_step(side, "train")
        )
        pipe.add_step(name="report", parents=["prepare"], **append_step(side, "report"))
        pipe.add_step(
            name="tpu_only", parents=["prepare"], execution_queue="tpu", **append_step(side, "tpu")
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", QueueWarning)
            pipe.start()
            waiting = wait_until(
                lambda: pipe.get_pipeline_dag()["tpu_only"].progress.get("waiting"),
                120,
                "the tpu step to say it waits",
            )
            assert "no Dask worker has the resource 'tpu'" in waiting
            assert "--resources tpu=1" in waiting
            assert pipe.get_pipeline_dag()["tpu_only"].status == "queued"
            wait_until(
                lambda: pipe.get_pipeline_dag()["train"].status == COMPLETED,
                120,
                "the gpu step to complete meanwhile",
            )
        assert any("tpu" in str(w.message) and w.category is QueueWarning for w in caught)
        dask.start_worker("tpu", resources="tpu=1")
        finish(pipe)
        output = dask.output()
        from distributed import Client

        with Client(address, set_as_default=False) as client:
            names = {
                a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            }
    assert pipe.is_successful(), output
    dag = pipe.get_pipeline_dag()
    ran_on = {
        name: names[store.get_task(dag[name].executed or "").runtime["dask_worker"]] for name in dag
    }
    assert ran_on["train"] == "gpu" and ran_on["tpu_only"] == "tpu"
    assert ran_on["prepare"] != "tpu"
    assert store.get_task(dag["train"].executed or "").runtime["dask_resource"] == "gpu"


@PipelineDecorator.component(return_values=["doubled"])
def double(value: int) -> int:
    return value * 2


@PipelineDecorator.component(return_values=["total"])
def add(first: int, second: int) -> int:
    return first + second


def test_a_decorated_pipeline_runs_on_dask(place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PipelineDecorator, "settings", DecoratorSettings())  # components as Tasks
    store = place.backend.store
    with local_cluster() as cluster:
        workers = worker_addresses(cluster)

        @PipelineDecorator.pipeline(name="decorated", project="dask", version="1", executor=cluster)
        def flow(start: int = 3) -> int:
            return add(double(start), double(start + 1))  # type: ignore[no-any-return]

        assert flow(5) == 22
    (run,) = store.find_tasks(task_type="controller", project="dask")
    steps = [r for r in store.find_tasks(parent=run.id) if r.task_type != "controller"]
    assert len(steps) == 3 and {r.status for r in steps} == {COMPLETED}
    assert {r.runtime["dask_worker"] for r in steps} <= workers
    assert all(r.runtime.get("kernel_pid") for r in steps)


def test_abort_stops_the_kernels_on_the_workers(place: Place) -> None:
    side = place.folder / "side.txt"
    store = place.backend.store
    with local_cluster() as cluster:
        pipe = PipelineController(name="aborted", project="dask", executor=cluster)
        pipe.add_step(name="long1", **append_step(side, "long1", 300.0))
        pipe.add_step(name="long2", **append_step(side, "long2", 300.0))
        pipe.add_step(name="after", parents=["long1"], **append_step(side, "after"))
        pipe.start()
        runs = wait_until(lambda: len(appended(side)) == 2 and appended(side), 120, "both to run")
        asked = time.monotonic()
        pipe.abort("the test stops it")
        finish(pipe, minutes=1)
        took = time.monotonic() - asked
        for _, _, kernel in runs:
            assert wait_until_gone(kernel, 15), "the kernel on the worker was stopped"
        dag = pipe.get_pipeline_dag()
    assert took < 30, f"the abort took {took:.1f} s"
    assert pipe.status == ABORTED
    assert dag["after"].status == SKIPPED
    for name in ("long1", "long2"):
        assert dag[name].status == ABORTED
        record = store.get_task(dag[name].executed or "")
        assert record.status == ABORTED and "the test stops it" in (record.error or {})["reason"]
    assert [label for label, _, _ in appended(side)].count("after") == 0


def test_live_events_reach_a_listener_while_steps_run_on_workers(place: Place) -> None:
    store = place.backend.store
    seen: list[tuple[float, PipelineEvent]] = []
    lock = threading.Lock()

    def listen(event: PipelineEvent) -> None:
        with lock:
            seen.append((time.time(), event))

    with place.processes() as dask:
        address = dask.start_scheduler()
        dask.start_worker("w1")
        dask.start_worker("w2")
        pipe = PipelineController(name="live", project="dask", executor=f"dask://{address[6:]}")
        for name in ("slow1", "slow2"):
            pipe.add_step(name=name, notebook=str(NOTEBOOKS / "dask" / "cells.ipynb"))
        pipe.add_listener(listen)
        pipe.start()
        finish(pipe)
        output = dask.output()
    assert pipe.is_successful(), output
    for name, node in pipe.get_pipeline_dag().items():
        record = store.get_task(node.executed or "")
        assert record.started is not None and record.completed is not None
        mine = [(when, event) for when, event in seen if event.step == name]
        running = [when for when, e in mine if e.kind == "step_status" and e.status == "running"]
        cells = [
            (when, e.payload)
            for when, e in mine
            if e.kind == "step_progress" and "cell" in e.payload
        ]
        assert running and running[0] < record.completed, f"{name}: running told while it ran"
        assert cells, f"{name}: cell progress told"
        assert any(when < record.completed for when, _ in cells), "progress came while it ran"
        assert all(progress["cells"] >= progress["cell"] + 1 for _, progress in cells)
        assert len({progress["cell"] for _, progress in cells}) >= 3, "cell by cell"


def test_a_lost_scheduler_fails_the_running_step_and_the_run_resumes(place: Place) -> None:
    side = place.folder / "side.txt"

    def chain(address: str) -> PipelineController:
        pipe = PipelineController(
            name="lost scheduler", project="dask", executor=f"dask://{address[6:]}"
        )
        pipe.add_step(name="first", **append_step(side, "first"))
        pipe.add_step(name="second", parents=["first"], **append_step(side, "second", 300.0))
        pipe.add_step(name="third", parents=["second"], **append_step(side, "third"))
        return pipe

    with place.processes() as dask:
        pipe = chain(dask.start_scheduler())
        dask.start_worker("w1")
        pipe.start()
        wait_until(lambda: [r for r in appended(side) if r[0] == "second"], 120, "second to run")
        assert dask.scheduler is not None
        dask.scheduler.kill()
        finish(pipe, minutes=2)
        dag = pipe.get_pipeline_dag()
        assert pipe.status == FAILED
        assert dag["first"].status == COMPLETED
        assert dag["second"].status == FAILED and "scheduler" in str(dag["second"].error)
        assert dag["third"].status == SKIPPED
        kernel = next(pid for label, _, pid in appended(side) if label == "second")
        assert wait_until_gone(kernel, 30), "the kernel of the lost step was stopped"

        again = chain(dask.start_scheduler())
        dask.start_worker("w2")
        again.start(resume=True)
        finish(again)
        output = dask.output()
    assert again.is_successful(), output
    labels = Counter(label for label, _, _ in appended(side))
    assert labels == {"first": 1, "second": 2, "third": 1}, "the completed step was not repeated"
    assert again.get_pipeline_dag()["first"].executed == dag["first"].executed


def test_a_sqlite_store_is_refused_for_a_worker_on_another_host(place: Place) -> None:
    import subprocess

    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        from tests.helpers import skip_or_fail_in_ci

        skip_or_fail_in_ci("unshare --uts is not permitted here: no second host name to try")
    side = place.folder / "side.txt"
    with place.processes() as dask:
        address = dask.start_scheduler()
        dask.start_worker("far", hostname="elsewhere")
        from distributed import Client

        with Client(address, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
        pipe = PipelineController(name="far away", project="dask", executor=f"dask://{address[6:]}")
        pipe.add_step(name="step", **append_step(side, "step"))
        pipe.start()
        finish(pipe)
    node = pipe.get_pipeline_dag()["step"]
    assert node.status == FAILED
    reason = str((node.error or {}).get("reason"))
    assert "SQLite file" in reason and "worker on elsewhere" in reason, reason
    assert "CLEARNB_STORE_URL" in reason and "PostgreSQL" in reason
    assert appended(side) == [], "nothing ran"


def test_clearnb_run_sends_the_pipeline_steps_to_dask(place: Place) -> None:
    from tests.test_cli import clearnb

    store = place.backend.store
    with place.processes() as dask:
        address = dask.start_scheduler()
        dask.start_worker("w1", nthreads=2)
        controller = STEPS / "inner_controller.ipynb"
        result = clearnb(place.home, "run", str(controller), "--executor", f"dask://{address[6:]}")
        output = dask.output()
    assert result.returncode == 0, result.output + output
    steps = {r.name: r for r in store.find_tasks(project="tests") if r.task_type != "controller"}
    assert {"one", "two"} <= set(steps), result.output
    for name in ("one", "two"):
        assert steps[name].status == COMPLETED
        assert steps[name].runtime["dask_worker"].startswith("tcp://127.0.0.1:")
        assert steps[name].runtime["executor"] == f"dask://{address[6:]}"

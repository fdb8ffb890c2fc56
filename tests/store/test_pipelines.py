"""The stored run document of a pipeline: reading, writing, finding runs, settling a run
whose controller is gone (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController
from clearnb.config import Config
from clearnb.processes import controller_gone, controller_identity, start_time
from clearnb.status import ABORTED, COMPLETED, FAILED, PENDING, RUNNING, SKIPPED
from clearnb.store import Store, TaskRecord, open_store
from clearnb.store.pipelines import (
    CONTROLLER_KEY,
    RUN_KEYS,
    STEP_KEYS,
    find_runs,
    recover,
    run_document,
    settle,
    update_run,
    write_run,
)
from tests.helpers import NOTEBOOKS

ROUNDS = 20


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


def document(
    name: str = "pipe", status: str = RUNNING, /, **nodes: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "project": "proj",
        "version": "1.0",
        "status": status,
        "started": 100.0,
        "ended": None,
        "order": list(nodes),
        "nodes": {step: {"name": step, "parents": [], **entry} for step, entry in nodes.items()},
    }


def controller_task(store: Store, runtime: dict[str, Any] | None = None, **fields: Any) -> str:
    values: dict[str, Any] = {"project": "proj", "name": "pipe", "task_type": "controller"}
    values.update(fields)
    return store.create_task(TaskRecord(runtime=runtime or {}, **values)).id


def dead_process() -> dict[str, Any]:
    """The identity of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    identity = {"host": socket.gethostname(), "pid": child.pid, "since": start_time(child.pid)}
    child.wait()
    return identity


def test_keys_are_declared_once() -> None:
    assert len(set(RUN_KEYS)) == len(RUN_KEYS) and CONTROLLER_KEY in RUN_KEYS
    assert {"name", "status", "started", "ended", "order", "nodes"} <= set(RUN_KEYS)
    assert len(set(STEP_KEYS)) == len(STEP_KEYS)
    assert {"status", "executed", "error", "parents", "progress"} <= set(STEP_KEYS)


def test_what_a_controller_stores_has_only_declared_keys(tmp_path: Path) -> None:
    pipe = PipelineController(name="keys", project="proj", config=Config.at(tmp_path))
    pipe.add_step("step", notebook=str(NOTEBOOKS / "pipeline" / "trivial.ipynb"))
    state = pipe.state()
    assert set(state) <= set(RUN_KEYS)
    assert set(state["nodes"]["step"]) == set(STEP_KEYS)


def test_a_document_round_trips_and_other_runtime_keys_are_kept(store: Store) -> None:
    task_id = controller_task(store, runtime={"kernel_pid": 7})
    assert run_document(store.get_task(task_id)) is None
    written = {
        **document(split={"status": COMPLETED, "executed": "t" * 32, "progress": {}}),
        CONTROLLER_KEY: controller_identity(),
    }
    write_run(store, task_id, written)
    record = store.get_task(task_id)
    assert run_document(record) == written
    assert record.runtime["kernel_pid"] == 7
    write_run(store, task_id, document("again"))
    assert run_document(store.get_task(task_id)) == document("again")


def test_a_task_without_a_document_is_not_a_run(store: Store) -> None:
    assert run_document(TaskRecord("proj", "step")) is None
    assert run_document(TaskRecord("proj", "step", runtime={"pipeline": {}})) is None
    assert run_document(TaskRecord("proj", "step", runtime={"pipeline": "text"})) is None
    task_id = controller_task(store, runtime={"other": 1})
    assert update_run(store, task_id, lambda doc: doc.update(status=FAILED)) is None
    assert store.get_task(task_id).runtime == {"other": 1}


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({**document(), "colour": "red"}, "'colour'"),
        (document(split={"status": RUNNING, "weight": 3}), "'weight' in the entry of step 'split'"),
        ({**document(), "nodes": ["split"]}, "a dict by step name"),
        ({**document(), "nodes": {"split": "running"}}, "entry of step 'split' in"),
    ],
)
def test_unknown_keys_are_refused(store: Store, bad: dict[str, Any], named: str) -> None:
    task_id = controller_task(store, runtime={"pipeline": document()})
    with pytest.raises(ValueError, match=named):
        write_run(store, task_id, bad)
    with pytest.raises(ValueError, match=named):
        update_run(store, task_id, lambda doc: doc.update(bad))
    assert run_document(store.get_task(task_id)) == document()


def test_update_run_changes_the_document_and_returns_it(store: Store) -> None:
    task_id = controller_task(store, runtime={"pipeline": document(split={"status": RUNNING})})

    def finish(doc: dict[str, Any]) -> None:
        doc["status"] = COMPLETED
        doc["nodes"]["split"]["status"] = COMPLETED

    changed = update_run(store, task_id, finish)
    assert changed is not None
    assert changed["status"] == COMPLETED and changed["nodes"]["split"]["status"] == COMPLETED
    assert run_document(store.get_task(task_id)) == changed


def test_update_run_is_atomic_against_concurrent_writers(store_url: str, store: Store) -> None:
    """Two writers of the document and one of another runtime key, each with its own Store,
    at once: no change is lost."""
    task_id = controller_task(store, runtime={"pipeline": document()})

    def add_steps(prefix: str) -> Callable[[], None]:
        def job() -> None:
            with open_store(store_url) as own:
                for number in range(ROUNDS):

                    def add(doc: dict[str, Any], step: str = f"{prefix}{number}") -> None:
                        time.sleep(0.002)  # hold the transaction: the others must wait
                        doc["order"].append(step)
                        doc["nodes"][step] = {"status": PENDING}

                    update_run(own, task_id, add)

        return job

    def count() -> None:
        with open_store(store_url) as own:
            for _ in range(ROUNDS):
                own.update_runtime(task_id, "count", lambda value: (value or 0) + 1)

    threads = [threading.Thread(target=job) for job in (add_steps("a"), add_steps("b"), count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    record = store.get_task(task_id)
    stored = run_document(record)
    assert stored is not None
    expected = {f"{prefix}{number}" for prefix in "ab" for number in range(ROUNDS)}
    assert set(stored["order"]) == expected and len(stored["order"]) == 2 * ROUNDS
    assert set(stored["nodes"]) == expected
    assert record.runtime["count"] == ROUNDS


def test_find_runs_filters_and_orders_newest_first(store: Store) -> None:
    now = time.time()
    old = controller_task(store, runtime={"pipeline": document("etl")}, created=now - 50)
    new = controller_task(store, runtime={"pipeline": document("etl")}, created=now - 10)
    other = controller_task(store, runtime={"pipeline": document("train")}, created=now - 20)
    away = controller_task(
        store, runtime={"pipeline": document("etl")}, project="away", created=now - 5
    )
    controller_task(store, created=now - 1)  # a controller Task that holds no run yet
    store.create_task(TaskRecord("proj", "etl", runtime={"pipeline": document("etl")}))

    def ids(runs: list[TaskRecord]) -> list[str]:
        return [run.id for run in runs]

    assert ids(find_runs(store)) == [away, new, other, old]
    assert ids(find_runs(store, project="proj")) == [new, other, old]
    assert ids(find_runs(store, name="etl")) == [away, new, old]
    assert ids(find_runs(store, project="proj", name="etl")) == [new, old]
    assert ids(find_runs(store, project="proj", name="etl", exclude=new)) == [old]
    assert ids(find_runs(store, limit=2)) == [away, new]
    assert find_runs(store, limit=0) == []
    assert find_runs(store, name="nothing") == []
    with pytest.raises(ValueError, match="limit"):
        find_runs(store, limit=-1)


def test_find_runs_looks_past_many_newer_tasks(store: Store) -> None:
    now = time.time()
    wanted = controller_task(store, runtime={"pipeline": document("rare")}, created=now - 100)
    for number in range(45):
        controller_task(store, runtime={"pipeline": document("busy")}, created=now - number)
    assert [run.id for run in find_runs(store, name="rare", limit=1)] == [wanted]


def test_settle_ends_every_unfinished_step(store: Store) -> None:
    nodes: dict[str, dict[str, Any]] = {
        "done": {"status": RUNNING, "executed": "d" * 32},
        "cut": {"status": RUNNING, "executed": "c" * 32},
        "waiting": {"status": PENDING},
        "failed": {"status": FAILED, "ended": 5.0, "error": {"reason": "its own"}},
        "agent": {"status": RUNNING, "executed": "a" * 32},
    }
    pipe = controller_task(store, runtime={"pipeline": document(**nodes)}, status="running")
    store.create_task(TaskRecord("proj", "done", id="d" * 32, status="completed", parent=pipe))
    store.create_task(TaskRecord("proj", "cut", id="c" * 32, status="running", parent=pipe))
    store.create_task(
        TaskRecord("proj", "agent", id="a" * 32, status="running", parent=pipe, worker="host:1")
    )

    assert settle(store, pipe, "the controller stopped")
    settled = run_document(store.get_task(pipe))
    assert settled is not None
    assert settled["status"] == ABORTED and settled["ended"] is not None
    steps = settled["nodes"]
    assert steps["done"]["status"] == COMPLETED and steps["done"]["error"] is None
    assert steps["cut"]["status"] == ABORTED
    assert steps["cut"]["error"] == {"reason": "the controller stopped"}
    assert steps["waiting"]["status"] == SKIPPED and steps["waiting"]["ended"] is not None
    assert steps["failed"] == {"name": "failed", "parents": [], **nodes["failed"]}
    assert steps["agent"]["status"] == ABORTED
    cut = store.get_task("c" * 32)
    assert cut.status == "aborted" and cut.error == {"reason": "the controller stopped"}
    agent = store.get_task("a" * 32)
    assert agent.status == "running" and agent.abort_requested == "the controller stopped"
    assert store.get_task("d" * 32).status == "completed"
    assert store.get_task(pipe).status == "running"  # the Task's end is its runner's to say

    assert not settle(store, pipe, "again"), "a settled run is left as it is"
    assert run_document(store.get_task(pipe)) == settled


def test_settle_leaves_a_finished_run_or_a_task_without_one(store: Store) -> None:
    finished = document("pipe", COMPLETED, split={"status": RUNNING})
    pipe = controller_task(store, runtime={"pipeline": finished})
    assert not settle(store, pipe, "why")
    assert run_document(store.get_task(pipe)) == finished
    assert not settle(store, controller_task(store), "why")


def test_recover_settles_a_run_whose_controller_process_ended(store: Store) -> None:
    identity = dead_process()
    running = {**document(split={"status": RUNNING}), CONTROLLER_KEY: identity}
    pipe = controller_task(store, runtime={"pipeline": running}, status="running")
    assert recover(store, pipe)
    record = store.get_task(pipe)
    reason = (
        f"the pipeline controller (process {identity['pid']} on {identity['host']}) "
        "stopped without finishing the run"
    )
    assert record.status == "aborted" and record.error == {"reason": reason}
    settled = run_document(record)
    assert settled is not None and settled["status"] == ABORTED
    assert settled["nodes"]["split"]["error"] == {"reason": reason}
    assert not recover(store, pipe)


def test_recover_leaves_a_run_whose_controller_runs(store: Store) -> None:
    running = {**document(split={"status": RUNNING}), CONTROLLER_KEY: controller_identity()}
    pipe = controller_task(store, runtime={"pipeline": running}, status="running")
    assert not recover(store, pipe)
    assert run_document(store.get_task(pipe)) == running
    assert not recover(store, "0" * 32), "an unknown task is no run to recover"


def test_recover_settles_a_run_whose_task_ended(store: Store) -> None:
    far = {"host": "far-away", "pid": 4242, "since": 1}
    running = {**document(split={"status": RUNNING}), CONTROLLER_KEY: far}
    pipe = controller_task(
        store,
        runtime={"pipeline": running},
        status="failed",
        error={"reason": "the kernel died"},
    )
    assert recover(store, pipe)
    record = store.get_task(pipe)
    assert record.status == "failed", "the Task keeps the status it ended with"
    settled = run_document(record)
    assert settled is not None and settled["status"] == ABORTED
    assert settled["nodes"]["split"]["error"] == {
        "reason": "the pipeline's Task ended failed before its steps did: the kernel died"
    }


def test_controller_gone_tells_an_ended_process() -> None:
    me = controller_identity()
    assert me == {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": start_time(os.getpid()),
    }
    assert not controller_gone(me)
    assert controller_gone(dead_process())
    assert controller_gone({**me, "since": (me["since"] or 0) + 1}), "the pid was reused"
    assert not controller_gone({**me, "host": "far-away"}), "another host cannot be told"
    assert not controller_gone(None) and not controller_gone({"host": me["host"], "pid": 0})

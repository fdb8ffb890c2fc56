"""Queues in the store: enqueue, dequeue exactly once, leases, abort requests, agents."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb.errors import StoreError
from clearnb.store import SCHEMA_VERSION, Store, TaskRecord, WorkerRecord, open_store, schema
from tests.helpers import wait_until


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


def draft(store: Store, name: str = "step") -> TaskRecord:
    return store.create_task(TaskRecord(project="queues", name=name))


def test_a_draft_goes_into_a_queue_and_comes_out_running(store: Store) -> None:
    task = draft(store)
    queued = store.enqueue_task(task.id, "default")
    assert (queued.status, queued.queue) == ("queued", "default")
    assert queued.enqueued is not None
    assert store.has_queued(["default"]) and not store.has_queued(["gpu"])
    assert [t.id for t in store.queued_tasks("default")] == [task.id]

    taken = store.dequeue_task(["default"], "agent-1", lease=30)
    assert taken is not None and taken.id == task.id
    assert (taken.status, taken.worker) == ("running", "agent-1")
    assert taken.lease_expires is not None and taken.lease_expires > time.time() + 25
    assert store.dequeue_task(["default"], "agent-2", lease=30) is None
    assert store.queued_tasks() == []


def test_queues_are_served_in_the_order_given_and_oldest_first(store: Store) -> None:
    low = [store.enqueue_task(draft(store, f"low{i}").id, "low").id for i in range(2)]
    high = [store.enqueue_task(draft(store, f"high{i}").id, "high").id for i in range(2)]
    order = []
    while (taken := store.dequeue_task(["high", "low"], "agent", lease=30)) is not None:
        order.append(taken.id)
    assert order == [*high, *low]


def test_a_task_that_ran_is_refused_unless_forced(store: Store) -> None:
    task = draft(store)
    store.update_task(task.id, status="completed")
    with pytest.raises(StoreError, match=r"is completed; clone it .*force=True"):
        store.enqueue_task(task.id, "default")
    assert store.get_task(task.id).status == "completed", "a refused enqueue changes nothing"
    assert store.enqueue_task(task.id, "default", force=True).status == "queued"
    store.dequeue_task(["default"], "agent", lease=30)
    with pytest.raises(StoreError, match="is running; abort it first"):
        store.enqueue_task(task.id, "other", force=True)
    with pytest.raises(ValueError, match="non-empty string"):
        store.enqueue_task(task.id, " ")


def test_threads_dequeue_each_task_exactly_once(store: Store) -> None:
    ids = {store.enqueue_task(draft(store, f"t{i}").id, "bulk").id for i in range(120)}
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            while (record := store.dequeue_task(["bulk"], worker, lease=30)) is not None:
                with lock:
                    taken.append((record.id, worker))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    counts = Counter(task_id for task_id, _ in taken)
    assert set(counts) == ids and set(counts.values()) == {1}
    stored = {t.id: t.worker for t in store.find_tasks(project="queues")}
    assert all(stored[task_id] == worker for task_id, worker in taken)


def test_a_lease_is_renewed_by_its_worker_and_expires_without_it(store: Store) -> None:
    task = store.enqueue_task(draft(store).id, "default")
    taken = store.dequeue_task(["default"], "agent-1", lease=0.3)
    assert taken is not None and taken.lease_expires is not None
    assert store.renew_leases("agent-1", [task.id], lease=60) == {task.id: None}
    answers = store.renew_leases("agent-2", [task.id], lease=60)
    assert "lease on it had expired" in str(answers[task.id])
    first_lease = taken.lease_expires
    wait_until(lambda: time.time() > first_lease, 60, "the first lease to run out")
    assert store.expire_leases() == [], "a renewed lease has not expired"

    # The agent's last renewal: then it stops responding.
    assert store.renew_leases("agent-1", [task.id], lease=0.3) == {task.id: None}
    last_lease = store.get_task(task.id).lease_expires
    assert last_lease is not None
    wait_until(lambda: time.time() > last_lease, 60, "the last lease to run out")
    (expired,) = store.expire_leases()
    assert expired.id == task.id and expired.status == "failed"
    assert expired.error is not None
    assert "agent agent-1 running it stopped responding" in expired.error["reason"]
    assert [e.kind for e in store.get_events(task.id)][-1] == "task_finished"
    answers = store.renew_leases("agent-1", [task.id], lease=30)
    assert "the task is failed" in str(answers[task.id]), "the late agent learns it lost it"
    assert store.expire_leases() == []


def test_an_abort_request_reaches_the_worker_or_empties_the_queue(store: Store) -> None:
    waiting = store.enqueue_task(draft(store, "waiting").id, "default")
    aborted = store.request_abort(waiting.id, "not needed")
    assert aborted.status == "aborted" and aborted.error == {"reason": "aborted: not needed"}
    assert not store.has_queued(["default"])

    running = store.enqueue_task(draft(store, "running").id, "default")
    store.dequeue_task(["default"], "agent-1", lease=30)
    flagged = store.request_abort(running.id, "stop it")
    assert flagged.status == "running" and flagged.abort_requested == "stop it"
    assert store.renew_leases("agent-1", [running.id], lease=30) == {running.id: "stop it"}

    store.update_task(running.id, status="completed")
    assert store.request_abort(running.id, "too late").status == "completed"


def test_agents_are_recorded_with_their_heartbeat(store: Store) -> None:
    first = WorkerRecord(id="host:1", host="host", pid=1, queues=["default", "gpu"], capacity=2)
    store.put_worker(first)
    first.running, first.status, first.last_seen = ["abc"], "busy", time.time() + 1
    store.put_worker(first)
    store.put_worker(WorkerRecord(id="host:2", host="host", pid=2, queues=["x"], last_seen=1.0))
    workers = store.get_workers()
    assert [w.id for w in workers] == ["host:1", "host:2"]
    assert workers[0].queues == ["default", "gpu"] and workers[0].running == ["abc"]
    assert workers[0].status == "busy" and workers[0].capacity == 2
    assert [w.id for w in store.get_workers(seen_since=time.time() - 60)] == ["host:1"]


def test_a_version_1_store_is_upgraded_keeping_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        kept = draft(store, "kept")
    # Turn the file back into what clearnb wrote at schema version 1.
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE workers")
        conn.execute("DROP TABLE task_models")  # from version 3
        conn.execute("DROP TABLE models")
        conn.execute("DROP INDEX ix_tasks_queue_status_enqueued")
        for column in ("queue", "enqueued", "worker", "lease_expires", "abort_requested"):
            conn.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
        conn.execute("ALTER TABLE tasks DROP COLUMN configuration")
        conn.execute("UPDATE schema_version SET version = 1")
    assert SCHEMA_VERSION == 3 and len(schema.MIGRATIONS) == 3
    with open_store(url) as store:
        assert store.schema_version() == 3
        assert store.get_task(kept.id).name == "kept"
        assert store.enqueue_task(kept.id, "default").queue == "default"
        assert store.get_workers() == []


def test_a_task_handed_out_twice_is_claimed_once(store: Store) -> None:
    task = draft(store)
    store.update_task(task.id, status="queued", enqueued=time.time())
    store.update_task(task.id, runtime={"kept": 1})
    claimed = store.claim_task(task.id, "dask tcp://127.0.0.1:1", lease=30, runtime={"pid": 7})
    assert claimed is not None and claimed.status == "running"
    assert claimed.worker == "dask tcp://127.0.0.1:1"
    assert claimed.runtime == store.get_task(task.id).runtime == {"kept": 1, "pid": 7}
    assert claimed.lease_expires is not None and claimed.lease_expires > time.time() + 25
    assert store.claim_task(task.id, "dask tcp://127.0.0.1:2", lease=30) is None
    assert store.get_task(task.id).worker == "dask tcp://127.0.0.1:1", "the second changed nothing"
    unqueued = draft(store, "draft")
    assert store.claim_task(unqueued.id, "dask tcp://127.0.0.1:1", lease=30) is None
    assert store.get_task(unqueued.id).status == "created"


def test_a_task_lost_with_its_worker_is_failed_once_with_its_event(store: Store) -> None:
    task = draft(store)
    store.update_task(task.id, status="queued")
    store.claim_task(task.id, "dask tcp://127.0.0.1:1", lease=30)
    error = {"reason": "the worker died", "ename": "WorkerLost"}
    assert store.fail_unfinished(task.id, error, worker="dask tcp://127.0.0.1:2") is None
    assert store.get_task(task.id).status == "running", "another worker's task is left alone"
    failed = store.fail_unfinished(task.id, error, worker="dask tcp://127.0.0.1:1")
    assert failed is not None and failed.status == "failed" and failed.error == error
    assert failed.completed is not None and failed.lease_expires is None
    assert store.fail_unfinished(task.id, {"reason": "again"}) is None, "an ended task stays"
    finished = [e for e in store.get_events(task.id) if e.kind == "task_finished"]
    assert [e.payload for e in finished] == [
        {"status": "failed", "error": {"reason": "the worker died"}}
    ]


def test_a_run_ending_after_its_task_was_settled_keeps_the_settled_status(store: Store) -> None:
    task = draft(store)
    store.update_task(task.id, status="running")
    store.fail_unfinished(task.id, {"reason": "the scheduler was lost", "ename": "WorkerLost"})
    after = store.merge_runtime(
        task.id, {"cells": 3}, keep_final=True, status="aborted", error={"reason": "x"}
    )
    assert (after.status, after.error) == (
        "failed",
        {"reason": "the scheduler was lost", "ename": "WorkerLost"},
    )
    assert after.runtime["cells"] == 3, "the run's facts are kept all the same"
    replaced = store.merge_runtime(task.id, {}, status="completed", error=None)
    assert replaced.status == "completed", "without keep_final the write is as given"


def test_a_lost_dask_worker_lease_names_the_worker(store: Store) -> None:
    task = draft(store)
    store.update_task(task.id, status="queued")
    store.claim_task(task.id, "dask tcp://10.0.0.7:4567", lease=0.1)
    time.sleep(0.2)
    (expired,) = store.expire_leases()
    assert expired.error is not None
    assert expired.error["reason"].startswith(
        "the Dask worker tcp://10.0.0.7:4567 running it stopped responding"
    )

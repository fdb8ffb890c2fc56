"""Many writers on one store (SQLite, PostgreSQL): separate processes, threads sharing a Store."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from collections import Counter
from typing import Any

from clearnb.store import (
    ArtifactRecord,
    EventRecord,
    ScalarRecord,
    Store,
    TaskRecord,
    open_store,
)

PROCESSES = 4
TASKS_PER_WRITER = 50
ARTIFACTS_PER_TASK = 3
SCALARS_PER_TASK = 4
EVENTS_PER_TASK = 2


def task_id(writer: str, index: int) -> str:
    return f"{writer}-task-{index:03d}"


def write_tasks(store: Store, writer: str) -> list[int]:
    """Write every row of one writer; returns the event numbers it was given, in order."""
    seqs = []
    for index in range(TASKS_PER_WRITER):
        tid = task_id(writer, index)
        store.create_task(
            TaskRecord(
                project="concurrency",
                name=writer,
                id=tid,
                parameters={"General": {"index": index, "writer": writer}},
            )
        )
        store.update_task(tid, status="running")
        for number in range(ARTIFACTS_PER_TASK):
            store.put_artifact(
                ArtifactRecord(
                    task_id=tid,
                    name=f"out{number}",
                    url=f"/artifacts/{tid}/out{number}",
                    codec="json",
                    type="builtins.dict",
                    hash=f"{number:064x}",
                    size=number,
                )
            )
        store.add_scalars(
            ScalarRecord(tid, "loss", "train", iteration, float(iteration))
            for iteration in range(SCALARS_PER_TASK)
        )
        for number in range(EVENTS_PER_TASK):
            event = store.add_event(EventRecord(tid, "progress", {"n": number}))
            seqs.append(event.seq)
        store.set_parameters(tid, {"General": {"done": True}})
        store.update_task(tid, status="completed")
    return seqs


def process_writer(url: str, writer: str, start: Any, results: Any) -> None:
    """Body of one writer process: open the brand-new store together, then write."""
    try:
        start.wait(timeout=30)
        with open_store(url) as store:
            seqs = write_tasks(store, writer)
        results.put((writer, "ok", seqs))
    except BaseException:
        results.put((writer, "error", traceback.format_exc()))


def assert_everything_written(store: Store, writers: dict[str, list[int]]) -> None:
    tasks = store.find_tasks(project="concurrency")
    expected_ids = {task_id(writer, i) for writer in writers for i in range(TASKS_PER_WRITER)}
    assert len(tasks) == len(expected_ids)
    assert {task.id for task in tasks} == expected_ids
    for task in tasks:
        assert task.status == "completed"
        index = int(task.id.rsplit("-", 1)[1])
        assert task.parameters == {"General": {"index": index, "writer": task.name, "done": True}}
        artifacts = store.get_artifacts(task.id)
        assert list(artifacts) == [f"out{n}" for n in range(ARTIFACTS_PER_TASK)]
        scalars = store.get_scalars(task.id)
        assert [s.iteration for s in scalars] == list(range(SCALARS_PER_TASK))
        events = store.get_events(task.id)
        assert [e.payload["n"] for e in events] == list(range(EVENTS_PER_TASK))

    events = store.get_events()
    assert len(events) == len(expected_ids) * EVENTS_PER_TASK
    seqs = [event.seq for event in events]
    assert len(set(seqs)) == len(seqs)
    assert Counter(e.task_id for e in events) == dict.fromkeys(expected_ids, EVENTS_PER_TASK)
    for writer, writer_seqs in writers.items():
        assert writer_seqs == sorted(writer_seqs), writer
        assert [e.seq for e in events if e.task_id.startswith(f"{writer}-")] == writer_seqs


def test_processes_write_one_fresh_store(store_url: str) -> None:
    url = store_url
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    names = [f"proc{n}" for n in range(PROCESSES)]
    processes = [
        ctx.Process(target=process_writer, args=(url, name, start, results)) for name in names
    ]
    for process in processes:
        process.start()
    outcomes = {}
    try:
        for _ in processes:
            writer, status, detail = results.get(timeout=120)
            outcomes[writer] = (status, detail)
    except queue.Empty:
        pass
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()

    errors = {w: detail for w, (status, detail) in outcomes.items() if status != "ok"}
    assert not errors, "\n".join(f"{w}:\n{tb}" for w, tb in errors.items())
    assert sorted(outcomes) == names
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    with open_store(url) as store:
        assert_everything_written(store, {w: detail for w, (_, detail) in outcomes.items()})


def test_threads_share_one_store(store_url: str) -> None:
    url = store_url
    names = [f"thread{n}" for n in range(4)]
    outcomes: dict[str, list[int]] = {}
    errors: list[str] = []
    finished = threading.Event()
    lock = threading.Lock()

    with open_store(url) as store:

        def writer(name: str) -> None:
            try:
                seqs = write_tasks(store, name)
                with lock:
                    outcomes[name] = seqs
            except BaseException:
                errors.append(traceback.format_exc())

        def reader() -> None:
            try:
                while not finished.is_set():
                    for task in store.find_tasks(project="concurrency", limit=20):
                        store.get_artifacts(task.id)
                    store.get_events(limit=50)
                    finished.wait(0.01)
            except BaseException:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=writer, args=(name,)) for name in names]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads + readers:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        finished.set()
        for thread in readers:
            thread.join(timeout=30)

        assert not errors, "\n".join(errors)
        assert sorted(outcomes) == names
        assert_everything_written(store, outcomes)


def test_stores_in_threads_open_a_fresh_store_together(store_url: str) -> None:
    url = store_url
    count = 8
    start = threading.Barrier(count)
    errors: list[str] = []
    versions: list[int] = []

    def opener() -> None:
        try:
            start.wait(timeout=10)
            with open_store(url) as store:
                versions.append(store.schema_version())
                store.create_task(TaskRecord(project="race", name="t"))
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=opener) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, "\n".join(errors)
    assert len(versions) == count
    with open_store(url) as store:
        assert len(store.find_tasks(project="race")) == count


def test_event_followers_miss_nothing(store_url: str) -> None:
    """A reader following ``get_events(after=last seen)`` sees every event once, in order."""
    writers = 4
    events_per_writer = 100
    with open_store(store_url) as store:
        task = store.create_task(TaskRecord(project="events", name="follow"))
    done = threading.Event()
    errors: list[str] = []
    followed: list[int] = []

    def write(number: int) -> None:
        try:
            with open_store(store_url) as own:
                for index in range(events_per_writer):
                    own.add_event(EventRecord(task.id, "progress", {"w": number, "i": index}))
        except BaseException:
            errors.append(traceback.format_exc())

    def follow() -> None:
        try:
            with open_store(store_url) as own:
                seen = 0
                while True:
                    finished = done.is_set()
                    for event in own.get_events(task.id, after=seen):
                        followed.append(event.seq)
                        seen = event.seq
                    if finished:
                        return
                    done.wait(0.002)
        except BaseException:
            errors.append(traceback.format_exc())

    follower = threading.Thread(target=follow)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    follower.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    follower.join(timeout=60)
    assert not errors, "\n".join(errors)
    with open_store(store_url) as store:
        stored = [event.seq for event in store.get_events(task.id)]
    assert len(stored) == writers * events_per_writer
    assert followed == stored

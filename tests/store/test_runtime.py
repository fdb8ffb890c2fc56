"""Changing some keys of a task's runtime without losing a concurrent writer's (SQLite,
PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clearnb.errors import TaskNotFoundError
from clearnb.store import Store, TaskRecord, open_store

ROUNDS = 25


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


def in_threads(*work: Callable[[], None]) -> None:
    """Run each callable on its own thread at once; re-raise the first failure."""
    failures: list[BaseException] = []
    start = threading.Barrier(len(work))

    def run(job: Callable[[], None]) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if failures:
        raise failures[0]


def test_update_runtime_changes_one_key_and_keeps_the_others(store: Store) -> None:
    task = store.create_task(TaskRecord("proj", "step", runtime={"kept": 1, "list": [1]}))
    seen: list[Any] = []

    def append(value: Any) -> Any:
        seen.append(list(value))
        value.append(2)
        return value

    updated = store.update_runtime(task.id, "list", append)
    assert seen == [[1]]
    assert updated.runtime == {"kept": 1, "list": [1, 2]}
    assert updated.last_update > task.last_update
    assert store.get_task(task.id).runtime == {"kept": 1, "list": [1, 2]}

    assert store.update_runtime(task.id, "new", lambda value: {"was": value}).runtime == {
        "kept": 1,
        "list": [1, 2],
        "new": {"was": None},
    }
    assert store.update_runtime(task.id, "list", lambda value: None).runtime == {
        "kept": 1,
        "new": {"was": None},
    }


def test_update_runtime_writes_nothing_when_the_value_is_unchanged(store: Store) -> None:
    task = store.create_task(TaskRecord("proj", "step", runtime={"a": {"b": 1}}, last_update=1.0))

    def same(value: Any) -> Any:
        return value

    assert store.update_runtime(task.id, "a", same).last_update == 1.0
    assert store.update_runtime(task.id, "absent", lambda value: None).last_update == 1.0
    assert store.get_task(task.id) == task


def test_update_runtime_leaves_the_task_when_the_change_raises(store: Store) -> None:
    task = store.create_task(TaskRecord("proj", "step", runtime={"a": [1]}))

    def broken(value: Any) -> Any:
        value.append(2)
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        store.update_runtime(task.id, "a", broken)
    with pytest.raises(TypeError, match="JSON"):
        store.update_runtime(task.id, "a", lambda value: object())
    assert store.get_task(task.id) == task
    with pytest.raises(TaskNotFoundError, match="nope"):
        store.update_runtime("nope", "a", lambda value: value)


def test_merge_runtime_sets_keys_and_fields_in_one_write(store: Store) -> None:
    task = store.create_task(TaskRecord("proj", "step", runtime={"kept": 1, "duration": 0}))
    done = store.merge_runtime(task.id, {"duration": 2.5, "cells": []}, status="completed")
    assert done.status == "completed"
    assert done.runtime == {"kept": 1, "duration": 2.5, "cells": []}
    with pytest.raises(ValueError, match="values"):
        store.merge_runtime(task.id, {}, runtime={"x": 1})
    with pytest.raises(ValueError, match="Unknown task status"):
        store.merge_runtime(task.id, {"x": 1}, status="done")
    with pytest.raises(TaskNotFoundError, match="nope"):
        store.merge_runtime("nope", {"x": 1})
    assert store.get_task(task.id) == done


def test_concurrent_writers_of_runtime_keys_lose_nothing(store_url: str, store: Store) -> None:
    """Three writers, each with its own Store (its own connections), change the runtime of
    one task at once: two the same key, one another key, each holding its transaction
    open a little while; every change is kept."""
    task = store.create_task(TaskRecord("proj", "step", runtime={"other": "kept"}))

    def writer(key: str, name: str) -> Callable[[], None]:
        def change(value: Any) -> Any:
            time.sleep(0.002)  # a slow read-modify-write: others must wait, not interleave
            return [*(value or []), name]

        def job() -> None:
            with open_store(store_url) as own:
                for _ in range(ROUNDS):
                    own.update_runtime(task.id, key, change)

        return job

    def merger() -> None:
        with open_store(store_url) as own:
            for number in range(ROUNDS):
                own.merge_runtime(task.id, {"merged": number})

    in_threads(writer("shared", "a"), writer("shared", "b"), writer("alone", "c"), merger)
    runtime = store.get_task(task.id).runtime
    assert sorted(runtime["shared"]) == ["a"] * ROUNDS + ["b"] * ROUNDS
    assert runtime["alone"] == ["c"] * ROUNDS
    assert runtime["merged"] == ROUNDS - 1
    assert runtime["other"] == "kept"

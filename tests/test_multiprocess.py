"""Four processes write tasks, artifacts and scalars to one fresh store through the Task API."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clearnb import Task
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(180)

PROCESSES = 4
TASKS_PER_PROCESS = 6
ITERATIONS = 5


def expected_array(worker: int, index: int) -> np.ndarray:
    return np.arange(12, dtype=np.float64).reshape(3, 4) * (worker + 1) + index


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def write_tasks(home: str, worker: int, start: Any, results: Any) -> None:
    """Body of one process: wait for the others, then write through the Task API.

    Reports its task ids, any warning logged, and when it wrote.
    """
    os.environ["CLEARNB_HOME"] = home
    collected = _Collect()
    logging.getLogger().addHandler(collected)
    try:
        start.wait(timeout=60)
        began = time.time()
        ids = []
        for index in range(TASKS_PER_PROCESS):
            task = Task.create(
                project_name="multi",
                task_name=f"worker {worker} task {index}",
                notebook=notebook("params"),
                tags=[f"worker-{worker}"],
            )
            task.mark_started()
            task.set_parameter("General/count", index)
            task.connect({"worker": worker}, name="Origin")
            task.upload_artifact("array", expected_array(worker, index))
            task.upload_artifact("meta", {"worker": worker, "index": index})
            logger = task.get_logger()
            for iteration in range(ITERATIONS):
                logger.report_scalar("loss", f"w{worker}", worker + iteration / 10, iteration)
            task.mark_completed()
            ids.append(task.id)
        results.put((worker, "ok", ids, collected.messages, (began, time.time())))
    except BaseException:
        results.put((worker, "error", traceback.format_exc(), collected.messages, None))


def test_processes_write_one_store_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=write_tasks, args=(str(home), worker, start, results))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = []
    try:
        for _ in processes:
            reports.append(results.get(timeout=150))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {PROCESSES} processes reported: {reports}")
    finally:
        for process in processes:
            process.join(timeout=30)
    errors = [r for r in reports if r[1] != "ok"]
    assert not errors, "\n".join(r[2] for r in errors)
    warnings = [message for r in reports for message in r[3]]
    assert not warnings, warnings
    assert all(p.exitcode == 0 for p in processes)
    spans = [r[4] for r in reports]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), "the writers overlapped"

    ids = {worker: task_ids for worker, _, task_ids, *_ in reports}
    assert sorted(ids) == list(range(PROCESSES))
    stored = Task.get_tasks(project_name="multi")
    assert len(stored) == PROCESSES * TASKS_PER_PROCESS
    assert {t.id for t in stored} == {i for task_ids in ids.values() for i in task_ids}
    for worker, task_ids in ids.items():
        assert [t.id for t in Task.get_tasks(tags=[f"worker-{worker}"])] == task_ids[::-1]
        for index, task_id in enumerate(task_ids):
            task = Task.get_task(task_id=task_id)
            assert task.status == "completed"
            assert task.name == f"worker {worker} task {index}"
            parameters = task.get_parameters_as_dict()
            assert parameters["General"]["count"] == index
            assert parameters["Origin"] == {"worker": worker}
            artifacts = task.artifacts
            assert set(artifacts) == {"array", "meta"}
            np.testing.assert_array_equal(artifacts["array"].get(), expected_array(worker, index))
            assert artifacts["meta"].get() == {"worker": worker, "index": index}
            series = task.get_reported_scalars()["loss"][f"w{worker}"]
            assert series["x"] == list(range(ITERATIONS))
            assert series["y"] == [worker + i / 10 for i in range(ITERATIONS)]
    leftovers = [p for p in (home / "artifacts").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []

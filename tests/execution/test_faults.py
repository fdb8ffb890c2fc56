"""Faults injected for real: kernels killed, exiting, stuck, or using too much memory.

Each test runs a real notebook on a real kernel and breaks it the way it breaks in use
(SIGKILL from outside, ``os._exit``, an endless cell, a memory hog). The step must end
``failed`` with the reason in plain words, keep its executed notebook so far, and leave no
kernel or child process running.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest

from clearnb import PipelineController, Task
from clearnb.config import Config
from clearnb.errors import InvalidLimitError
from clearnb.execution.kernels import FORK_ENV
from clearnb.execution.limits import format_size, parse_memory_limit
from clearnb.execution.runner import NotebookRunner
from clearnb.pipeline.decorator import PipelineDecorator
from tests.helpers import (
    NOTEBOOKS,
    child_kernel_pids,
    kernel_pids_of,
    notebook,
    wait_until_gone,
)

pytestmark = pytest.mark.timeout(120)

FAULTS = NOTEBOOKS / "faults"
MEMORY_LIMIT = "300MB"


def fault(name: str) -> Path:
    return FAULTS / f"{name}.ipynb"


def assert_no_kernel_left(home: Path) -> None:
    """No kernel (or fork server) of the runner at ``home`` runs, not even an orphan."""
    deadline = time.monotonic() + 10
    while kernel_pids_of(home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kernel_pids_of(home) == [], "a kernel outlived its runner"


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[NotebookRunner]:
    """The module's runner; once it is closed, none of its kernels may be left."""
    with NotebookRunner(Config.at(home), pool_size=2) as shared:
        yield shared
    assert_no_kernel_left(shared.config.home)


@contextmanager
def fresh_runner(home: Path, *, fork: bool = True) -> Iterator[NotebookRunner]:
    """A runner of its own, so that no kernel at all may be left once it is closed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FORK_ENV, "1" if fork else "0")
        with NotebookRunner(Config.at(home), pool_size=1) as runner:
            yield runner
    assert child_kernel_pids() == [], "a kernel outlived its runner"
    assert_no_kernel_left(runner.config.home)


def cell_outputs(task: Task) -> list[str]:
    """The outputs of every cell of the task's stored notebook, as text."""
    path = task.artifacts["notebook"].get_local_copy()
    executed = nbformat.read(path, as_version=4)
    cells = [
        c for c in executed.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])
    ]
    return [json.dumps(c.get("outputs", [])) for c in cells]


def wait_for_text(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written within {timeout} s")


def in_background(run: Callable[[], Task]) -> Callable[[], Task]:
    """Start ``run`` on a thread; the returned function waits for its Task."""
    results: list[Task] = []
    worker = threading.Thread(target=lambda: results.append(run()))
    worker.start()

    def join() -> Task:
        worker.join(90)
        assert results, "the run did not return"
        return results[0]

    return join


def assert_all_gone(*pids: int) -> None:
    left = [pid for pid in pids if not wait_until_gone(pid, timeout=10)]
    assert left == [], f"processes still running: {left}"


def count_tasks(runner: NotebookRunner) -> int:
    return len(runner.backend.store.find_tasks())


# -- a kernel killed from outside ----------------------------------------------------------


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_a_kernel_killed_from_outside_fails_the_step(tmp_path: Path, fork: bool) -> None:
    pid_file, children_file = tmp_path / "pid", tmp_path / "children"
    with fresh_runner(tmp_path / "home", fork=fork) as runner:
        finished = in_background(
            lambda: runner.execute(
                fault("stuck"),
                {
                    "pid_file": str(pid_file),
                    "children_file": str(children_file),
                    "detached": True,
                },
                time_limit=60,
            )
        )
        kernel = int(wait_for_text(pid_file))
        children = [int(pid) for pid in wait_for_text(children_file).split()]
        assert len(children) == 3
        time.sleep(0.3)  # the kernel has run a while with its children
        os.kill(kernel, signal.SIGKILL)
        task = finished()
        assert task.status == "failed"
        assert task.error is not None
        assert task.error["reason"] == (
            "the kernel died (killed by signal SIGKILL) while running cell 6 of 7"
        )
        assert task.runtime["kernel_pid"] == kernel
        assert task.runtime["duration"] < 30
        outputs = cell_outputs(task)
        assert "first cell ran" in outputs[3] and "children started: 3" in outputs[4]
        assert "DeadKernelError" in outputs[5] and "killed by signal SIGKILL" in outputs[5]
        assert "the last cell ran" not in "".join(outputs)
        assert_all_gone(kernel, *children)


def test_a_kernel_that_exits_fails_the_step(runner: NotebookRunner) -> None:
    task = runner.execute(notebook("exits"))
    assert task.status == "failed"
    assert task.error is not None
    assert task.error["reason"] == "the kernel died (exited with code 1) while running cell 2 of 3"
    outputs = cell_outputs(task)
    assert "about to exit" in outputs[0] and "DeadKernelError" in outputs[1]
    assert "never runs" not in outputs[2]
    assert_all_gone(task.runtime["kernel_pid"])


# -- a cell that never returns --------------------------------------------------------------


def test_an_endless_cell_is_stopped_at_the_time_limit_with_its_children(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    children_file = tmp_path / "children"
    task = runner.execute(
        fault("stuck"), {"children_file": str(children_file), "detached": True}, time_limit=3
    )
    assert task.status == "failed"
    assert task.error is not None
    assert task.error["reason"] == (
        "the run exceeded its time limit of 3 s while running cell 6 of 7; the kernel was stopped"
    )
    assert 3 <= task.runtime["duration"] < 30
    outputs = cell_outputs(task)
    assert "first cell ran" in outputs[3] and "TimeLimitExceeded" in outputs[5]
    children = [int(pid) for pid in children_file.read_text().split()]
    assert_all_gone(task.runtime["kernel_pid"], *children)


def test_a_completed_step_leaves_no_child_process(runner: NotebookRunner, tmp_path: Path) -> None:
    children_file = tmp_path / "children"
    task = runner.execute(
        fault("stuck"), {"children_file": str(children_file), "detached": True, "hang": False}
    )
    assert task.status == "completed", task.error
    children = [int(pid) for pid in children_file.read_text().split()]
    assert_all_gone(task.runtime["kernel_pid"], *children)


# -- too much memory --------------------------------------------------------------------------

_OVER_LIMIT = re.compile(
    r"the kernel used (?P<used>[\d.]+ [kMG]B), over the step's memory limit of 300 MB, while "
    r"running cell 6 of 6; the kernel was stopped"
)


@pytest.mark.parametrize("in_child", [False, True], ids=["in-kernel", "in-child-process"])
def test_a_step_over_its_memory_limit_is_stopped(
    runner: NotebookRunner, tmp_path: Path, in_child: bool
) -> None:
    child_pid_file = tmp_path / "child"
    # The hog takes 450 MB (over the 300 MB limit) and holds it for 60 s: it is stopped
    # while it holds, however late the watcher looks, so its peak is what it took.
    task = runner.execute(
        fault("hog"),
        {"in_child": in_child, "child_pid_file": str(child_pid_file), "ceiling_mb": 450},
        memory_limit=MEMORY_LIMIT,
        time_limit=60,
    )
    assert task.status == "failed"
    assert task.error is not None
    match = _OVER_LIMIT.fullmatch(task.error["reason"])
    assert match, task.error["reason"]
    assert task.error["ename"] == "MemoryLimitExceeded"
    assert task.runtime["memory_limit"] == 300_000_000
    assert 300_000_000 < task.runtime["memory_peak"] < 1_000_000_000
    assert match["used"] == format_size(task.runtime["memory_peak"])
    assert task.runtime["duration"] < 30, "stopped as it grew, not at the time limit"
    outputs = cell_outputs(task)
    assert "first cell ran" in outputs[3] and "MemoryLimitExceeded" in outputs[5]
    assert "held" not in outputs[5]
    hog = [int(child_pid_file.read_text())] if in_child else []
    assert_all_gone(task.runtime["kernel_pid"], *hog)


def test_a_step_within_its_memory_limit_completes_and_reports_its_peak(
    runner: NotebookRunner,
) -> None:
    # Held for 5 s: the watcher (every 0.1 s) sees it while it holds, even on a busy machine.
    task = runner.execute(fault("hog"), {"ceiling_mb": 100, "hold": 5}, memory_limit="2GiB")
    assert task.status == "completed", task.error
    assert task.runtime["memory_limit"] == 2 * 1024**3
    assert 100_000_000 < task.runtime["memory_peak"] < 2 * 1024**3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (300_000_000, 300_000_000),
        ("500MB", 500_000_000),
        ("500 mb", 500_000_000),
        ("1.5GB", 1_500_000_000),
        ("2GiB", 2 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("64k", 64_000),
        (None, None),
    ],
)
def test_memory_limits_are_bytes_or_sizes(value: Any, expected: int | None) -> None:
    assert parse_memory_limit(value) == expected


def test_bad_memory_limits_are_refused_before_anything_runs(runner: NotebookRunner) -> None:
    before = count_tasks(runner)
    for value in ("lots", "5 XB", "", True, [300]):
        with pytest.raises(InvalidLimitError) as info:
            runner.execute(fault("hog"), memory_limit=value)
        assert (
            str(info.value) == f"memory_limit must be bytes or a size like '500MB'; got {value!r}"
        )
    for value in (0, "0MB", -5):
        with pytest.raises(InvalidLimitError, match="must be more than 0 bytes"):
            runner.execute(fault("hog"), memory_limit=value)
    assert count_tasks(runner) == before, "a refused run must not record a task"
    pipe = PipelineController(name="bad limit", project="tests")
    with pytest.raises(InvalidLimitError, match="got 'lots'"):
        pipe.add_step("hog", notebook=fault("hog"), memory_limit="lots")
    with pytest.raises(InvalidLimitError, match="got 'lots'"):
        pipe.add_function_step("f", function=len, memory_limit="lots")


@pytest.mark.parametrize("value", [-1, 0, math.nan, math.inf, "10", True, [5]])
def test_every_numeric_option_refuses_what_is_not_a_number_in_range(
    value: Any, runner: NotebookRunner
) -> None:
    """time_limit, as memory_limit, and the counts of a run or a pipeline are checked where
    they are given, with a message naming the option; nothing is recorded."""
    before = count_tasks(runner)
    with pytest.raises(InvalidLimitError, match=r"^time_limit must be"):
        runner.execute(fault("hog"), time_limit=value)
    pipe = PipelineController(name="bad numbers", project="tests")
    with pytest.raises(InvalidLimitError, match=r"^time_limit must be"):
        pipe.add_step("hog", notebook=fault("hog"), time_limit=value)
    with pytest.raises(InvalidLimitError, match=r"^time_limit must be"):
        pipe.add_function_step("f", function=len, time_limit=value)
    with pytest.raises(InvalidLimitError, match=r"^time_limit must be"):
        PipelineDecorator.component(time_limit=value)
    if value != 0:  # 0 is ClearML's "no limit" here, and 0 retries / kernels are counts
        with pytest.raises(InvalidLimitError, match=r"^max_execution_minutes must be"):
            pipe.set_pipeline_execution_time_limit(value)
        for name in ("retry_on_failure",):
            with pytest.raises(InvalidLimitError, match=rf"^{name} must be"):
                pipe.add_step("hog2", notebook=fault("hog"), **{name: value})
            with pytest.raises(InvalidLimitError, match=rf"^{name} must be"):
                PipelineController(name="bad numbers", project="tests", **{name: value})
        with pytest.raises(InvalidLimitError, match=r"^pool_size must be"):
            NotebookRunner(pool_size=value)
    with pytest.raises(InvalidLimitError, match=r"^max_workers must be"):
        PipelineController(name="bad numbers", project="tests", max_workers=value)
    assert count_tasks(runner) == before, "a refused option must not record a task"
    assert "hog" not in pipe.spec.steps and "hog2" not in pipe.spec.steps


def test_numpy_numbers_are_accepted_as_options() -> None:
    import numpy as np

    pipe = PipelineController(name="numpy numbers", project="tests", max_workers=np.int64(2))
    pipe.add_step(
        "hog", notebook=fault("hog"), time_limit=np.float32(2.5), retry_on_failure=np.int8(1)
    )
    assert pipe.spec.max_workers == 2
    assert (pipe.spec.steps["hog"].timeout, pipe.spec.steps["hog"].retry_on_failure) == (2.5, 1)


DAEMONS = """
import subprocess, sys, time
body = (
    "import os, time\\n"
    "open({file!r} + str(os.getpid()), 'w').close()\\n"
    "held = bytearray(b'\\\\x01') * {size}\\n"
    "time.sleep(600)\\n"
)
# one daemon from the shell's setsid -f, one from a double fork leaving the session
subprocess.run(["setsid", "-f", sys.executable, "-c", body], check=True)
double = "import os\\nif os.fork(): os._exit(0)\\nos.setsid()\\nif os.fork(): os._exit(0)\\n"
subprocess.run([sys.executable, "-c", double + body], check=True)
time.sleep({wait})
"""


def daemon_notebook(path: Path, marker: Path, size: int, wait: float) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nb.cells = [nbformat.v4.new_code_cell(DAEMONS.format(file=str(marker), size=size, wait=wait))]
    nbformat.write(nb, path)
    return path


def daemon_pids(marker: Path) -> list[int]:
    return [int(p.name.removeprefix(marker.name)) for p in marker.parent.glob(marker.name + "*")]


def test_daemons_a_step_starts_end_with_it(runner: NotebookRunner, tmp_path: Path) -> None:
    marker = tmp_path / "daemon-"
    path = daemon_notebook(tmp_path / "daemons.ipynb", marker, size=1_000_000, wait=3)
    task = runner.execute(path, time_limit=120)
    assert task.status == "completed", task.error
    daemons = daemon_pids(marker)
    assert len(daemons) == 2, daemons
    assert_all_gone(task.runtime["kernel_pid"], *daemons)


def test_daemons_a_step_starts_count_toward_its_memory_limit(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "daemon-"
    path = daemon_notebook(tmp_path / "daemons.ipynb", marker, size=220_000_000, wait=60)
    task = runner.execute(path, memory_limit=MEMORY_LIMIT, time_limit=120)
    assert task.status == "failed", task.error
    assert task.error["ename"] == "MemoryLimitExceeded", task.error
    assert task.runtime["memory_peak"] > 300_000_000
    assert task.runtime["duration"] < 60, "stopped as the daemons grew, not at the end"
    daemons = daemon_pids(marker)
    assert len(daemons) == 2, daemons
    assert_all_gone(task.runtime["kernel_pid"], *daemons)

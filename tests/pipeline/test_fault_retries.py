"""Steps whose kernel faults on the first attempt: retried, completed, nothing left behind."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from clearnb import PipelineController, Task
from clearnb.backend import Backend
from clearnb.errors import PipelineError
from tests.helpers import NOTEBOOKS, child_kernel_pids, kernel_pids_of

pytestmark = pytest.mark.timeout(120)

ONCE = NOTEBOOKS / "faults" / "once.ipynb"
SIZE = r"[\d.]+ [kMG]B"
FIRST_ATTEMPT = {
    "sigkill": "the kernel died (killed by signal SIGKILL) while running cell 6 of 7",
    "exit": "the kernel died (exited with code 3) while running cell 6 of 7",
    "hang": "the run exceeded its time limit of 5 s while running cell 6 of 7; the kernel was "
    "stopped",
    "memory": "the kernel used <size>, over the step's memory limit of 300 MB, while running "
    "cell 6 of 7; the kernel was stopped",
}
"""The fault the ``once`` notebook injects on its first attempt, and the reason it gets."""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"


def cell_outputs(task: Task) -> list[str]:
    """The outputs of every cell of the task's stored notebook (error banner left out)."""
    executed = nbformat.read(task.artifacts["notebook"].get_local_copy(), as_version=4)
    tagged = "papermill-error-cell-tag"
    cells = [c for c in executed.cells if tagged not in c.metadata.get("tags", [])]
    return [json.dumps(c.get("outputs", [])) for c in cells]


def hog_once(marker: str) -> int:
    """On the first call (no marker file yet) take memory until stopped; then return 2."""
    import pathlib
    import time

    path = pathlib.Path(marker)
    first = not path.exists()
    path.touch()
    chunks = []
    while first:
        chunks.append(b"x" * 20_000_000)
        time.sleep(0.02)
        if len(chunks) > 75:
            time.sleep(60)
    return 2


@pytest.mark.slow
def test_a_step_that_faults_once_is_retried_and_completes(home: Path, tmp_path: Path) -> None:
    pipe = PipelineController(name="faults", project="tests", max_workers=2)
    for kind in FIRST_ATTEMPT:
        pipe.add_step(
            kind,
            notebook=ONCE,
            parameter_override={"General/marker": str(tmp_path / kind), "General/fault": kind},
            retry_on_failure=1,
            time_limit=5 if kind == "hang" else 60,
            memory_limit="300MB" if kind == "memory" else None,
        )
    pipe.add_function_step(
        "function",
        hog_once,
        function_kwargs={"marker": str(tmp_path / "function")},
        function_return=["attempt"],
        retry_on_failure=1,
        memory_limit="300MB",
    )
    pipe.start()
    pipe.wait()
    with contextlib.suppress(PipelineError):
        pipe.stop()
    dag = pipe.get_pipeline_dag()
    store = Backend.for_config().store
    reasons = {
        **FIRST_ATTEMPT,
        "function": "the kernel used <size>, over the step's memory limit of 300 MB, while "
        "running cell <n> of <n>; the kernel was stopped",
    }
    for name, reason in reasons.items():
        node = dag[name]
        assert node.status == "completed" and node.retries == 1, (name, node.error)
        attempts = sorted(store.find_tasks(name=name, parent=pipe.id), key=lambda r: r.created)
        assert [a.status for a in attempts] == ["failed", "completed"], name
        first = Task.get_task(task_id=attempts[0].id)
        assert first.error is not None
        pattern = re.escape(reason).replace("<size>", SIZE).replace("<n>", r"\d+")
        assert re.fullmatch(pattern, first.error["reason"]), first.error["reason"]
        assert "notebook" in first.artifacts, f"{name}: the notebook so far was not kept"
    for kind in FIRST_ATTEMPT:
        first, second = sorted(store.find_tasks(name=kind, parent=pipe.id), key=lambda r: r.created)
        assert "first cell ran" in cell_outputs(Task.get_task(task_id=first.id))[3]
        done = cell_outputs(Task.get_task(task_id=second.id))
        assert "completed on attempt 2" in done[6]
    assert Task.get_task(task_id=dag["function"].executed).artifacts["attempt"].get() == 2
    assert pipe.is_successful()
    assert child_kernel_pids() == []
    assert kernel_pids_of(home) == []

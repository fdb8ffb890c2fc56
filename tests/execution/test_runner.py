"""Runs of real notebooks on real kernels: overrides, evidence, failures, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from clearnb import Task, events
from clearnb.errors import (
    NotANotebookError,
    NotebookNotFoundError,
    ParameterError,
    TaskFailedError,
)
from clearnb.events import RunEvent
from clearnb.execution.runner import NotebookRunner
from tests.helpers import notebook, wait_until_gone

pytestmark = pytest.mark.timeout(180)


def _executed(task: Task) -> nbformat.NotebookNode:
    path = task.artifacts["notebook"].get_local_copy()
    return nbformat.read(path, as_version=4)


def test_overrides_reach_the_notebook_typed(runner: NotebookRunner) -> None:
    task = runner.execute(
        notebook("params"),
        {"count": "5", "General/ratio": 2, "flag": "true", "items": "[3, 4]", "Extra/depth": "9"},
        project_name="tests",
        task_name="typed overrides",
    )
    assert task.status == "completed", task.error
    seen = task.artifacts["seen"].get()
    assert seen["count"] == 5 and seen["ratio"] == 2.0 and seen["flag"] is True
    assert seen["types"] == ["int", "float", "str", "bool"]
    assert seen["items"] == [3, 4]
    assert seen["extra"] == {"depth": 9, "mode": "fast"}, "section Extra reached task.connect"
    assert seen["cwd"] == str(notebook("params").parent)
    assert task.get_parameters()["General/count"] == 5
    assert task.get_parameters()["Extra/mode"] == "fast"
    assert sorted(task.runtime["overrides"]) == [
        "Extra/depth",
        "General/count",
        "General/flag",
        "General/items",
        "General/ratio",
    ]
    executed = _executed(task)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "count = 5" in injected[0].source and "ratio = 2.0" in injected[0].source


def test_a_run_keeps_its_evidence(runner: NotebookRunner) -> None:
    seen: list[RunEvent] = []
    task = runner.execute(notebook("params"), {"count": 2}, on_event=seen.append)
    assert task.status == "completed", task.error
    figures = [a for name, a in task.artifacts.items() if name.startswith("figure_")]
    assert len(figures) == 1
    png = Path(figures[0].get_local_copy()).read_bytes()
    assert png.startswith(b"\x89PNG")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    image = figures[0].get()
    assert image.size == (width, height), (
        "the artifact loads as the picture stored (its PNG header)"
    )
    assert width > 50 and height > 50
    assert figures[0].metadata["cell_index"] == 5
    store = runner.backend.store
    logs = {r.title: r.payload["text"] for r in store.get_reports(task.id, kind="log")}
    assert "stdout line 2" in logs["stdout"]
    assert "stderr line" in logs["stderr"]
    cells = task.runtime["cells"]
    assert len(cells) == len(_executed(task).cells)
    assert all(c["status"] == "completed" and c["duration"] is not None for c in cells)
    assert task.runtime["duration"] > 0
    record = task.record
    assert record.started is not None and record.completed is not None
    assert record.completed >= record.started
    kinds = [e.kind for e in seen]
    assert kinds[0] == events.TASK_STARTED and kinds[-1] == events.TASK_FINISHED
    started = [e.payload["index"] for e in seen if e.kind == events.CELL_STARTED]
    assert started == list(range(len(cells)))
    persisted = [e.kind for e in store.get_events(task.id)]
    assert persisted == kinds


def test_a_raising_cell_fails_the_task_and_marks_the_notebook(runner: NotebookRunner) -> None:
    task = runner.execute(notebook("raises"), {"value": 7})
    assert task.status == "failed"
    error = task.error
    assert error is not None
    assert error["ename"] == "ValueError" and error["evalue"] == "boom 7"
    executed = _executed(task)
    assert "papermill-error-cell-tag" in executed.cells[0].metadata.get("tags", [])
    failing = next(
        c for c in executed.cells if c.get("metadata", {}).get("papermill", {}).get("exception")
    )
    assert "raise ValueError" in failing.source
    assert error["source"] == failing.source
    assert "ValueError: boom 7" in error["reason"]
    assert not any("never runs" in json.dumps(c.get("outputs", [])) for c in executed.cells)
    assert wait_until_gone(task.runtime["kernel_pid"])


def test_raise_on_error_raises_with_the_task(runner: NotebookRunner) -> None:
    with pytest.raises(TaskFailedError) as info:
        runner.execute(notebook("raises"), raise_on_error=True)
    assert "boom 1" in str(info.value)
    assert Task.get_task(task_id=info.value.task_id).status == "failed"


def test_a_dead_kernel_fails_the_task(runner: NotebookRunner) -> None:
    task = runner.execute(notebook("exits"))
    assert task.status == "failed"
    assert task.error is not None and "kernel died" in task.error["reason"]
    executed = _executed(task)
    outputs = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "about to exit" in outputs and "DeadKernelError" in outputs
    assert "never runs" not in outputs
    assert wait_until_gone(task.runtime["kernel_pid"])


def test_an_endless_cell_hits_the_time_limit(runner: NotebookRunner) -> None:
    task = runner.execute(notebook("loops"), time_limit=2)
    assert task.status == "failed"
    assert task.error is not None and "time limit" in task.error["reason"]
    assert task.runtime["duration"] < 30
    assert "TimeLimitExceeded" in json.dumps([c.get("outputs", []) for c in _executed(task).cells])
    assert wait_until_gone(task.runtime["kernel_pid"])


def test_a_clone_runs_with_its_own_parameters(runner: NotebookRunner) -> None:
    template = Task.create(project_name="tests", task_name="template", notebook=notebook("params"))
    assert template.status == "created"
    assert template.get_parameters()["General/count"] == 1
    draft = Task.clone(template, name="clone")
    draft.set_parameter("General/count", 11)
    draft.set_parameter("Extra/mode", "slow")
    assert template.reload().get_parameters()["General/count"] == 1
    task = runner.execute(task=draft)
    assert task.id == draft.id and task.status == "completed", task.error
    seen = task.artifacts["seen"].get()
    assert seen["count"] == 11 and seen["extra"]["mode"] == "slow"


def _count(runner: NotebookRunner) -> int:
    return len(runner.backend.store.find_tasks())


def test_bad_input_is_refused_before_anything_runs(runner: NotebookRunner, tmp_path: Path) -> None:
    before = _count(runner)
    with pytest.raises(NotebookNotFoundError, match="not found"):
        runner.execute(tmp_path / "missing.ipynb")
    text = tmp_path / "notes.ipynb"
    text.write_text("just some text")
    with pytest.raises(NotANotebookError, match="not a Jupyter notebook"):
        runner.execute(text)
    other_json = tmp_path / "data.ipynb"
    other_json.write_text('{"a": 1}')
    with pytest.raises(NotANotebookError):
        runner.execute(other_json)
    with pytest.raises(ParameterError, match="no cell tagged 'parameters'"):
        runner.execute(notebook("no_params"), {"value": 2})
    with pytest.raises(ParameterError) as info:
        runner.execute(notebook("params"), {"cuont": 2, "ratio": "half"})
    message = str(info.value)
    assert "2 parameter problems" in message
    assert "'cuont'" in message and "count, flag, items, label, ratio" in message
    assert "'half' cannot be converted" in message
    assert _count(runner) == before, "refused input must not record a task"


def test_execute_notebook_runs_one_notebook_as_a_task(home: Path) -> None:
    import clearnb

    task = clearnb.execute_notebook(
        notebook("params"),
        parameters={"General/ratio": 0.25, "label": "seed"},
        project_name="examples",
        task_name="one-off",
    )
    assert task.status == "completed", task.error
    assert task.artifacts["seen"].get()["ratio"] == 0.25
    found = Task.get_task(project_name="examples", task_name="one-off")
    assert found.id == task.id
    assert found.get_parameter("General/label") == "seed"


def test_a_running_notebook_can_be_aborted(runner: NotebookRunner) -> None:
    import threading

    from clearnb.execution.runner import RunHandle

    handle = RunHandle()
    started = threading.Event()
    results: list[Task] = []

    def on_event(event: RunEvent) -> None:
        last = event.payload.get("count", 0) - 1
        if event.kind == events.CELL_STARTED and event.payload["index"] == last:
            started.set()

    worker = threading.Thread(
        target=lambda: results.append(
            runner.execute(notebook("loops"), handle=handle, on_event=on_event)
        )
    )
    worker.start()
    assert started.wait(60), "the endless cell never started"
    handle.abort("stopped by the test")
    worker.join(60)
    assert results, "the run did not return after abort"
    task = results[0]
    assert task.status == "aborted"
    assert task.error is not None and "stopped by the test" in task.error["reason"]
    assert "RunAborted" in json.dumps([c.get("outputs", []) for c in _executed(task).cells])
    assert wait_until_gone(task.runtime["kernel_pid"])


def test_a_run_that_prints_without_end_keeps_bounded_output(
    runner: NotebookRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 MB printed under a 1 MB limit: the notebook keeps about 1 MB and says what it cut
    and how to keep more; the store keeps the last 64,000 characters of stdout."""
    import nbformat

    from clearnb.backend import Backend

    monkeypatch.setenv("CLEARNB_OUTPUT_LIMIT", "1MB")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nb.cells = [
        nbformat.v4.new_code_cell("for i in range(60_000):\n    print(f'{i:08d}' + 'x' * 91)"),
        nbformat.v4.new_code_cell("print('after the flood')"),
    ]
    path = tmp_path / "flood.ipynb"
    nbformat.write(nb, path)
    task = runner.execute(path)
    assert task.status == "completed", task.error
    executed = Path(task.artifacts["notebook"].get_local_copy())
    assert executed.stat().st_size < 1_500_000, executed.stat().st_size
    cells = nbformat.read(executed, as_version=4).cells
    flood = "".join(o.get("text", "") for o in cells[0].outputs)
    assert "00000000" in flood, "the first lines are kept"
    assert "[clearnb] this run's outputs reached their limit of 1 MB (CLEARNB_OUTPUT_LIMIT)" in (
        flood
    )
    assert "more output of this cell was not kept. Set CLEARNB_OUTPUT_LIMIT=500MB" in flood
    assert "00059999" not in flood
    after = "".join(o.get("text", "") for o in cells[1].outputs)
    assert "limit" in after, "a later cell that prints says it was cut too"
    logs = Backend.for_config(runner.config).store.get_reports(task.id, "log")
    stdout = next(r for r in logs if r.title == "stdout").payload["text"]
    assert len(stdout) <= 64_000 + 100
    assert stdout.startswith("[… ") and "earlier characters are in the executed notebook" in stdout
    nbformat.validate(nbformat.read(executed, as_version=4))


KILLED_RUN = """
import sys
from clearnb import execute_notebook
execute_notebook(sys.argv[1], parameters={"seconds": 120.0})
"""


@pytest.mark.parametrize("how", ["execute_notebook", "clearnb task run"])
def test_a_task_whose_process_is_killed_is_settled_failed(tmp_path: Path, how: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    from clearnb.backend import Backend
    from clearnb.config import Config
    from tests.helpers import NOTEBOOKS, kernel_pids_of, wait_until

    home = tmp_path / "home"
    env = {**os.environ, "CLEARNB_HOME": str(home)}
    env.pop("CLEARNB_TASK_ID", None)
    sleepy = str(NOTEBOOKS / "pipeline" / "sleepy.ipynb")
    if how == "execute_notebook":
        command = [sys.executable, "-c", KILLED_RUN, sleepy]
    else:
        clearnb = Path(sys.executable).parent / "clearnb"
        command = [str(clearnb), "task", "run", sleepy, "-p", "seconds", "120"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = Backend.open(Config.at(home)).store
    try:
        running = wait_until(
            lambda: store.find_tasks(status="running") if home.exists() else [], 120, "the run"
        )
        owner = running[0].runtime["owner"]
        assert owner["pid"] == process.pid and owner["host"]
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        ended = store.expire_leases()
        assert [r.id for r in ended] == [running[0].id]
        record = store.get_task(running[0].id)
        assert record.status == "failed"
        assert f"process {process.pid} on " in record.error["reason"]
        assert "is gone" in record.error["reason"] and record.completed is not None
        assert store.expire_leases() == [], "settled once"
        wait_until(lambda: not kernel_pids_of(home), 60, "the dead run's kernel to end")
    finally:
        if process.poll() is None:
            process.kill()
        store.close()


@pytest.mark.parametrize("failures", [2, 10])
def test_a_run_whose_end_cannot_be_stored_is_retried_then_failed(
    runner: NotebookRunner, monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    """The store is full for a moment (2 refusals: the retry stores the end) or for good
    (then the task is failed with the reason, in a smaller write)."""
    from clearnb.errors import StoreError
    from clearnb.store import Store

    store_end = Store.merge_runtime
    refused: list[str] = []

    def full(self: Store, task_id: str, values: Any, **fields: Any) -> Any:
        if "completed" in fields and len(refused) < failures:
            refused.append(task_id)
            raise StoreError("database or disk is full")
        return store_end(self, task_id, values, **fields)

    monkeypatch.setattr(Store, "merge_runtime", full)
    task = runner.execute(notebook("params"))
    if failures == 2:
        assert task.status == "completed" and len(refused) == 2
    else:
        assert task.status == "failed"
        assert task.error["reason"] == (
            "the run ended completed, but its end could not be stored: database or disk is full"
        )
    assert task.reload().status != "running"

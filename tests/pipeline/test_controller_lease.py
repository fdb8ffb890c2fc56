"""A running controller holds a lease on its Task: aborts reach it, and its death is seen
from any machine once the lease expires."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb import PipelineController
from clearnb.backend import Backend
from clearnb.errors import PipelineError
from clearnb.status import ABORTED
from clearnb.store import Store, TaskRecord, open_store
from clearnb.store.pipelines import recover
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    yield tmp_path


def test_a_running_controller_holds_a_lease_and_obeys_an_abort(home: Path) -> None:
    store = Backend.for_config().store
    pipe = PipelineController(name="leased", project="tests")
    pipe.add_step(
        name="sleepy",
        notebook=str(NOTEBOOKS / "pipeline" / "sleepy.ipynb"),
        parameter_override={"General/seconds": 60.0},
    )
    pipe.start()
    deadline = time.monotonic() + 30
    while store.get_task(pipe.id).worker is None and time.monotonic() < deadline:
        time.sleep(0.05)
    record = store.get_task(pipe.id)
    assert record.worker == f"controller {socket.gethostname()}:{os.getpid()}"
    assert record.lease_expires is not None and record.lease_expires > time.time() + 30

    store.request_abort(pipe.id, "stopped from elsewhere")
    assert pipe.wait(timeout=0.5), "the abort reached the controller"  # minutes (30 s)
    with contextlib.suppress(PipelineError):
        pipe.stop()
    record = store.get_task(pipe.id)
    assert record.status == "aborted" and record.worker is None
    assert record.error == {"reason": "stopped: stopped from elsewhere"}
    assert pipe.get_pipeline_dag()["sleepy"].status == ABORTED


def running_pipeline(store: Store, host: str, lease_expires: float) -> tuple[str, str]:
    """A pipeline run shown running, controlled from ``host``, with one running step."""
    pipe = TaskRecord(
        project="tests",
        name="elsewhere",
        task_type="controller",
        status="running",
        worker=f"controller {host}:4242",
        lease_expires=lease_expires,
    )
    step = TaskRecord(project="tests", name="step", status="running", parent=pipe.id)
    pipe.runtime = {
        "pipeline": {
            "name": "elsewhere",
            "project": "tests",
            "status": "running",
            "order": ["step"],
            "nodes": {"step": {"status": "running", "executed": step.id, "parents": []}},
            "controller": {"host": host, "pid": 4242, "since": 1},
        }
    }
    store.create_task(pipe)
    store.create_task(step)
    return pipe.id, step.id


def test_a_controller_on_another_machine_is_settled_once_its_lease_expires(
    tmp_path: Path,
) -> None:
    with open_store(f"sqlite:///{tmp_path}/clearnb.db") as store:
        alive, _ = running_pipeline(store, "far-away", time.time() + 60)
        assert not recover(store, alive), "a controller renewing its lease is left alone"
        assert store.get_task(alive).status == "running"

        dead, step = running_pipeline(store, "far-away", time.time() - 1)
        assert recover(store, dead)
        record = store.get_task(dead)
        assert record.status == "failed"
        assert record.error is not None
        assert "the pipeline controller (far-away:4242) stopped responding" in (
            record.error["reason"]
        )
        state = record.runtime["pipeline"]
        assert state["status"] == ABORTED and state["nodes"]["step"]["status"] == ABORTED
        assert "stopped responding" in state["nodes"]["step"]["error"]["reason"]
        assert store.get_task(step).status == "aborted"

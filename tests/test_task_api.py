"""The rest of ClearML's Task API on a real store: status marks with ClearML's arguments,
dequeueing, task queries, scalars, parameters as dicts, configuration objects."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clearnb import Task
from clearnb.backend import Backend
from clearnb.dispatch import QueueWarning
from clearnb.errors import StoreError, TaskNotFoundError
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(folder))
    for name in ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    return folder


def draft(name: str = "draft", project: str = "api") -> Task:
    """A clone of the params notebook's template: a draft tests may change."""
    template = Task.create(
        project_name=project, task_name=f"{name} template", notebook=notebook("params")
    )
    return Task.clone(template, name=name)


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


# -- status marks -----------------------------------------------------------------------------


def test_marks_keep_clearml_s_reason_and_message() -> None:
    failing = draft("failing")
    failing.mark_failed(status_reason="bad data", status_message="column x is empty")
    stored = Task.get_task(failing.id)
    assert stored.status == "failed"
    assert stored.error == {"reason": "bad data", "message": "column x is empty"}
    assert stored.runtime["status_message"] == "column x is empty"
    done = draft("done")
    done.mark_completed(status_message="all good")
    assert Task.get_task(done.id).runtime["status_message"] == "all good"
    assert done.status == "completed" and done.error is None


def test_a_mark_that_cannot_be_written_is_logged_unless_errors_are_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = draft("gone")
    gone.backend.store.delete_task(gone.id)
    with caplog.at_level(logging.WARNING, logger="clearnb.taskstatus"):
        gone.mark_failed(status_reason="late")
        gone.mark_completed()
    assert sum("could not mark task" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(TaskNotFoundError):
        gone.mark_failed(ignore_errors=False)
    with pytest.raises(TaskNotFoundError):
        gone.mark_completed(ignore_errors=False)


def test_mark_stopped_asks_an_agent_to_stop_unless_forced() -> None:
    task = draft("on an agent")
    store = task.backend.store
    store.update_task(task.id, status="running", worker="host:1", lease_expires=2e9)
    task.mark_stopped(status_message="enough")
    record = Task.get_task(task.id).record
    assert (record.status, record.abort_requested) == ("running", "enough")
    task.mark_stopped(force=True, status_message="now")
    record = Task.get_task(task.id).record
    assert record.status == "aborted" and record.error == {"reason": "now"}


# -- queues -----------------------------------------------------------------------------------


def test_a_queued_task_is_dequeued_back_to_a_draft() -> None:
    task = draft("queued")
    with pytest.warns(QueueWarning):
        Task.enqueue(task, queue_name="nobody")
    assert task.status == "queued"
    answer = Task.dequeue(task)
    assert answer["dequeued"] == 1 and answer["fields"]["status"] == "created"
    assert answer["fields"]["previous_queue"] == "nobody"
    assert task.status == "created", "the Task given is reloaded"
    stored = Task.get_task(task.id).record
    assert (stored.status, stored.queue, stored.enqueued) == ("created", None, None)
    assert task.backend.store.queued_tasks("nobody") == []
    with pytest.warns(QueueWarning):
        Task.enqueue(task.id, queue_name="nobody")
    assert Task.dequeue(task.id)["fields"]["status"] == "created", "an id works too"


def test_a_task_that_is_not_queued_cannot_be_dequeued() -> None:
    task = draft("never queued")
    with pytest.raises(StoreError, match="is created, not queued") as caught:
        Task.dequeue(task)
    assert caught.value.fields["status"] == "created"
    task.mark_started()
    with pytest.raises(StoreError, match="clearnb task abort"):
        Task.dequeue(task.id)
    assert Task.get_task(task.id).status == "running", "refusing changed nothing"


def test_backend_is_the_tasks_store() -> None:
    task = draft("where")
    assert task.backend is Backend.for_config()

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
        project_name="templates", task_name=f"{name} template", notebook=notebook("params")
    )
    return Task.clone(template, name=name, project=project)


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


# -- finding tasks ----------------------------------------------------------------------------


def test_get_tasks_takes_clearml_s_filters() -> None:
    first = draft("train model", project="vision")
    second = draft("evaluate model", project="vision")
    third = draft("Train again", project="text")
    first.mark_completed()
    second.mark_failed(status_reason="x")
    third.mark_started()
    mine = {first.id, second.id, third.id}

    def found(**filters: object) -> list[str]:
        return [t.id for t in Task.get_tasks(**filters) if t.id in mine]  # type: ignore[arg-type]

    assert found(project_name=["vision", "text"]) == [third.id, second.id, first.id]
    assert found(project_name="vision") == [second.id, first.id]
    assert found(task_name="model") == [second.id, first.id], "a partial match"
    assert found(task_name="^train") == [first.id], "a regular expression, case and all"
    assert found(task_name="^Train again$") == [third.id]
    assert found(task_filter={"status": ["completed", "failed"]}) == [second.id, first.id]
    assert found(task_filter={"status": ["in_progress"]}) == [third.id], "ClearML's names"
    assert found(task_filter={"status": ["published"]}) == [], "never reached here"
    assert found(task_filter={"order_by": ["name"]}) == [third.id, second.id, first.id]
    assert found(project_name="vision", task_filter={"order_by": ["-last_update"]}) == [
        second.id,
        first.id,
    ]
    assert found(task_filter={"order_by": ["created"]}) == [first.id, second.id, third.id]
    assert found(task_filter={"search_text": "AGAIN"}) == [third.id]
    assert found(task_filter={"_any_": {"fields": ["name", "project"], "pattern": "^text$"}}) == [
        third.id
    ]
    assert found(task_filter={"_all_": {"fields": ["name", "project"], "pattern": "o"}}) == [
        second.id,
        first.id,
    ]
    assert found(task_filter={"id": [first.id, third.id]}) == [third.id, first.id]
    assert found(task_filter={"type": ["notebook"], "parent": first.parent}) == [first.id]
    assert found(allow_archived=False) == [third.id, second.id, first.id]


def test_get_tasks_pages_like_clearml() -> None:
    made = [draft(f"paged {n}", project="pages").id for n in range(5)]
    newest_first = made[::-1]

    def page(number: int, size: int) -> list[str]:
        filters = {"page": number, "page_size": size, "order_by": ["-created"]}
        return [t.id for t in Task.get_tasks(project_name="pages", task_filter=filters)]

    assert page(0, 2) == newest_first[:2]
    assert page(1, 2) == newest_first[2:4]
    assert page(2, 2) == newest_first[4:]
    assert page(3, 2) == []


def test_get_tasks_refuses_what_it_cannot_filter_by_and_warns_about_what_means_nothing() -> None:
    from clearnb.errors import ClearnbError, CompatibilityWarning

    task = draft("filtered")
    with pytest.raises(ClearnbError, match="'colour' are not understood"):
        Task.get_tasks(task_filter={"colour": "red"})
    with pytest.raises(ClearnbError, match="Unknown task status 'sleeping'"):
        Task.get_tasks(task_filter={"status": ["sleeping"]})
    with pytest.raises(ClearnbError, match="cannot be ordered by"):
        Task.get_tasks(task_filter={"order_by": ["-height"]})
    with pytest.raises(ClearnbError, match="not a regular expression"):
        Task.get_tasks(task_name="(")
    with pytest.warns(CompatibilityWarning, match=r"user=\['someone'\].*no owner"):
        found = Task.get_tasks(task_name="^filtered$", task_filter={"user": ["someone"]})
    assert [t.id for t in found] == [task.id]


def test_get_task_matches_the_whole_name_and_takes_a_task_filter() -> None:
    older = draft("exact", project="lookup")
    newer = draft("exact", project="lookup")
    draft("exact but longer", project="lookup")
    newer.mark_completed()
    assert Task.get_task(project_name="lookup", task_name="exact").id == newer.id
    got = Task.get_task(
        project_name="lookup", task_name="exact", task_filter={"status": ["created"]}
    )
    assert got.id == older.id
    with pytest.raises(TaskNotFoundError):
        Task.get_task(project_name="lookup", task_name="exa")


# -- facts ------------------------------------------------------------------------------------


def test_last_scalar_metrics_have_clearml_s_shape() -> None:
    task = draft("scalars")
    logger = task.get_logger()
    for iteration, value in enumerate([0.9, 0.4, 0.6]):
        logger.report_scalar("loss", "train", value, iteration)
    logger.report_scalar("loss", "val", float("nan"), 0)
    logger.report_scalar("loss", "val", 0.7, 1)
    logger.report_scalar("acc", "val", 0.5, 3)
    metrics = task.get_last_scalar_metrics()  # writes what the logger still holds first
    assert metrics == {
        "loss": {
            "train": {"last": 0.6, "min": 0.4, "max": 0.9},
            "val": {"last": 0.7, "min": 0.7, "max": 0.7},
        },
        "acc": {"val": {"last": 0.5, "min": 0.5, "max": 0.5}},
    }
    assert draft("no scalars").get_last_scalar_metrics() == {}


def test_parameters_as_nested_dicts_go_both_ways() -> None:
    task = draft("nested")
    task.set_parameters_as_dict(
        {"Train": {"lr": 0.1, "optimizer": {"name": "adam", "beta": 0.9}, "layers": [1, 2]}}
    )
    stored = Task.get_task(task.id)
    assert stored.get_parameters()["Train/optimizer/name"] == "adam"
    as_dict = stored.get_parameters_as_dict()
    assert as_dict["Train"] == {
        "lr": 0.1,
        "optimizer": {"name": "adam", "beta": 0.9},
        "layers": [1, 2],
    }
    assert as_dict["General"]["count"] == 1, "the notebook's parameters are kept"
    assert stored.get_parameters_as_dict(cast=True) == as_dict
    task.set_parameters_as_dict({"Train": {"lr": 0.2}})
    assert Task.get_task(task.id).get_parameters_as_dict()["Train"]["optimizer"]["name"] == "adam"


def test_tags_in_one_string_are_split_and_comments_are_kept() -> None:
    task = draft("tagged")
    task.add_tags("best  final")
    task.add_tags(["best", "kept"])
    assert Task.get_task(task.id).get_tags() == ["best", "final", "kept"]
    task.set_comment("first try")
    assert Task.get_task(task.id).comment == "first try"
    task.comment = "second try"
    assert Task.get_task(task.id).comment == "second try"


def test_a_process_that_runs_no_task_for_clearnb_runs_locally() -> None:
    assert Task.running_locally() is True


# -- Task.init's arguments without meaning here -----------------------------------------------

INIT_WITH_CLEARML_ARGUMENTS = """
import json
import warnings
from clearnb import Task

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    task = Task.init(
        project_name="compat",
        task_name="init arguments",
        output_uri="s3://bucket/models",
        auto_connect_frameworks={"pytorch": False},
        auto_resource_monitoring=False,
        auto_connect_streams=True,
        reuse_last_task_id=False,
        deferred_init=False,
    )
    again = Task.init(project_name="compat", task_name="init arguments")
said = [
    {"message": str(w.message), "file": w.filename}
    for w in caught
    if w.category.__name__ == "CompatibilityWarning"
]
print(json.dumps({"warnings": said, "same": again is task}))
"""


def test_task_init_records_and_names_the_arguments_that_do_nothing_here(tmp_path: Path) -> None:
    import json

    from tests.test_task import run_script

    done = run_script(tmp_path, INIT_WITH_CLEARML_ARGUMENTS)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["same"] is True
    (warning,) = said["warnings"]
    assert warning["file"].endswith("user_script.py"), "the warning points at the caller"
    message = warning["message"]
    assert message.startswith(
        "Task.init: output_uri='s3://bucket/models', auto_connect_frameworks={'pytorch': False}, "
        "auto_resource_monitoring=False recorded but not used: "
    )
    assert "CLEARNB_ARTIFACT_URL" in message and "resources are not monitored" in message
    assert "reuse_last_task_id" not in message and "deferred_init" not in message
    task = Task.get_task(project_name="compat", task_name="init arguments")
    assert task.runtime["unused_arguments"] == {
        "output_uri": "s3://bucket/models",
        "auto_connect_frameworks": {"pytorch": False},
        "auto_resource_monitoring": False,
    }
    assert task.status == "completed"

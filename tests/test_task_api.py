"""The rest of ClearML's Task API on a real store: status marks with ClearML's arguments,
dequeueing, task queries, scalars, parameters as dicts, configuration objects."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from clearnb import Task
from clearnb.backend import Backend
from clearnb.dispatch import QueueWarning
from clearnb.errors import StoreError, TaskNotFoundError
from tests.helpers import isolated_home, notebook

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_home(tmp_path / "home", monkeypatch)


def draft(name: str = "draft", project: str = "api") -> Task:
    """A clone of the params notebook's template: a draft tests may change."""
    template = Task.create(
        project_name="templates", task_name=f"{name} template", notebook=notebook("params")
    )
    return Task.clone(template, name=name, project=project)


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def run_script(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as ``python user_script.py`` in ``folder`` (its working folder too),
    with this tree first on the path and this test's store."""
    from tests.test_task import script_env

    script = folder / "user_script.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )


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


def test_connect_can_ignore_what_a_draft_holds() -> None:
    task = draft("holds values")
    task.set_parameter("Train/lr", 0.5)
    applied = task.connect({"lr": 0.1}, name="Train")
    assert applied == {"lr": 0.5}, "the draft's value wins"
    kept = task.connect({"lr": 0.2}, name="Train", ignore_remote_overrides=True)
    assert kept == {"lr": 0.2}
    assert Task.get_task(task.id).get_parameters()["Train/lr"] == 0.2


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
        auto_connect_frameworks={"pytorch": False, "tensorflow": ["*.h5"]},
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

    done = run_script(tmp_path, INIT_WITH_CLEARML_ARGUMENTS)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["same"] is True
    (warning,) = said["warnings"]
    assert warning["file"].endswith("user_script.py"), "the warning points at the caller"
    message = warning["message"]
    assert message.startswith(
        "Task.init: output_uri='s3://bucket/models', auto_connect_frameworks={'tensorflow': "
        "['*.h5']}, auto_resource_monitoring=False recorded but not used: "
    )
    assert "CLEARNB_ARTIFACT_URL" in message and "resources are not monitored" in message
    assert "reuse_last_task_id" not in message and "deferred_init" not in message
    task = Task.get_task(project_name="compat", task_name="init arguments")
    assert task.runtime["unused_arguments"] == {
        "output_uri": "s3://bucket/models",
        "auto_connect_frameworks": {"tensorflow": ["*.h5"]},  # pytorch's is honoured
        "auto_resource_monitoring": False,
    }
    assert task.status == "completed"


# -- configuration objects --------------------------------------------------------------------

BY_HAND = """
import json
from pathlib import Path
from clearnb import Task

task = Task.init(project_name="configs", task_name="by hand")
config = {"lr": 0.1, "layers": [1, 2]}
returned = task.connect_configuration(config, name="train", description="the optimiser")
config["lr"] = 0.2  # changed after connecting: recorded too
settings = Path("settings.yaml")
settings.write_text("batch: 32\\nshuffle: true\\n")
path = task.connect_configuration(settings)
listed = task.connect_configuration([1, 2, 3], name="sizes")
said = {"same": returned is config, "path": str(path), "is_path": isinstance(path, Path)}
print(json.dumps(said))
"""


def test_a_task_started_by_hand_records_the_configuration_it_connects(tmp_path: Path) -> None:
    import json

    done = run_script(tmp_path, BY_HAND)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {"same": True, "path": "settings.yaml", "is_path": True}
    task = Task.get_task(project_name="configs", task_name="by hand")
    assert task.get_configuration_object_as_dict("train") == {"lr": 0.2, "layers": [1, 2]}
    assert task.get_configuration_object("General") == "batch: 32\nshuffle: true\n"
    assert task.get_configuration_object_as_dict("General") == {"batch": 32, "shuffle": True}
    assert task.get_configuration_object_as_dict("sizes") == [1, 2, 3]
    assert sorted(task.get_configuration_objects()) == ["General", "sizes", "train"]
    stored = task.record.configuration
    assert stored["train"]["description"] == "the optimiser"
    assert stored["train"]["type"] == "dictionary" and stored["General"]["type"] == "yaml"
    assert task.get_configuration_object("missing") is None
    assert task.get_configuration_object_as_dict("missing") is None


def test_configuration_objects_are_set_read_and_carried_by_clones() -> None:
    from clearnb.errors import ConfigurationObjectError

    task = draft("configured")
    task.set_configuration_object("model", config_dict={"depth": 4})
    task.set_configuration_object("notes", config_text="free text, not a dict", config_type="txt")
    assert task.get_configuration_object_as_dict("model") == {"depth": 4}
    assert task.get_configuration_objects()["notes"] == "free text, not a dict"
    with pytest.raises(ConfigurationObjectError, match="neither JSON nor YAML"):
        task.get_configuration_object_as_dict("notes")
    with pytest.raises(ConfigurationObjectError, match="one of the two"):
        task.set_configuration_object("both", config_text="{}", config_dict={})
    with pytest.raises(ConfigurationObjectError, match="one of the two"):
        task.set_configuration_object("neither")
    clone = Task.clone(task, name="configured clone")
    assert clone.get_configuration_objects() == task.get_configuration_objects()
    with pytest.raises(ConfigurationObjectError, match="not int"):
        task.connect_configuration(3)  # type: ignore[type-var]
    with pytest.raises(ConfigurationObjectError, match="Could not connect configuration file"):
        task.connect_configuration("no/such/file.yaml", name="absent")


CONNECTS_CONFIGURATION = (
    "from pathlib import Path\n"
    "from clearnb import Task\n"
    "task = Task.init()\n"
    "config = {'lr': 0.1, 'depth': 3}\n"
    "same = task.connect_configuration(config, name='train')\n"
    "settings = Path('settings.yaml')\n"
    "settings.write_text('batch: 32\\n')\n"
    "local = task.connect_configuration(settings, name='files')\n"
    "kept = task.connect_configuration({'x': 1}, name='kept', ignore_remote_overrides=True)\n"
    "task.upload_artifact('seen', {\n"
    "    'config': config, 'same': same is config, 'file': Path(local).read_text(),\n"
    "    'is_path': isinstance(local, Path), 'kept': kept,\n"
    "    'locally': Task.running_locally(),\n"
    "})\n"
)


def test_a_run_uses_the_configuration_its_task_carries(tmp_path: Path) -> None:
    from clearnb.execution.runner import NotebookRunner
    from tests.test_task import write_notebook

    nb = write_notebook(tmp_path / "configured.ipynb", CONNECTS_CONFIGURATION)
    overrides = {"train": {"lr": 0.5}, "files": "batch: 64\n", "kept": {"x": 2}}
    with NotebookRunner(pool_size=0) as runner:
        ran = runner.execute(
            nb, runtime={"configuration_overrides": overrides}, raise_on_error=True
        )
        seen = ran.artifacts["seen"].get()
        assert seen["config"] == {"lr": 0.5}, "the override, in place of the code's dict"
        assert seen["same"] is True and seen["is_path"] is True
        assert seen["file"] == "batch: 64\n", "a local file holding the override"
        assert seen["kept"] == {"x": 1}, "ignore_remote_overrides keeps the code's"
        assert seen["locally"] is False, "a run is not local"
        stored = Task.get_task(ran.id)
        assert stored.get_configuration_object_as_dict("train") == {"lr": 0.5}
        assert stored.get_configuration_object("files") == "batch: 64\n"

        plain = Task.create(project_name="configs", task_name="template", notebook=nb)
        clone = Task.clone(plain, name="configured clone")
        clone.set_configuration_object("train", config_dict={"lr": 0.01, "depth": 8})
        rerun = runner.execute(task=clone, raise_on_error=True)
        again = rerun.artifacts["seen"].get()
        assert again["config"] == {"lr": 0.01, "depth": 8}, "the clone's stored object"
        assert again["file"] == "batch: 32\n", "nothing stored for it: the code's file"

        plain.set_configuration_object("files", config_text="batch: 1\n")
        from_template = runner.execute(task=plain, raise_on_error=True)
        assert from_template.id != plain.id, "a template's run is a new task"
        assert from_template.artifacts["seen"].get()["file"] == "batch: 1\n"


class Opaque:
    """A value only pickle can store."""


def test_upload_artifact_with_auto_pickle_false_refuses_what_only_pickle_stores() -> None:
    from clearnb.errors import CodecError

    task = draft("pickles")
    with pytest.raises(CodecError, match="auto_pickle=False refuses"):
        task.upload_artifact("opaque", Opaque(), auto_pickle=False)
    assert "opaque" not in task.reload().artifacts, "nothing is stored"
    assert task.upload_artifact("plain", {"a": 1}, auto_pickle=False)
    assert task.upload_artifact("opaque", Opaque())  # auto_pickle=True: pickled
    assert task.reload().artifacts["opaque"].type.endswith("Opaque")


def test_upload_artifact_names_an_extension_it_does_not_use() -> None:
    from clearnb.errors import CompatibilityWarning

    task = draft("extensions")
    with pytest.warns(CompatibilityWarning, match="extension_name='.csv.gz'"):
        task.upload_artifact("table", {"a": [1, 2]}, extension_name=".csv.gz")
    assert task.reload().artifacts["table"].metadata["unused_extension_name"] == ".csv.gz"

"""The Task API on a real store: templates, clones, parameters, lookups, artifacts, status."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clearnb import Task
from clearnb.errors import (
    ArtifactCorruptedError,
    ClearnbError,
    InvalidArtifactNameError,
    ParameterError,
    TaskNotFoundError,
)
from tests.helpers import isolated_home, notebook

pytestmark = pytest.mark.timeout(120)

PARAMS_DEFAULTS = {
    "count": 1,
    "ratio": 0.5,
    "label": "a",
    "flag": False,
    "items": [1, 2],
    "anything": None,
}
"""What the parameters cell of tests/notebooks/params.ipynb declares."""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_home(tmp_path / "home", monkeypatch)


def template(
    name: str = "template",
    tags: list[str] | None = None,
    parameters: dict[str, object] | None = None,
) -> Task:
    """The params notebook registered as a template in project ``tests``."""
    return Task.create(
        project_name="tests",
        task_name=name,
        notebook=notebook("params"),
        tags=tags,
        parameters=parameters,
    )


def draft(name: str = "draft") -> Task:
    """A draft task (a clone of the params template) whose parameters tests can change."""
    return Task.clone(template(), name=name)


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


# -- templates and clones ---------------------------------------------------------------------


def test_create_registers_a_template_with_the_notebook_defaults(home: Path) -> None:
    task = template(tags=["step"], parameters={"General/count": 4, "Extra/depth": 2})
    assert task.status == "created"
    assert task.notebook == str(notebook("params"))
    assert task.project == "tests" and task.name == "template"
    assert task.get_tags() == ["step"]
    assert task.runtime["template"] is True and len(task.runtime["code_hash"]) == 64
    stored = task.get_parameters_as_dict()
    # Extra comes from the dict the notebook connects (read from its code), then overridden
    assert stored == {
        "General": {**PARAMS_DEFAULTS, "count": 4},
        "Extra": {"depth": 2, "mode": "fast"},
    }
    again = Task.get_task(task_id=task.id)
    assert again.status == "created" and again.get_parameters_as_dict() == stored
    assert (home / "clearnb.db").is_file()


def test_create_without_a_notebook_says_what_to_pass() -> None:
    with pytest.raises(ClearnbError, match="notebook="):
        Task.create(project_name="tests", task_name="nothing")


def test_clone_is_a_draft_with_its_own_parameters() -> None:
    source = template()
    clone = Task.clone(source, name="clone")
    assert clone.id != source.id
    assert clone.status == "created" and clone.parent == source.id
    assert clone.name == "clone" and clone.project == "tests"
    assert clone.notebook == source.notebook
    assert clone.get_parameters_as_dict() == source.get_parameters_as_dict()
    clone.set_parameter("General/count", 9)
    clone.set_parameter("Train/lr", 0.01)
    assert clone.get_parameter("General/count") == 9
    assert source.get_parameters_as_dict() == {
        "General": PARAMS_DEFAULTS,
        "Extra": {"depth": 3, "mode": "fast"},
    }
    by_id = Task.clone(source.id)
    assert by_id.name == "template (clone)" and by_id.parent == source.id


# -- parameters -------------------------------------------------------------------------------


def test_set_parameters_replaces_every_parameter() -> None:
    task = draft()
    task.set_parameters({"General/count": 2, "Train/lr": 0.1}, epochs=3)
    assert task.get_parameters_as_dict() == {
        "General": {"count": 2, "epochs": 3},
        "Train": {"lr": 0.1},
    }
    assert task.get_parameters() == {"General/count": 2, "General/epochs": 3, "Train/lr": 0.1}
    task.set_parameters({"Other/x": "y"})
    assert task.get_parameters() == {"Other/x": "y"}
    assert Task.get_task(task_id=task.id).get_parameters() == {"Other/x": "y"}


def test_update_and_set_parameter_keep_the_others() -> None:
    task = draft()
    task.update_parameters({"General/count": 5, "Train/lr": np.float64(0.25)}, label="b")
    task.set_parameter("Train/epochs", np.int64(7))
    params = task.get_parameters()
    assert params["General/count"] == 5 and params["General/label"] == "b"
    assert params["General/ratio"] == 0.5, "untouched parameters stay"
    assert params["Train/lr"] == 0.25 and type(params["Train/lr"]) is float
    assert params["Train/epochs"] == 7 and type(params["Train/epochs"]) is int


def test_get_parameter_by_section_or_bare_name() -> None:
    task = draft()
    task.set_parameter("Train/lr", 0.5)
    assert task.get_parameter("General/items") == [1, 2]
    assert task.get_parameter("count") == 1, "a bare name is in General"
    assert task.get_parameter("Train/lr") == 0.5
    assert task.get_parameter("Train/missing") is None
    assert task.get_parameter("Nowhere/x", default="fallback") == "fallback"


def test_parameter_changes_by_another_handle_are_seen() -> None:
    task = draft()
    Task.get_task(task_id=task.id).set_parameter("General/count", 12)
    assert task.get_parameter("General/count") == 12
    assert task.get_parameters_as_dict()["General"]["count"] == 12


def test_connect_records_a_dict_and_a_namespace() -> None:
    task = draft()
    args = {"dataset_url": "", "random_state": 42, "test_size": 0.2}
    returned = task.connect(args, name="Args")
    assert returned is args
    assert args == {"dataset_url": "", "random_state": 42, "test_size": 0.2}
    namespace = argparse.Namespace(epochs=3, optimizer="adam")
    assert task.connect(namespace, name="Train") is namespace
    stored = Task.get_task(task_id=task.id).get_parameters_as_dict()
    assert stored["Args"] == {"dataset_url": "", "random_state": 42, "test_size": 0.2}
    assert type(stored["Args"]["test_size"]) is float
    assert stored["Train"] == {"epochs": 3, "optimizer": "adam"}


def test_connect_refuses_other_types_and_says_what_it_takes() -> None:
    task = draft()
    for wrong in ([("lr", 0.1)], ("lr", 0.1), "lr=0.1", 3):
        with pytest.raises(TypeError) as info:
            task.connect(wrong)
        message = str(info.value)
        assert "dict or an argparse.Namespace" in message
        assert type(wrong).__name__ in message
    assert "Train" not in task.get_parameters_as_dict()


def test_connect_applies_recorded_overrides_typed_like_the_values() -> None:
    task = draft()
    task.update_parameters(
        {"Train/lr": "0.3", "Train/epochs": "7", "Train/shuffle": "false", "Train/extra": 1}
    )
    train = {"lr": 0.1, "epochs": 2, "shuffle": True, "name": "net"}
    task.connect(train, name="Train")
    assert train["lr"] == 0.3 and type(train["lr"]) is float
    assert train["epochs"] == 7 and type(train["epochs"]) is int
    assert train["shuffle"] is False
    assert train["name"] == "net", "values without an override stay"
    assert train["extra"] == 1
    stored = task.get_parameters_as_dict()["Train"]
    assert stored == {"lr": 0.3, "epochs": 7, "shuffle": False, "extra": 1, "name": "net"}

    namespace = argparse.Namespace(lr=0.1, epochs=2, shuffle=True, name="net")
    task.connect(namespace, name="Train")
    assert namespace.lr == 0.3 and namespace.epochs == 7 and namespace.shuffle is False


def test_connect_reports_every_override_that_does_not_fit() -> None:
    task = draft()
    task.update_parameters({"Train/epochs": "many", "Train/shuffle": "maybe"})
    train = {"epochs": 2, "shuffle": True}
    with pytest.raises(ParameterError) as info:
        task.connect(train, name="Train")
    message = str(info.value)
    assert "2 parameter problems" in message
    assert "Train/epochs: 'many'" in message and "Train/shuffle: 'maybe'" in message
    assert train == {"epochs": 2, "shuffle": True}, "a refused override changes nothing"


# -- finding tasks ----------------------------------------------------------------------------


def test_get_task_by_id_and_the_newest_by_project_and_name() -> None:
    older = Task.create(project_name="lookup", task_name="step", notebook=notebook("params"))
    newer = Task.create(project_name="lookup", task_name="step", notebook=notebook("raises"))
    Task.create(project_name="lookup", task_name="other", notebook=notebook("params"))
    assert Task.get_task(task_id=older.id).notebook == str(notebook("params"))
    found = Task.get_task(project_name="lookup", task_name="step")
    assert found.id == newer.id
    assert found.notebook == str(notebook("raises"))
    assert Task.get_task(task_name="other").project == "lookup"


def test_an_unknown_task_id_is_named_in_the_error() -> None:
    template()
    with pytest.raises(TaskNotFoundError) as info:
        Task.get_task(task_id="0123456789abcdef0123456789abcdef")
    assert "'0123456789abcdef0123456789abcdef'" in str(info.value)
    assert info.value.fields["task_id"] == "0123456789abcdef0123456789abcdef"
    assert "clearnb task ls" in str(info.value)


def test_an_unknown_task_name_is_not_found() -> None:
    template("known")
    with pytest.raises(TaskNotFoundError) as info:
        Task.get_task(project_name="tests", task_name="unknown")
    assert "'unknown'" in str(info.value) and "'tests'" in str(info.value)
    with pytest.raises(TaskNotFoundError):
        Task.get_task(project_name="elsewhere", task_name="known")
    with pytest.raises(ClearnbError, match="task_id"):
        Task.get_task()


def test_get_tasks_filters_by_project_name_tags_status_and_ids() -> None:
    first = template("a", tags=["x"])
    second = template("b", tags=["y"])
    third = Task.create(project_name="elsewhere", task_name="a", notebook=notebook("params"))
    second.mark_completed()
    assert ids(Task.get_tasks(project_name="tests")) == [second.id, first.id]
    assert ids(Task.get_tasks(task_name="a")) == [third.id, first.id]
    assert ids(Task.get_tasks(tags=["y"])) == [second.id]
    assert ids(Task.get_tasks(tags=["-x"], project_name="tests")) == [second.id]
    assert ids(Task.get_tasks(task_filter={"status": ["completed"]})) == [second.id]
    assert ids(Task.get_tasks(task_filter={"status": "created"})) == [third.id, first.id]
    assert ids(Task.get_tasks(task_ids=[third.id, first.id])) == [third.id, first.id]
    assert Task.get_tasks(project_name="nowhere") == []


# -- artifacts --------------------------------------------------------------------------------


def test_an_artifact_name_with_a_path_is_refused_and_nothing_changes(home: Path) -> None:
    task = draft()
    task.upload_artifact("kept", np.arange(4))
    stored_before = sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file())
    for bad in ("../x", "..", "a/b", "", ".hidden"):
        with pytest.raises(InvalidArtifactNameError) as info:
            task.upload_artifact(bad, {"would": "escape"})
        assert "Invalid artifact name" in str(info.value)
    stored_after = sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file())
    new_files = set(stored_after) - set(stored_before)
    assert all(p.name.startswith("clearnb.db") for p in new_files), new_files
    assert not (home / "artifacts" / "x").exists()
    assert list(task.artifacts) == ["kept"]
    np.testing.assert_array_equal(task.artifacts["kept"].get(), np.arange(4))


def _corrupt(task: Task, how: str) -> Task:
    task.upload_artifact("first", {"a": 1})
    task.upload_artifact("data", np.arange(100, dtype=np.float64))
    path = Path(task.artifacts["data"].url)
    content = path.read_bytes()
    if how == "truncated":
        path.write_bytes(content[: len(content) // 2])
    else:
        path.write_bytes(content[:-8] + np.float64(-1).tobytes())
    return task


@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_a_damaged_artifact_file_is_reported_on_get(how: str) -> None:
    task = _corrupt(draft(), how)
    artifact = Task.get_task(task_id=task.id).artifacts["data"]
    with pytest.raises(ArtifactCorruptedError) as info:
        artifact.get()
    message = str(info.value)
    assert "'data'" in message and task.id in message
    assert ("truncated" if how == "truncated" else "altered") in message
    assert info.value.fields["reason"] == how and info.value.fields["task_id"] == task.id
    with pytest.raises(ArtifactCorruptedError):
        artifact.get_local_copy()
    assert task.artifacts["first"].get() == {"a": 1}, "other artifacts still load"


def test_artifacts_see_uploads_made_by_another_process(home: Path) -> None:
    task = draft()
    task.upload_artifact("mine", [1, 2, 3])
    view = task.artifacts
    assert list(view) == ["mine"]
    code = (
        "import sys, numpy as np\n"
        "from clearnb import Task\n"
        "task = Task.get_task(task_id=sys.argv[1])\n"
        "task.upload_artifact('theirs', np.eye(3))\n"
        "task.upload_artifact('mine', {'replaced': True})\n"
    )
    env = {**os.environ, "CLEARNB_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code, task.id], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert list(view) == ["mine"], "a dict taken earlier is a snapshot"
    fresh = task.artifacts
    assert set(fresh) == {"mine", "theirs"}
    np.testing.assert_array_equal(fresh["theirs"].get(), np.eye(3))
    assert fresh["mine"].get() == {"replaced": True}
    assert fresh["theirs"].type == "numpy.ndarray" and fresh["theirs"].task_id == task.id


def test_artifact_facts_are_recorded() -> None:
    task = draft()
    task.upload_artifact("table", {"rows": 3}, metadata={"source": "test"}, preview="three rows")
    artifact = task.artifacts["table"]
    assert artifact.name == "table" and artifact.codec == "json"
    assert artifact.type == "dict" and artifact.metadata == {"source": "test"}
    assert artifact.preview == "three rows"
    assert len(artifact.hash) == 64 and artifact.size == Path(artifact.url).stat().st_size
    assert "table" in repr(artifact)


# -- status and tags --------------------------------------------------------------------------


def test_status_changes_are_stored() -> None:
    task = draft()
    assert task.get_status() == "created"
    task.mark_started()
    assert Task.get_task(task_id=task.id).get_status() == "running"
    assert task.record.started is not None
    task.mark_completed()
    assert task.status == "completed" and task.error is None
    assert Task.get_task(task_id=task.id).record.completed is not None
    failing = draft("failing")
    failing.mark_failed(status_reason="data missing")
    stored = Task.get_task(task_id=failing.id)
    assert stored.get_status() == "failed"
    assert stored.error == {"reason": "data missing"}
    stopped = draft("stopped")
    stopped.mark_stopped()
    assert Task.get_task(task_id=stopped.id).status == "aborted"
    other_handle = Task.get_task(task_id=stopped.id)
    stopped.mark_started()
    assert other_handle.status == "aborted", "status is the value as last read"
    assert other_handle.get_status() == "running"


def test_tags_are_added_once_and_kept() -> None:
    task = draft()
    task.add_tags("a")
    task.add_tags(["b", "a", "c"])
    assert task.get_tags() == ["a", "b", "c"]
    assert Task.get_task(task_id=task.id).get_tags() == ["a", "b", "c"]
    assert [t.id for t in Task.get_tasks(tags=["c"])] == [task.id]


# -- scripts and notebooks as ClearML users write them ------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def script_env() -> dict[str, str]:
    """This test's store, this tree first on the path (also for kernels the script starts)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_script(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Write ``code`` to a script in ``folder`` and run it as ``python script.py``."""
    script = folder / "user_script.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], env=script_env(), capture_output=True, text=True, timeout=90
    )


def write_notebook(path: Path, *cells: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


NAMED_BY_INIT = (
    "from clearnb import Task\n"
    "task = Task.init(project_name='named project', task_name='named by init')\n"
    "print('init done')"
)


def test_a_notebook_run_without_names_takes_the_names_of_its_task_init(
    home: Path, tmp_path: Path
) -> None:
    from clearnb.execution.runner import execute_notebook
    from tests.test_cli import clearnb

    nb = write_notebook(tmp_path / "step_file.ipynb", NAMED_BY_INIT)
    done = clearnb(home, "task", "run", str(nb))
    assert done.returncode == 0, done.output
    ran = execute_notebook(nb)
    assert ran.reload().status == "completed"
    assert (ran.project, ran.name) == ("named project", "named by init")
    found = Task.get_tasks(project_name="named project", task_name="named by init")
    assert len(found) == 2, "the CLI's run and execute_notebook's run"
    assert Task.get_tasks(project_name="default") == [], "nothing recorded as default/step_file"
    named = execute_notebook(nb, project_name="given", task_name="explicit")
    assert (named.reload().project, named.name) == ("given", "explicit"), "given names win"


def test_execute_remotely_without_a_queue_leaves_a_draft(home: Path, tmp_path: Path) -> None:
    from tests.test_interactive import HandKernel, clean_environ

    nb = write_notebook(tmp_path / "remote.ipynb", "x = 1")
    env = {**clean_environ(home), **{"PYTHONPATH": script_env()["PYTHONPATH"]}}
    kernel = HandKernel({**env, "JPY_SESSION_NAME": str(nb)}, tmp_path, tmp_path / "kernel")
    try:
        kernel.run(
            "from clearnb import Task\n"
            "task = Task.init(project_name='drafts', task_name='left here')\n"
            "task.connect({'lr': 0.1})"
        )
        with pytest.raises(AssertionError, match="ExecutedRemotely") as stopped:
            kernel.run("task.execute_remotely()\nprint('still here')")
        assert "left as a draft" in str(stopped.value)
        assert "still here" not in str(stopped.value)
        assert kernel.run("print('the kernel lives')").strip() == "the kernel lives"
    finally:
        kernel.shutdown()
    task = Task.get_task(project_name="drafts", task_name="left here")
    assert task.status == "created", "a draft, not completed by the kernel's exit"
    assert task.get_parameters()["General/lr"] == 0.1
    assert task.record.queue is None

    script = run_script(
        tmp_path,
        "from clearnb import Task\n"
        "task = Task.init(project_name='drafts', task_name='from a script')\n"
        "task.execute_remotely()\n"
        "print('still here')\n",
    )
    assert script.returncode == 0, script.stderr
    assert "still here" not in script.stdout
    assert Task.get_task(project_name="drafts", task_name="from a script").status == "created"


def test_a_script_that_raises_after_init_marks_its_task_failed(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        "from clearnb import Task\n"
        "task = Task.init(project_name='scripts', task_name='raising')\n"
        "raise ValueError('the data is bad')\n",
    )
    assert done.returncode == 1 and "ValueError: the data is bad" in done.stderr
    task = Task.get_task(project_name="scripts", task_name="raising")
    assert task.status == "failed"
    assert task.error is not None and task.error["reason"] == "ValueError: the data is bad"
    assert task.error["ename"] == "ValueError"
    fine = run_script(
        tmp_path,
        "from clearnb import Task\nTask.init(project_name='scripts', task_name='fine')\n",
    )
    assert fine.returncode == 0, fine.stderr
    assert Task.get_task(project_name="scripts", task_name="fine").status == "completed"


def test_a_hand_run_cell_that_raises_marks_its_task_failed(home: Path, tmp_path: Path) -> None:
    from tests.test_interactive import HandKernel, clean_environ

    nb = write_notebook(tmp_path / "failing.ipynb", "x = 1")
    env = {**clean_environ(home), **{"PYTHONPATH": script_env()["PYTHONPATH"]}}
    kernel = HandKernel({**env, "JPY_SESSION_NAME": str(nb)}, tmp_path, tmp_path / "kernel")
    try:
        kernel.run(
            "from clearnb import Task\n"
            "task = Task.init(project_name='hand', task_name='failing cell')"
        )
        assert Task.get_task(project_name="hand", task_name="failing cell").status == "running"
        with pytest.raises(AssertionError, match="ZeroDivisionError"):
            kernel.run("1 / 0")
    finally:
        kernel.shutdown()
    task = Task.get_task(project_name="hand", task_name="failing cell")
    assert task.status == "failed", "and the kernel's exit does not complete it"
    assert task.error is not None and task.error["ename"] == "ZeroDivisionError"


def test_a_dict_connected_empty_and_filled_afterwards_is_recorded_with_its_values() -> None:
    task = draft()
    config: dict[str, object] = {}
    assert task.connect(config, name="Later") is config
    config["lr"] = 0.5
    assert task.get_parameters()["Later/lr"] == 0.5, "recorded before parameters are read"
    config["layers"] = [1, 2]
    task.flush()
    assert Task.get_task(task.id).get_parameters_as_dict()["Later"] == {"lr": 0.5, "layers": [1, 2]}


def test_a_notebook_run_records_what_it_puts_in_connected_dicts_later() -> None:
    from clearnb.execution.runner import execute_notebook

    ran = execute_notebook(notebook("connect_later"), raise_on_error=True)
    stored = Task.get_task(ran.id).get_parameters_as_dict()
    assert stored["Later"] == {"lr": 0.5, "layers": [1, 2], "name": "last"}
    assert stored["General"] == {"seed": 7}

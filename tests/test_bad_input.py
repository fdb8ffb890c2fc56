"""Bad input is refused before anything runs, with a message that says what to do.

Each test gives one kind of bad input and checks the message a user sees, and that no task
was recorded and no kernel was started (or, where the problem can only show at run time,
that the step which needs the bad value never started).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from clearnb import PipelineController, Task
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import (
    ClearnbError,
    CodecError,
    InvalidArtifactNameError,
    InvalidReferenceError,
    KernelNotInstalledError,
    NotANotebookError,
    NotebookNotFoundError,
    ParameterError,
    PipelineError,
)
from clearnb.execution.kernels import KernelPool
from clearnb.execution.runner import NotebookRunner
from clearnb.notebook.files import installed_kernels
from clearnb.pipeline import functions
from tests.helpers import NOTEBOOKS, child_kernel_pids, notebook

pytestmark = pytest.mark.timeout(180)

TRIVIAL = str(NOTEBOOKS / "pipeline" / "trivial.ipynb")
"""A step notebook with parameters ``x = 0`` and ``parent_id = ""``."""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(folder))
    for name in ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every attempt to take a kernel or to execute a notebook."""
    import papermill

    calls: list[str] = []
    acquire = KernelPool.acquire_async
    execute = papermill.execute_notebook

    async def spy_acquire(self: KernelPool, *args: Any, **kwargs: Any) -> Any:
        calls.append("kernel")
        return await acquire(self, *args, **kwargs)

    def spy_execute(*args: Any, **kwargs: Any) -> Any:
        calls.append("papermill")
        return execute(*args, **kwargs)

    monkeypatch.setattr(KernelPool, "acquire_async", spy_acquire)
    monkeypatch.setattr(papermill, "execute_notebook", spy_execute)
    return calls


@pytest.fixture
def runner(home: Path) -> Iterator[NotebookRunner]:
    shared = NotebookRunner(Config.at(home), pool_size=0)
    try:
        yield shared
    finally:
        shared.close()


def assert_nothing_ran(started: list[str]) -> None:
    """No task recorded, no kernel taken or started, no notebook executed."""
    store = Backend.for_config(Config.from_env()).store
    assert store.find_tasks() == [], "refused input must not record a task"
    assert started == [], "refused input must not take a kernel or execute a notebook"
    assert child_kernel_pids() == [], "refused input must not start a kernel"


def refused(pipe: PipelineController) -> str:
    """The message of the error that refuses to start ``pipe``."""
    with pytest.raises(PipelineError) as info:
        pipe.start()
    return str(info.value)


def pipeline() -> PipelineController:
    return PipelineController(name="bad input", project="tests")


def write_notebook(path: Path, kernel: str, language: str, display: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x <- 1")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": kernel, "language": language, "display_name": display}
    nbformat.write(nb, path)
    return path


# -- the graph ----------------------------------------------------------------------------


def test_a_cycle(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=TRIVIAL, parents=["a", "c"])
    pipe.add_step("c", notebook=TRIVIAL, parents=["b"])
    message = refused(pipe)
    assert message.startswith("1 problem found")
    assert "the steps form a cycle: b -> c -> b" in message or "cycle: c -> b -> c" in message
    assert "remove one of these parents" in message
    assert_nothing_ran(started)


def test_a_step_that_is_its_own_parent(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL, parents=["a"])
    assert "the steps form a cycle: a -> a; remove one of these parents" in refused(pipe)
    assert_nothing_ran(started)


def test_an_unknown_parent(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=TRIVIAL, parents=["ghost"])
    assert (
        "step 'b' has an unknown parent 'ghost'; add a step of that name or fix the parent's "
        "name (the steps are: a, b)"
    ) in refused(pipe)
    assert_nothing_ran(started)


def test_a_duplicate_step_name(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    assert pipe.add_step("a", notebook=TRIVIAL) is True
    assert pipe.add_step("a", notebook=TRIVIAL, parameter_override={"x": 2}) is False
    message = refused(pipe)
    assert "step 'a' is added more than once; give each step its own name" in message
    assert_nothing_ran(started)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("stage.one", "holds '.'"),
        ("pipeline", "is kept for the pipeline's own parameters"),
        ("a/b", "holds '/'"),
        ("", "is empty"),
        ("nul\0", "holds a control character (such as NUL or a line break)"),
    ],
    ids=["dot", "pipeline", "slash", "empty", "nul"],
)
def test_a_step_name_that_cannot_be_referenced(
    name: str, problem: str, home: Path, started: list[str]
) -> None:
    pipe = pipeline()
    pipe.add_step(name, notebook=TRIVIAL)
    message = refused(pipe)
    assert f"step name {name!r} {problem}" in message
    assert "name steps with letters, digits, '_' and '-'" in message
    assert_nothing_ran(started)


# -- references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${", "opens a reference with '${' that is never closed (at '${'). Add the closing '}'"),
        ("${}", "${} is not a valid reference: it is empty. Write one of ${pipeline.<arg>}"),
        ("${a.}", "${a.} is not a valid reference: one of its dot-separated parts is empty"),
        (
            "${a.artifacts}",
            "${a.artifacts} is not a valid reference: it names no artifact. "
            "Write ${a.artifacts.<name>}",
        ),
        (
            "${a.b.c.d.e}",
            "${a.b.c.d.e} is not a valid reference: 'b.c.d.e' is neither 'id', "
            "'parameters.<Section>/<name>', 'artifacts.<name>[.<field>]' nor the name of a "
            "return value. Write one of",
        ),
        ("data/${a.id", "opens a reference with '${' that is never closed (at '${a.id')"),
        ("${${a.id}}", "it holds '$', '{' or '}' inside (references cannot be nested)"),
        ("${a}", "it names only 'a', not what to take from it. Write e.g. ${a.id}"),
        ("${a.id.x}", "nothing can follow '.id'. Write ${a.id}"),
        (
            "${a.artifacts.model.colour}",
            "after the artifact's name only one of url, hash, size, type, preview may follow",
        ),
    ],
    ids=[
        "open",
        "empty",
        "trailing-dot",
        "no-artifact",
        "too-many-parts",
        "unbalanced",
        "nested",
        "step-only",
        "after-id",
        "artifact-field",
    ],
)
def test_a_malformed_reference(value: str, expected: str, home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=TRIVIAL, parents=["a"], parameter_override={"parent_id": value})
    message = refused(pipe)
    assert message.startswith("1 problem found"), message
    assert "step 'b', parent_id: " in message and expected in message, message
    with pytest.raises(InvalidReferenceError):
        from clearnb.pipeline import references

        references.find(value)
    assert_nothing_ran(started)


def test_a_reference_to_an_unknown_step(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=TRIVIAL, parameter_override={"parent_id": "${zzz.id}"})
    assert (
        "step 'b' references ${zzz.id}, but there is no step 'zzz'; the steps are: a, b"
    ) in refused(pipe)
    assert_nothing_ran(started)


def test_a_reference_to_an_unknown_pipeline_parameter(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_parameter("rows", 5)
    pipe.add_step("a", notebook=TRIVIAL, parameter_override={"x": "${pipeline.rowz}"})
    assert (
        "step 'a' references ${pipeline.rowz}, but the pipeline has no parameter 'rowz' "
        "(add_parameter); it has: rows"
    ) in refused(pipe)
    assert_nothing_ran(started)


def test_a_reference_to_an_unknown_step_parameter(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step(
        "b",
        notebook=TRIVIAL,
        parameter_override={
            "parent_id": "${a.parameters.General/nope}",
            "x": "${a.parameters.General/x}",
        },
    )
    message = refused(pipe)
    assert message.startswith("1 problem found"), message
    assert (
        "step 'b' references ${a.parameters.General/nope}, but step 'a' (trivial.ipynb) has no "
        "parameter General/nope; its parameters are: General/parent_id, General/x"
    ) in message
    assert_nothing_ran(started)


def make_numbers(count: int = 3) -> list[int]:
    return list(range(count))


def test_a_reference_to_an_unknown_return_value(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_function_step("numbers", make_numbers, function_return=["numbers"])
    pipe.add_step("b", notebook=TRIVIAL, parameter_override={"parent_id": "${numbers.total}"})
    pipe.add_step("c", notebook=TRIVIAL, parameter_override={"x": "${numbers.parameters.kwargs/n}"})
    message = refused(pipe)
    assert (
        "step 'b' references ${numbers.total}, but 'numbers' returns: numbers; reference one "
        "of those, or add 'total' to its function_return"
    ) in message
    assert (
        "step 'c' references ${numbers.parameters.kwargs/n}, but step 'numbers' "
        "(make_numbers()) has no parameter kwargs/n; its parameters are: kwargs/count"
    ) in message
    assert_nothing_ran(started)


def test_a_reference_to_an_artifact_name_no_step_can_store(home: Path, started: list[str]) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=TRIVIAL, parameter_override={"parent_id": "${a.artifacts.x/y}"})
    assert (
        "step 'b' references ${a.artifacts.x/y}, which no step can store: Invalid artifact "
        "name 'x/y': it contains a path separator"
    ) in refused(pipe)
    assert_nothing_ran(started)


def test_a_reference_to_an_unknown_artifact_stops_the_step_before_it_runs(
    home: Path,
) -> None:
    """Which artifacts a notebook stores shows only when it runs (it may store them in
    a loop, or through a library), so this is checked when the referencing step is due:
    it fails without a task or a kernel of its own, and the message lists what is there."""
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=TRIVIAL, parameter_override={"parent_id": "${a.artifacts.model}"})
    pipe.start()
    pipe.wait()
    with contextlib.suppress(PipelineError):
        pipe.stop()
    dag = pipe.get_pipeline_dag()
    assert dag["a"].status == "completed", dag["a"].error
    assert dag["b"].status == "failed"
    assert dag["b"].error is not None
    assert dag["b"].error["reason"] == (
        "its parameters could not be resolved: ${a.artifacts.model}: step 'a' stored no "
        "artifact 'model' (it stored: 'notebook'). Store it in that step with "
        "task.upload_artifact('model', value), or reference one of those it stores"
    )
    assert dag["b"].executed is None, "the step that needs the artifact never ran"
    store = Backend.for_config(Config.from_env()).store
    assert [t.name for t in store.find_tasks(task_type="notebook")] == ["a"]


# -- parameters and notebooks -------------------------------------------------------------


def test_parameter_values_that_do_not_fit_the_declared_type(
    runner: NotebookRunner, started: list[str]
) -> None:
    with pytest.raises(ParameterError) as info:
        runner.execute(
            notebook("params"),
            {"count": "three", "ratio": "half", "flag": "maybe", "items": "{", "label": [1]},
        )
    message = str(info.value)
    assert message.startswith("5 parameter problems found")
    for expected in (
        "parameter 'count' of params.ipynb is an int (default 1); 'three' cannot be converted "
        "(expected a whole number). Pass an int.",
        "parameter 'ratio' of params.ipynb is a float (default 0.5); 'half' cannot be "
        "converted (expected a number). Pass a float.",
        "parameter 'flag' of params.ipynb is a bool (default False); 'maybe' cannot be "
        "converted (expected true or false). Pass a bool.",
        "parameter 'items' of params.ipynb is a list (default [1, 2]); '{' cannot be "
        "converted (expected a list). Pass a list.",
        "parameter 'label' of params.ipynb is a str (default \"a\"); [1] cannot be converted "
        "(expected a string). Pass a str.",
    ):
        assert expected in message, expected
    assert_nothing_ran(started)


def test_parameter_values_that_do_not_fit_are_listed_by_validate(
    home: Path, started: list[str]
) -> None:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL, parameter_override={"General/x": "zero"})
    assert (
        "parameter 'x' of step 'a' (trivial.ipynb) is an int (default 0); 'zero' cannot be "
        "converted (expected a whole number). Pass an int."
    ) in refused(pipe)
    assert_nothing_ran(started)


def test_an_unknown_parameter(runner: NotebookRunner, started: list[str]) -> None:
    with pytest.raises(ParameterError) as info:
        runner.execute(notebook("params"), {"cuont": 2, "Extra/deep": 1})
    message = str(info.value)
    assert (
        "params.ipynb does not declare a parameter 'cuont'; it declares: anything, count, "
        "flag, items, label, ratio"
    ) in message
    assert "does not declare a parameter 'deep' in section Extra; it declares: depth, mode" in (
        message
    )
    assert_nothing_ran(started)


def test_a_parameter_value_the_notebook_cannot_receive(
    runner: NotebookRunner, started: list[str]
) -> None:
    with pytest.raises(ParameterError) as info:
        runner.execute(notebook("params"), {"anything": {1, 2}})
    assert (
        "parameter 'anything' cannot be written into the notebook's parameters cell: {1, 2} is "
        "a set. Pass None, a bool, a number, a string, or a list or dict (with string keys) "
        "of those"
    ) in str(info.value)
    assert_nothing_ran(started)


def test_pipeline_parameters_a_notebook_cannot_receive_are_refused_at_start(
    home: Path, started: list[str]
) -> None:
    import datetime

    pipe = pipeline()
    pipe.add_parameter("blob", b"\x00raw")
    pipe.add_parameter("when", datetime.date(2026, 1, 2))
    pipe.add_step(
        "a", notebook=notebook("params"), parameter_override={"anything": "${pipeline.blob}"}
    )
    pipe.add_step(
        "b", notebook=notebook("params"), parameter_override={"anything": "${pipeline.when}"}
    )
    pipe.add_step("c", notebook=notebook("params"), parameter_override={"anything": {"x", "y"}})
    message = refused(pipe)
    assert message.startswith("3 problems found"), message
    for value, kind in (
        ("b'\\x00raw'", "bytes"),
        ("datetime.date(2026, 1, 2)", "date"),
        ("{", "set"),
    ):
        assert (
            f"parameter 'anything' cannot be written into the notebook's parameters cell: {value}"
        ) in message, (value, message)
        assert f"is a {kind}" in message or f"is an {kind}" in message
    assert_nothing_ran(started)


def test_a_missing_notebook(runner: NotebookRunner, home: Path, started: list[str]) -> None:
    missing = home / "missing.ipynb"
    with pytest.raises(NotebookNotFoundError) as info:
        runner.execute(missing)
    assert str(info.value).startswith(f"Notebook not found: {missing}. Check the path")
    pipe = pipeline()
    pipe.add_step("a", notebook=missing)
    assert f"step 'a': Notebook not found: {missing}. Check the path" in refused(pipe)
    assert_nothing_ran(started)


NOT_NOTEBOOKS: dict[str, tuple[bytes, str]] = {
    "text": (b"just some notes", "it is not JSON (it starts with 'just some notes')"),
    "binary": (bytes(range(256)), "it is a binary file, not text"),
    "json-object": (b'{"a": 1}', "it is JSON without 'cells' and 'nbformat' (it has 'a')"),
    "json-list": (b"[1, 2]", "it is JSON, but a list and not an object with 'cells'"),
    "empty": (b"", "the file is empty"),
    "blank": (b"  \n", "the file holds only blank space"),
    "cut-short": (b'{"cells": [', "its JSON is broken (Expecting value at line 1, column 12)"),
}


@pytest.mark.parametrize("kind", list(NOT_NOTEBOOKS))
def test_a_file_that_is_not_a_notebook(
    kind: str, runner: NotebookRunner, home: Path, started: list[str]
) -> None:
    content, reason = NOT_NOTEBOOKS[kind]
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"{kind}.ipynb"
    path.write_bytes(content)
    with pytest.raises(NotANotebookError) as info:
        runner.execute(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a Jupyter notebook: {reason}"), message
    assert "Give the path of an .ipynb file saved by Jupyter" in message
    pipe = pipeline()
    pipe.add_step("a", notebook=path)
    assert f"step 'a': {path} is not a Jupyter notebook: {reason}" in refused(pipe)
    assert_nothing_ran(started)


@pytest.mark.parametrize(
    ("kernel", "language", "display"),
    [("ir", "R", "R"), ("julia-1.9", "julia", "Julia 1.9.3")],
    ids=["ir", "julia"],
)
def test_a_notebook_for_a_kernel_that_is_not_installed(
    kernel: str,
    language: str,
    display: str,
    runner: NotebookRunner,
    home: Path,
    started: list[str],
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = write_notebook(home / f"{kernel}.ipynb", kernel, language, display)
    installed = ", ".join(installed_kernels())
    assert "python3" in installed and kernel not in installed
    expected = (
        f"needs the Jupyter kernel {kernel!r} ({display}), which is not installed here "
        f"(installed kernels: {installed}). Install that kernel so that `jupyter kernelspec "
        "list` shows it, or change the notebook's kernel to an installed one (in Jupyter: "
        "Kernel > Change Kernel, then save the notebook)."
    )
    with pytest.raises(KernelNotInstalledError) as info:
        runner.execute(path, {"x": 2})
    assert str(info.value) == f"{path.name} {expected}"
    assert info.value.fields["kernel_name"] == kernel
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    pipe.add_step("b", notebook=path, parents=["a"])
    message = refused(pipe)
    assert message.startswith("1 problem found"), message
    assert f"step 'b' ({path.name}) {expected}" in message
    assert_nothing_ran(started)


def test_a_queued_step_may_need_a_kernel_only_its_agent_has(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = write_notebook(home / "r.ipynb", "ir", "R", "R")
    pipe = pipeline()
    pipe.add_step("r", notebook=path, execution_queue="r-machines")
    pipe.validate()
    here = pipeline()
    here.add_step("r", notebook=path)
    with pytest.raises(PipelineError) as info:
        here.validate()
    assert "step 'r' (r.ipynb) needs the Jupyter kernel 'ir' (R), which is not installed" in str(
        info.value
    ), "the same step, run here, is refused: only the queue's agent may have the kernel"


# -- artifacts ------------------------------------------------------------------------------


def _stored_files(home: Path, task_id: str) -> list[Path]:
    folder = home / "artifacts" / task_id
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a/b", "it contains a path separator ('/' or '\\'), which would nest folders"),
        ("a\\b", "it contains a path separator ('/' or '\\'), which would nest folders"),
        ("..", "it is '..', which refers to the parent folder"),
        ("../up", "it contains a path separator"),
        ("", "it is empty"),
        ("nul\0byte", "it contains a control character (such as NUL or a line break)"),
    ],
    ids=["slash", "backslash", "dotdot", "climb", "empty", "nul"],
)
def test_an_artifact_name_with_a_path_separator(
    name: str, problem: str, home: Path, started: list[str]
) -> None:
    task = Task.create(project_name="tests", task_name="names", notebook=TRIVIAL)
    with pytest.raises(InvalidArtifactNameError) as info:
        task.upload_artifact(name, {"a": 1})
    message = str(info.value)
    assert problem in message
    assert "Use a short name such as 'model', 'train_data' or 'confusion-matrix.png'." in message
    assert task.artifacts == {} and _stored_files(home, task.id) == []
    pipe = pipeline()
    pipe.add_function_step("numbers", make_numbers, function_return=[name])
    assert "step 'numbers': function_return names the artifact each value is stored as, and " in (
        refused(pipe)
    )
    assert started == []


@pytest.mark.parametrize(
    "name", ["notebook", "source_notebook", "pipeline_dag", "dataset_state", "figure_c3_1"]
)
def test_an_artifact_name_clearnb_writes_itself_is_refused(
    name: str, home: Path, started: list[str]
) -> None:
    task = Task.create(project_name="tests", task_name="names", notebook=TRIVIAL)
    with pytest.raises(InvalidArtifactNameError) as info:
        task.upload_artifact(name, {"a": 1})
    assert str(info.value).startswith(f"The artifact name '{name}' is reserved: clearnb stores ")
    assert f"Choose another name, e.g. '{name}_data'." in str(info.value)
    assert task.artifacts == {} and _stored_files(home, task.id) == []
    pipe = pipeline()
    pipe.add_function_step("numbers", make_numbers, function_return=[name])
    pipe.add_step("a", notebook=TRIVIAL, monitor_artifacts=[("x", name)])
    message = refused(pipe)
    assert "step 'numbers': function_return names the artifact each value is stored as" in message
    assert "step 'a': monitor_artifacts copies an artifact to the pipeline's Task" in message
    assert started == []


def test_the_reserved_names_are_those_clearnb_writes() -> None:
    from clearnb.artifacts import storage
    from clearnb.datasetstore import STATE_ARTIFACT
    from clearnb.dispatch import SOURCE_ARTIFACT
    from clearnb.execution.capture import Figure
    from clearnb.execution.runner import NOTEBOOK_ARTIFACT
    from clearnb.pipeline.picture import DAG_ARTIFACT

    written = {NOTEBOOK_ARTIFACT, SOURCE_ARTIFACT, DAG_ARTIFACT, STATE_ARTIFACT}
    assert written == set(storage.RESERVED_ARTIFACTS)
    assert storage.CAPTURED_FIGURE.fullmatch(
        Figure(cell_index=12, number=3, extension="png", data=b"").name
    )


def test_a_step_that_uploads_an_artifact_named_notebook_fails_and_keeps_its_notebook(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from clearnb import Task\n"
            "task = Task.init(project_name='tests', task_name='reserved')\n"
            "task.upload_artifact('notebook', {'mine': 1})"
        )
    ]
    path = tmp_path / "reserved.ipynb"
    nbformat.write(nb, path)
    task = runner.execute(path)
    assert task.status == "failed"
    assert "The artifact name 'notebook' is reserved" in task.error["reason"]
    executed = task.artifacts["notebook"]
    assert executed.metadata.get("executed") is True
    cells = nbformat.read(executed.get_local_copy(), as_version=4).cells
    assert any(cell.source.startswith("from clearnb import Task") for cell in cells)


def _generator() -> Iterator[int]:
    return (i for i in range(3))


UNSTORABLE: dict[str, tuple[Callable[[], Any], str]] = {
    "generator": (_generator, "generator"),
    "lambda": (lambda: lambda x: x, "function"),
    "socket": (socket.socket, "socket.socket"),
}


@pytest.mark.parametrize("kind", list(UNSTORABLE))
def test_upload_artifact_of_a_value_no_codec_can_store(
    kind: str, home: Path, started: list[str]
) -> None:
    make, type_name = UNSTORABLE[kind]
    value = make()
    task = Task.create(project_name="tests", task_name="unstorable", notebook=TRIVIAL)
    try:
        with pytest.raises(CodecError) as info:
            task.upload_artifact("x", value)
    finally:
        if isinstance(value, socket.socket):
            value.close()
    message = str(info.value)
    assert message.startswith(f"Cannot store artifact 'x' of task {task.id}: a {type_name} value")
    assert "cannot be pickled" in message
    assert message.endswith(
        "Convert it to something storable first, e.g. a list or dict of plain values "
        "(list(...) of a generator), a numpy array, a pandas DataFrame, or save it to a file "
        "and pass the file path."
    )
    assert info.value.fields["name"] == "x" and info.value.fields["type"] == type_name
    assert task.artifacts == {}, "nothing half-stored"
    assert _stored_files(home, task.id) == []
    assert started == []


@pytest.mark.parametrize("kind", list(UNSTORABLE))
def test_a_function_step_return_value_no_codec_can_store(kind: str, home: Path) -> None:
    make, type_name = UNSTORABLE[kind]
    value = make()
    task = Task.create(project_name="tests", task_name="function step", notebook=TRIVIAL)
    try:
        with pytest.raises(CodecError) as info:
            functions.store_outputs(task, ([1, 2], value), ["numbers", "stream"])
    finally:
        if isinstance(value, socket.socket):
            value.close()
    message = str(info.value)
    assert message.startswith(
        f"the function's return value 'stream' is a {type_name}, which cannot be stored as an "
        "artifact: it cannot be pickled ("
    ), message
    assert message.endswith(
        "Return a list, dict, numpy array or pandas DataFrame instead (e.g. list(...) of a "
        "generator), or write it to a file and return the file's path. None of the step's "
        "return values was stored."
    )
    assert task.artifacts == {}, "the first value must not be stored without the second"
    assert _stored_files(home, task.id) == []


def numbers_and_a_stream(count: int = 3) -> tuple[list[int], object]:
    return list(range(count)), (i for i in range(count))


def test_a_function_step_that_returns_a_generator_fails_with_that_message(home: Path) -> None:
    pipe = pipeline()
    pipe.add_function_step("numbers", numbers_and_a_stream, function_return=["numbers", "stream"])
    pipe.start()
    pipe.wait()
    with contextlib.suppress(PipelineError):
        pipe.stop()
    node = pipe.get_pipeline_dag()["numbers"]
    assert node.status == "failed" and node.error is not None
    assert (
        "the function's return value 'stream' is a generator, which cannot be stored"
        in (node.error["reason"])
    )
    assert node.executed is not None
    stored = Task.get_task(task_id=node.executed).artifacts
    assert "numbers" not in stored and "stream" not in stored


# -- pipeline files -----------------------------------------------------------------------


def _saved(home: Path) -> dict[str, Any]:
    pipe = pipeline()
    pipe.add_step("a", notebook=TRIVIAL)
    return pipe.to_dict()


PIPELINE_FILES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not-json": (lambda d: "not json {", "is not a pipeline file (not JSON: "),
    "a-list": (lambda d: [d], "is not a clearnb pipeline file (a JSON list without "),
    "another-json": (lambda d: {"a": 1}, "is not a clearnb pipeline file (a JSON object without"),
    "newer-format": (
        lambda d: {**d, "clearnb_pipeline": 2},
        "is a clearnb pipeline file of format 2, which this clearnb does not read",
    ),
    "no-steps": (
        lambda d: {k: v for k, v in d.items() if k != "steps"},
        "'steps' is missing; add \"steps\": [...] with one object per step",
    ),
    "steps-not-a-list": (
        lambda d: {**d, "steps": {"a": {}}},
        "'steps' must be a list of step objects, not a dict",
    ),
    "step-without-name": (
        lambda d: {**d, "steps": [{"notebook": TRIVIAL}]},
        "step #1 has no 'name' (a non-empty string)",
    ),
    "step-not-an-object": (lambda d: {**d, "steps": ["a"]}, "step #1 is a str, not an object"),
    "unknown-step-key": (
        lambda d: {**d, "steps": [{"name": "a", "notebook": TRIVIAL, "colour": "red"}]},
        "step 'a' has unknown key 'colour'; a step may have: ",
    ),
    "unknown-key": (
        lambda d: {**d, "stepz": []},
        "unknown key 'stepz'; a pipeline file has: ",
    ),
    "no-name": (
        lambda d: {k: v for k, v in d.items() if k != "name"},
        "'name' is missing or not a non-empty string",
    ),
    "wrong-types": (
        lambda d: {**d, "steps": [{"name": "a", "parents": "b", "parameter_override": [1]}]},
        "step 'a': 'parents' must be a list of step names",
    ),
    "function-not-importable": (
        lambda d: {**d, "steps": [{"name": "f", "function": "no_such_module:f"}]},
        "step 'f': the function no_such_module:f cannot be loaded (ModuleNotFoundError: ",
    ),
}


@pytest.mark.parametrize("kind", list(PIPELINE_FILES))
def test_a_pipeline_file_that_does_not_parse(kind: str, home: Path, started: list[str]) -> None:
    make, expected = PIPELINE_FILES[kind]
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"{kind}.json"
    content = make(_saved(home))
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(PipelineError) as info:
        PipelineController.from_file(path)
    message = str(info.value)
    assert expected in message, message
    if "problem" in message:
        assert message.startswith(f"{path} is not a valid pipeline file (")
        assert message.endswith("Fix the file, or write it again with pipe.save().")
    assert_nothing_ran(started)


def test_a_pipeline_file_lists_every_problem(home: Path, started: list[str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "many.json"
    data = {**_saved(home), "extra": 1, "steps": [{"notebook": TRIVIAL}, 3]}
    path.write_text(json.dumps(data))
    with pytest.raises(PipelineError) as info:
        PipelineController.from_file(path)
    assert str(info.value).startswith(f"{path} is not a valid pipeline file (3 problems):\n")
    assert len(info.value.fields["problems"]) == 3
    assert_nothing_ran(started)


def test_every_error_here_is_a_clearnb_error() -> None:
    for error in (
        KernelNotInstalledError,
        NotANotebookError,
        NotebookNotFoundError,
        ParameterError,
        PipelineError,
        InvalidReferenceError,
        InvalidArtifactNameError,
        CodecError,
    ):
        assert issubclass(error, ClearnbError)

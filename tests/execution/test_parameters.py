"""Parameters a notebook declares (parameters cell and connected dicts) and typed overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clearnb import Task
from clearnb.errors import ParameterError
from clearnb.execution.runner import NotebookRunner
from clearnb.notebook.files import load_notebook
from clearnb.notebook.parameters import (
    GENERAL,
    DeclaredParameter,
    NotebookParameters,
    coerce,
    connected_parameters,
    parse_text,
)
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(120)


def test_connected_dicts_are_read_from_the_code() -> None:
    found = connected_parameters(load_notebook(notebook("seed_style")))
    assert {k: p.default for k, p in found[GENERAL].items()} == {
        "dataset_url": "",
        "random_state": 42,
        "test_size": 0.2,
    }
    assert {k: p.default for k, p in found["Train"].items()} == {"epochs": 3}


def test_declared_parameters_join_the_cell_and_connected_dicts() -> None:
    declared = NotebookParameters.of(load_notebook(notebook("params")))
    assert declared.cell is not None and set(declared.cell) == {
        "count",
        "ratio",
        "label",
        "flag",
        "items",
        "anything",
    }
    assert declared.defaults()["Extra"] == {"depth": 3, "mode": "fast"}
    resolved = declared.resolve({"count": "4", "Extra/depth": "5"}, "params.ipynb")
    assert resolved == {GENERAL: {"count": 4}, "Extra": {"depth": 5}}
    assert declared.injected(resolved) == {"count": 4}, "only cell variables are injected"


def test_every_problem_is_listed_at_once() -> None:
    declared = NotebookParameters.of(load_notebook(notebook("seed_style")))
    with pytest.raises(ParameterError) as info:
        declared.resolve(
            {"test_sise": 0.3, "random_state": "x", "Train/epochs": 1.5, "Train/lr": 1},
            "seed_style.ipynb",
        )
    message = str(info.value)
    assert message.startswith("4 parameter problems found")
    assert "'test_sise'; it declares: dataset_url, random_state, test_size" in message
    assert "parameter 'random_state' of seed_style.ipynb is an int" in message
    assert "'Train/epochs'" in message and "in section Train; it declares: epochs" in message


@pytest.mark.parametrize(
    ("default", "given", "expected"),
    [
        (0.2, "0.25", 0.25),
        (0.2, 1, 1.0),
        (3, "7", 7),
        (3, 7.0, 7),
        (False, "yes", True),
        ("a", 5, "5"),
        ([1], "[2, 3]", [2, 3]),
        ({"a": 1}, '{"b": 2}', {"b": 2}),
        (None, "12", 12),
    ],
)
def test_values_are_typed_like_the_default(default: Any, given: Any, expected: Any) -> None:
    result = coerce(given, DeclaredParameter("p", default, repr(default)))
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("default", "given"), [(3, "three"), (3, 2.5), (0.2, "x"), (True, "maybe"), (3, True)]
)
def test_values_that_do_not_fit_are_refused(default: Any, given: Any) -> None:
    with pytest.raises(ParameterError) as info:
        coerce(given, DeclaredParameter("p", default, repr(default)))
    kind = type(default).__name__
    assert str(info.value).startswith(f"parameter 'p' is a{'n' if kind == 'int' else ''} {kind} ")
    assert f"{given!r} cannot be converted" in str(info.value)
    assert info.value.fields["parameter"] == "p" and info.value.fields["expected"] == kind


def test_command_line_text_is_parsed() -> None:
    assert parse_text("0.5") == 0.5 and parse_text("3") == 3 and parse_text("true") is True
    assert parse_text("none") is None and parse_text("[1, 2]") == [1, 2]
    assert parse_text("file:///data.csv") == "file:///data.csv"


def test_a_seed_style_step_receives_general_overrides_through_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    with NotebookRunner(pool_size=1) as runner:
        task = runner.execute(
            notebook("seed_style"),
            {"General/dataset_url": "file:///iris.csv", "test_size": "0.25", "Train/epochs": 9},
        )
        assert task.status == "completed", task.error
        seen = task.artifacts["args"].get()
        assert seen["args"] == {
            "dataset_url": "file:///iris.csv",
            "random_state": 42,
            "test_size": 0.25,
        }
        assert seen["types"] == ["str", "int", "float"]
        assert seen["training"] == {"epochs": 9}
        assert task.runtime["injected"] == {}, "nothing to inject without a parameters cell"

        # a clone of the run is a template whose own values reach the next run
        draft = Task.clone(task, name="again")
        draft.set_parameter("General/random_state", 7)
        again = runner.execute(task=draft)
        assert again.status == "completed", again.error
        assert again.artifacts["args"].get()["args"]["random_state"] == 7


def test_numpy_values_are_received_as_their_python_values(runner: NotebookRunner) -> None:
    import numpy as np

    task = runner.execute(
        notebook("params"),
        {
            "count": np.int64(7),
            "ratio": np.float32(0.25),
            "flag": np.bool_(True),
            "items": np.array([3, 4]),
            "anything": np.float64(1.5),
        },
    )
    assert task.status == "completed", task.error
    seen = task.artifacts["seen"].get()
    assert (seen["count"], seen["ratio"], seen["flag"]) == (7, 0.25, True)
    assert seen["types"] == ["int", "float", "str", "bool"]
    assert (seen["items"], seen["anything"]) == ([3, 4], 1.5)


def test_a_notebook_saved_without_kernel_metadata_takes_overrides(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    import nbformat

    bare = load_notebook(notebook("params"))
    bare.metadata = nbformat.NotebookNode()
    path = tmp_path / "bare.ipynb"
    nbformat.write(bare, path)
    task = runner.execute(path, {"count": 3})
    assert task.status == "completed", task.error
    assert task.artifacts["seen"].get()["count"] == 3

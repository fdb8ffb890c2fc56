"""Properties of everything a user names or passes, through every path that writes it.

Step, task, project and pipeline names are any text clearnb accepts (or refuses with a
clear error); parameter values are any JSON value or numpy scalar or array; folders are
any name a file system takes. Each goes through the paths that write it: a generated
function notebook, ``to_code()``, the store, the CLI's output, the home folder and a
run's working folder; what comes back is what went in, and nothing written is malformed.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearnb import PipelineController
from clearnb.backend import Backend
from clearnb.cli import main
from clearnb.config import Config
from clearnb.errors import ClearnbError
from clearnb.notebook.parameters import plain
from clearnb.pipeline.functions import build_notebook
from clearnb.pipeline.graph import step_name_problem
from clearnb.store import TaskRecord, open_store
from tests.helpers import notebook

checked = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
few = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_name = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24)
"""Any text without lone surrogates (which no file, JSON or terminal can hold)."""
step_names = any_name.filter(lambda name: step_name_problem(name) is None)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    any_name,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(any_name, inner, max_size=3)
    ),
    max_leaves=8,
)
numpy_values = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(np.int64),
    st.integers(-128, 127).map(np.int8),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(np.float32),
    st.floats(allow_nan=False, allow_infinity=False).map(np.float64),
    st.booleans().map(np.bool_),
    st.lists(st.integers(-1000, 1000), max_size=4).map(np.array),
)
values = st.one_of(json_values, numpy_values)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def same(a: Any, b: Any) -> bool:
    """Equal as values (a float that is a whole number may come back as itself)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def make_numbers(count: int = 3) -> list[int]:
    return list(range(count))


@checked
@given(step_names, st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), values))
def test_a_generated_function_notebook_is_valid_and_holds_the_values(
    name: str, kwargs: dict[str, Any]
) -> None:
    nb = build_notebook(name, make_numbers, kwargs, ["numbers"])
    nbformat.validate(nb)  # cell ids too: a step's name may hold anything a name may
    assert len({cell["id"] for cell in nb.cells}) == len(nb.cells)
    assign = next(cell.source for cell in nb.cells if "kwargs = " in cell.source)
    literal = assign.split("kwargs = ", 1)[1].split("\ntask.connect", 1)[0]
    assert ast.literal_eval(literal) == plain(kwargs)
    assert nb.metadata["clearnb"]["step"] == name


@checked
@given(any_name, any_name, step_names, values)
def test_to_code_runs_back_into_the_same_pipeline(
    pipeline: str, project: str, step: str, value: Any
) -> None:
    pipe = PipelineController(name=pipeline, project=project)
    pipe.add_parameter("value", value)
    pipe.add_step(
        step,
        notebook=str(notebook("params")),
        parameter_override={"anything": "${pipeline.value}", "label": str(value)},
    )
    code = pipe.to_code()
    compile(code, "pipeline.py", "exec")
    definition = code.split("\npipe.start()", 1)[0]
    namespace: dict[str, Any] = {}
    exec(definition, namespace)
    assert namespace["pipe"].to_dict() == pipe.to_dict()


def test_to_code_writes_nan_and_infinities_as_code() -> None:
    pipe = PipelineController(name="floats", project="tests")
    pipe.add_parameter("limits", [math.nan, math.inf, -math.inf, np.float32(0.5)])
    namespace: dict[str, Any] = {}
    exec(pipe.to_code().split("\npipe.start()", 1)[0], namespace)
    back = namespace["pipe"].get_parameters()["limits"]
    assert math.isnan(back[0]) and back[1:] == [math.inf, -math.inf, 0.5]


@checked
@given(any_name, any_name, st.dictionaries(any_name, values, max_size=3))
def test_names_and_parameters_come_back_from_the_store(
    tmp_path_factory: pytest.TempPathFactory, project: str, name: str, parameters: dict[str, Any]
) -> None:
    folder = tmp_path_factory.mktemp("store")
    with open_store(f"sqlite:///{folder / 'clearnb.db'}") as store:
        try:
            record = store.create_task(
                TaskRecord(project=project, name=name, parameters={"General": parameters})
            )
        except ClearnbError as exc:  # refused: with a message, nothing stored
            assert str(exc)
            assert store.find_tasks() == []
            return
        back = store.get_task(record.id)
        assert (back.project, back.name) == (project, name)
        assert back.parameters == {"General": plain(parameters)}


@few
@given(any_name, any_name)
def test_the_cli_prints_any_name_on_one_escaped_line(
    tmp_path_factory: pytest.TempPathFactory, project: str, name: str
) -> None:
    home = tmp_path_factory.mktemp("home")
    with open_store(f"sqlite:///{home / 'clearnb.db'}") as store:
        store.create_task(TaskRecord(project=project, name=name))
    result = CliRunner().invoke(main, ["task", "ls"], env={"CLEARNB_HOME": str(home)}, color=True)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert len(rows) == 2, rows
    assert not CONTROL.findall(re.sub(r"\x1b\[[0-9;]*m", "", result.stdout))


folder_names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1, max_size=20
).filter(lambda name: name not in (".", ".."))


@few
@given(folder_names)
def test_any_home_folder_holds_a_store_and_artifacts(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    home = tmp_path_factory.mktemp("homes") / name / "home"
    backend = Backend.open(Config.at(home))
    try:
        task = backend.store.create_task(TaskRecord(project="p", name="n"))
        record = backend.artifacts.save(task.id, "values", {"a": [1, 2]})
        backend.store.put_artifact(record)
        assert backend.artifacts.load(backend.store.get_artifact(task.id, "values")) == {
            "a": [1, 2]
        }
        assert Path(record.url).is_relative_to(home)
    finally:
        backend.close()


HOSTILE_FOLDERS = ["with space", 'quote\'s "double"', "ünïcödé ✓", "$HOME;rm -rf x", "new\nline"]


@pytest.mark.parametrize("name", HOSTILE_FOLDERS)
def test_a_notebook_runs_with_any_home_and_working_folder(tmp_path: Path, name: str) -> None:
    home = tmp_path / name / "home"
    cwd = tmp_path / f"{name} cwd"
    cwd.mkdir()
    result = CliRunner().invoke(
        main,
        ["task", "run", str(notebook("params")), "-p", "label", name, "--cwd", str(cwd), "--json"],
        env={"CLEARNB_HOME": str(home)},
    )
    assert result.exit_code == 0, result.output
    with open_store(f"sqlite:///{home / 'clearnb.db'}") as store:
        (task,) = store.find_tasks()
        assert task.status == "completed", task.error
        seen = Backend.open(Config.at(home))
        try:
            values = seen.artifacts.load(seen.store.get_artifact(task.id, "seen"))
        finally:
            seen.close()
    assert values["label"] == name and values["cwd"] == str(cwd)

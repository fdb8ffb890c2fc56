"""argparse arguments as section ``Args``: recorded by ``python step.py``, overridden in runs.

Each script here is a real ``python`` process or a real kernel; what it parsed is read back
from the store or from an artifact it uploaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb import Task
from clearnb.config import Config
from clearnb.errors import ParameterError
from clearnb.execution.runner import NotebookRunner
from clearnb.notebook.files import load_notebook
from clearnb.notebook.parameters import NotebookParameters
from tests.notebook.test_scripts import run_python, write

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        patch.delenv("CLEARNB_TASK_ID", raising=False)
        yield path


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[NotebookRunner]:
    with NotebookRunner(Config.at(home), pool_size=1) as shared:
        yield shared


PARSER = """
    import argparse
    import sys

    from clearnb import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", default=3)
    parser.add_argument("--name")
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 4])
"""

AFTER_INIT = (
    PARSER
    + """
    task = Task.init(project_name="args", task_name=sys.argv[0].rsplit("/", 1)[-1])
    options = parser.parse_args()
    REPORT
"""
)

BEFORE_INIT = (
    PARSER
    + """
    options = parser.parse_args()
    task = Task.init(project_name="args", task_name=sys.argv[0].rsplit("/", 1)[-1])
    REPORT
"""
)

REPORT = """task.upload_artifact("seen", {
        "options": vars(options),
        "types": {key: type(value).__name__ for key, value in vars(options).items()},
        "argv": sys.argv,
    })"""


def script(folder: Path, name: str, body: str) -> Path:
    return write(folder / name, body.replace("REPORT", REPORT))


@pytest.mark.parametrize("order", ["after_init", "before_init"])
def test_python_step_records_what_it_parsed(home: Path, tmp_path: Path, order: str) -> None:
    body = AFTER_INIT if order == "after_init" else BEFORE_INIT
    step = script(tmp_path, f"{order}.py", body)
    done = run_python(step, home, "--lr", "0.1", "--shuffle", "--sizes", "2", "3")
    assert done.returncode == 0, done.stderr
    task = Task.get_task(project_name="args", task_name=step.name)
    assert task.get_parameters_as_dict()["Args"] == {
        "lr": 0.1,
        "epochs": 3,
        "name": None,
        "shuffle": True,
        "sizes": [2, 3],
    }
    assert task.artifacts["seen"].get()["options"]["lr"] == 0.1, "the command line counts"


def test_auto_connect_arg_parser_false_or_a_selection_leaves_arguments_out(
    home: Path, tmp_path: Path
) -> None:
    quiet = PARSER + (
        "\n    task = Task.init(project_name='args', task_name='quiet', "
        "auto_connect_arg_parser=False)\n    parser.parse_args()\n"
    )
    done = run_python(write(tmp_path / "quiet.py", quiet), home, "--lr", "0.2")
    assert done.returncode == 0, done.stderr
    assert (
        "Args" not in Task.get_task(project_name="args", task_name="quiet").get_parameters_as_dict()
    )
    chosen = PARSER + (
        "\n    task = Task.init(project_name='args', task_name='chosen', "
        "auto_connect_arg_parser={'*': False, 'lr': True})\n    parser.parse_args()\n"
    )
    done = run_python(write(tmp_path / "chosen.py", chosen), home, "--lr", "0.2")
    assert done.returncode == 0, done.stderr
    recorded = Task.get_task(project_name="args", task_name="chosen").get_parameters_as_dict()
    assert recorded["Args"] == {"lr": 0.2}


@pytest.mark.parametrize("order", ["after_init", "before_init"])
def test_a_run_gives_the_script_its_args_typed_by_each_argument(
    runner: NotebookRunner, tmp_path: Path, order: str
) -> None:
    body = AFTER_INIT if order == "after_init" else BEFORE_INIT
    step = script(tmp_path, f"run_{order}.py", body)
    overrides = {
        "Args/lr": "0.25",
        "Args/epochs": "7",
        "Args/name": 5,
        "Args/shuffle": "true",
        "Args/sizes": [1, 2],
    }
    task = runner.execute(step, overrides)
    assert task.status == "completed", task.error
    seen = task.artifacts["seen"].get()
    assert seen["argv"] == [str(step)]
    assert seen["options"] == {
        "lr": 0.25,
        "epochs": 7,
        "name": "5",
        "shuffle": True,
        "sizes": [1, 2],
    }
    assert seen["types"] == {
        "lr": "float",  # type=float converts the text
        "epochs": "int",  # no type: typed like its default
        "name": "str",  # no type, no default: text, as on a command line
        "shuffle": "bool",
        "sizes": "list",
    }
    assert task.get_parameters_as_dict()["Args"] == seen["options"], "recorded as parsed"


def test_a_value_converted_by_a_type_function_before_init_stays_converted(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    body = """
        import argparse
        from datetime import date

        from clearnb import Task

        parser = argparse.ArgumentParser()
        parser.add_argument("--day", type=date.fromisoformat, default="2024-01-01")
        options = parser.parse_args()
        task = Task.init(project_name="args", task_name="typed day")
        task.upload_artifact("seen", {"day": repr(options.day)})
    """
    task = runner.execute(write(tmp_path / "typed_day.py", body), {"Args/day": "2025-03-04"})
    assert task.status == "completed", task.error
    assert task.artifacts["seen"].get() == {"day": "datetime.date(2025, 3, 4)"}
    assert task.get_parameter("Args/day") == "2025-03-04", "recorded as text"


def test_a_run_value_the_argument_cannot_take_fails_the_run_saying_so(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    body = PARSER.replace("import sys\n", "import sys\n    from datetime import date\n") + (
        '    parser.add_argument("--day", type=date.fromisoformat, default="2024-01-01")\n'
        "    task = Task.init(project_name='args', task_name='bad value')\n"
        "    parser.parse_args()\n"
    )
    task = runner.execute(write(tmp_path / "bad_value.py", body), {"Args/day": "someday"})
    assert task.status == "failed"
    assert task.error is not None
    assert "argument --day: invalid fromisoformat value: 'someday'" in task.error["reason"]
    assert "Args/day='someday'" in task.error["reason"]

    required = PARSER + (
        '    parser.add_argument("--data", required=True)\n'
        "    task = Task.init(project_name='args', task_name='required')\n"
        "    parser.parse_args()\n"
    )
    task = runner.execute(write(tmp_path / "required.py", required), {"Args/data": "x.csv"})
    assert task.status == "failed" and task.error is not None
    assert "the following arguments are required: --data" in task.error["reason"]
    assert "a run has no command line" in task.error["reason"]


def test_arguments_are_declared_by_the_code_and_checked_before_a_run(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    step = script(tmp_path, "declared.py", AFTER_INIT)
    declared = NotebookParameters.of(load_notebook(step))
    assert {name: p.type_name for name, p in declared.sections["Args"].items()} == {
        "lr": "float",
        "epochs": "int",
        "name": "any",
        "shuffle": "bool",
        "sizes": "list",
    }
    assert declared.defaults()["Args"] == {
        "lr": 0.01,
        "epochs": 3,
        "name": None,
        "shuffle": False,
        "sizes": [8, 4],
    }
    custom = write(
        tmp_path / "custom_action.py",
        PARSER + '    parser.add_argument("--level", action=argparse.BooleanOptionalAction)\n',
    )
    assert "level" not in NotebookParameters.of(load_notebook(custom)).sections["Args"]
    with pytest.raises(ParameterError) as refused:
        runner.execute(step, {"Args/lr": "fast", "Args/lrr": 1.0})
    message = str(refused.value)
    assert "'Args/lr'" in message and "is a float" in message
    assert "does not declare a parameter 'lrr' in section Args" in message
    assert Task.get_tasks(project_name="args", task_name="declared.py") == [], "nothing ran"

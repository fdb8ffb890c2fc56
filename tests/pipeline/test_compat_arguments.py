"""ClearML's pipeline arguments that have no effect here: each given one is recorded and
named in exactly one CompatibilityWarning per call; left at its default, nothing is said.
None of these start a kernel."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController, PipelineDecorator
from clearnb.errors import CompatibilityWarning
from tests.helpers import NOTEBOOKS

TRIVIAL = str(NOTEBOOKS / "pipeline" / "trivial.ipynb")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path
    PipelineDecorator.run_locally()


def said(call: Callable[[], Any]) -> list[str]:
    """The messages of the CompatibilityWarnings ``call()`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, CompatibilityWarning)]


def double(x: int) -> int:
    return 2 * x


CONTROLLER = {
    "docker": "python:3.11",
    "docker_args": "-e A=1",
    "docker_bash_setup_script": "apt-get install -y git",
    "packages": ["numpy"],
    "repo": "https://example.com/repo.git",
    "repo_branch": "main",
    "repo_commit": "abc123",
    "working_dir": "src",
    "output_uri": "s3://bucket/out",
    "pool_frequency": 1.0,
    "auto_version_bump": True,
    "always_create_from_code": False,
    "skip_global_imports": True,
    "enable_local_imports": False,
}
NOTEBOOK_STEP = {
    "task_overrides": {"script.branch": "main"},
    "clone_base_task": False,
    "output_uri": "s3://bucket/out",
}
FUNCTION_STEP = {
    "docker": "python:3.11",
    "docker_args": "-e A=1",
    "docker_bash_setup_script": "echo",
    "repo": "https://example.com/repo.git",
    "repo_branch": "main",
    "repo_commit": "abc123",
    "task_type": "training",
    "packages": ["numpy"],
    "project_name": "elsewhere",
    "task_name": "renamed",
    "auto_connect_frameworks": {"pytorch": False},
    "auto_connect_arg_parser": False,
    "draft": True,
    "working_dir": "src",
    "output_uri": "s3://bucket/out",
}
COMPONENT = {k: v for k, v in FUNCTION_STEP.items() if k not in ("project_name", "task_name")}
DECORATED = {
    **{k: v for k, v in CONTROLLER.items() if k != "always_create_from_code"},
    "pipeline_execution_queue": "gpu-services",
}


@pytest.mark.parametrize(("argument", "value"), sorted(CONTROLLER.items()))
def test_each_controller_argument_is_named_once_and_recorded(argument: str, value: Any) -> None:
    made: list[PipelineController] = []
    messages = said(lambda: made.append(PipelineController("p", "tests", **{argument: value})))
    assert len(messages) == 1 and messages[0].startswith("PipelineController: ")
    assert f"{argument}=" in messages[0] and "recorded but not used" in messages[0]
    (pipe,) = made
    recorded = pipe.task.record.runtime["unused_arguments"]
    assert recorded == {argument: value}, "recorded with the pipeline's Task"


@pytest.mark.parametrize(("option", "value"), sorted(NOTEBOOK_STEP.items()))
def test_each_add_step_option_is_named_once(option: str, value: Any) -> None:
    pipe = PipelineController("p", "tests")
    messages = said(lambda: pipe.add_step("a", notebook=TRIVIAL, **{option: value}))
    assert len(messages) == 1 and messages[0].startswith(f"add_step: {option}=")


@pytest.mark.parametrize(("option", "value"), sorted(FUNCTION_STEP.items()))
def test_each_add_function_step_option_is_named_once(option: str, value: Any) -> None:
    pipe = PipelineController("p", "tests")
    messages = said(lambda: pipe.add_function_step("a", double, **{option: value}))
    assert len(messages) == 1 and messages[0].startswith(f"add_function_step: {option}=")


@pytest.mark.parametrize(("option", "value"), sorted(COMPONENT.items()))
def test_each_component_option_is_named_once(option: str, value: Any) -> None:
    messages = said(lambda: PipelineDecorator.component(**{option: value})(double))
    assert len(messages) == 1
    assert messages[0].startswith(f"PipelineDecorator.component: {option}=")


@pytest.mark.parametrize(("argument", "value"), sorted(DECORATED.items()))
def test_each_decorated_pipeline_argument_is_named_once(argument: str, value: Any) -> None:
    messages = said(
        lambda: PipelineDecorator.pipeline(name="d", project="tests", **{argument: value})
    )
    assert len(messages) == 1
    assert messages[0].startswith(f"PipelineDecorator.pipeline: {argument}=")


def test_several_arguments_make_one_warning_and_runs_record_them() -> None:
    messages = said(lambda: PipelineController("p", "tests", docker="img", repo="git@x"))
    assert messages == [
        "PipelineController: docker='img', repo='git@x' recorded but not used: clearnb has "
        "no ClearML server, containers or repository checkouts: steps run in this Python "
        "environment, followed by events rather than polled"
    ]

    seen: list[PipelineController | None] = []

    def pipeline() -> None:
        seen.append(PipelineDecorator.get_current_pipeline())

    decorated = said(
        lambda: seen.append(
            PipelineDecorator.pipeline(name="d", project="tests", docker="img")(pipeline)
        )
    )
    assert len(decorated) == 1
    PipelineDecorator.debug_pipeline()
    assert said(seen.pop()) == [], "running the pipeline says nothing again"
    (controller,) = seen
    assert controller is not None
    assert controller.task.record.runtime["unused_arguments"] == {"docker": "img"}


def test_defaults_say_nothing() -> None:
    def define() -> None:
        pipe = PipelineController("p", "tests", target_project=True, add_run_number=True)
        pipe.add_step("a", notebook=TRIVIAL, recursively_parse_parameters=True)
        pipe.add_function_step("b", double, function_kwargs={"x": 1})
        PipelineDecorator.component(return_values=["y"], cache=True)(double)
        PipelineDecorator.pipeline(name="d", project="tests", start_controller_locally=True)(double)

    assert said(define) == []


def test_a_parameter_type_is_named_once_and_recorded() -> None:
    pipe = PipelineController("p", "tests")
    messages = said(lambda: pipe.add_parameter("rows", 5, param_type="int"))
    assert len(messages) == 1 and messages[0].startswith("add_parameter: param_type='int'")
    assert pipe.get_parameters() == {"rows": 5}
    assert pipe.task.record.runtime["unused_arguments"] == {"param_type:rows": "int"}
    assert said(lambda: pipe.add_parameter("cols", 2)) == []

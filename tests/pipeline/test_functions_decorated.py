"""Function steps under the user's own decorators run with the decoration, named after the
user's function, in decorated pipelines and in controllers (on real kernels)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from clearnb import PipelineController, PipelineDecorator, Task
from clearnb.pipeline import functions

pytestmark = pytest.mark.timeout(300)


def plus_one(func: Callable[..., int]) -> Callable[..., int]:
    """A user's decorator without functools.wraps: the wrapper only closes over ``func``."""

    def function_wrapper(*args: Any, **kwargs: Any) -> int:
        return func(*args, **kwargs) + 1

    return function_wrapper


def times_ten(func: Callable[..., int]) -> Callable[..., int]:
    """A user's decorator with functools.wraps."""

    @functools.wraps(func)
    def scaled(*args: Any, **kwargs: Any) -> int:
        return func(*args, **kwargs) * 10

    return scaled


@PipelineDecorator.component(return_values=["value"])
@plus_one
def base_value(start: int = 1) -> int:
    return start


@PipelineDecorator.component(return_values=["value"])
@times_ten
@plus_one
def scaled_value(start: int) -> int:
    return start


@PipelineDecorator.component(return_values=["total"])
def add(a: int, b: int) -> int:
    return a + b


@PipelineDecorator.pipeline(name="decorated steps", project="tests")
def decorated_pipeline(start: int = 1) -> int:
    first = base_value(start=start)
    second = scaled_value(start)
    return int(add(first, second))


@plus_one
def plain_step() -> int:
    return 1


def check(step_return: int) -> None:
    assert step_return == 2, step_return


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    for name in ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    PipelineDecorator.run_locally()


def test_the_innermost_function_is_found_under_both_kinds_of_wrapper() -> None:
    assert functions.innermost(base_value).__name__ == "base_value"
    assert functions.innermost(scaled_value).__name__ == "scaled_value"
    assert functions.innermost(plain_step).__name__ == "plain_step"
    assert functions.innermost(check) is check


def test_the_generated_notebook_applies_the_users_decorators() -> None:
    nb = functions.build_notebook("step", plain_step, {}, ["step_return"])
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "def plus_one(func" in code
    assert "@plus_one\ndef plain_step()" in code
    assert "PipelineDecorator" not in code
    assert "result = plain_step(**inputs)" in code
    namespace: dict[str, Any] = {}
    exec(nbformat.v4.new_notebook(cells=nb.cells[2:3]).cells[0].source, namespace)
    assert namespace["plain_step"]() == 2


def test_a_decorated_pipeline_runs_wrapped_components_locally(home: Path) -> None:
    PipelineDecorator.run_locally()
    assert decorated_pipeline(start=3) == (3 + 1) + (3 + 1) * 10
    controller = Task.get_tasks(project_name="tests", task_name="decorated steps")[-1]
    steps = {t.name: t for t in Task.get_tasks(project_name="tests") if t.id != controller.id}
    assert {"base_value", "scaled_value", "add"} <= set(steps)
    assert steps["base_value"].artifacts["value"].get() == 4
    assert steps["scaled_value"].artifacts["value"].get() == 40
    assert steps["scaled_value"].get_parameter("kwargs/start") == 3


def test_a_controller_runs_a_function_step_under_a_users_decorator(home: Path) -> None:
    pipe = PipelineController(name="decorated functions", project="tests")
    pipe.add_function_step(name="step", function=plain_step, function_return=["step_return"])
    pipe.add_function_step(
        name="evaluate", function=check, function_kwargs={"step_return": "${step.step_return}"}
    )
    pipe.start_locally(run_pipeline_steps_locally=True)
    pipe.wait()
    dag = pipe.get_pipeline_dag()
    assert pipe.is_successful(), {name: node.error for name, node in dag.items()}
    assert Task.get_task(task_id=dag["step"].executed).artifacts["step_return"].get() == 2


@PipelineDecorator.pipeline(
    name="decorated on a queue", project="tests", start_controller_locally=True
)
def queued_pipeline(start: int = 1) -> int:
    return int(add(base_value(start=start), scaled_value(start)))


def test_wrapped_components_run_on_a_queue_served_by_an_agent(home: Path, tmp_path: Path) -> None:
    from clearnb.backend import Backend
    from clearnb.pipeline.decorator import DecoratorSettings
    from tests.executors.agents import Agents, agent_environ

    store = Backend.for_config().store
    with Agents(store, agent_environ(home), tmp_path) as agents:
        agents.start("steps-agent", ["steps"])
        before = PipelineDecorator.settings
        PipelineDecorator.settings = DecoratorSettings()  # ClearML's default: queues
        PipelineDecorator.set_default_execution_queue("steps")
        try:
            assert queued_pipeline(start=2) == (2 + 1) + (2 + 1) * 10, agents.output()
        finally:
            PipelineDecorator.settings = before
    controller = Task.get_tasks(project_name="tests", task_name="decorated on a queue")[-1]
    steps = [r for r in store.find_tasks(parent=controller.id)]
    assert sorted(r.name for r in steps) == ["add", "base_value", "scaled_value"]
    assert {r.runtime.get("agent") for r in steps} == {"steps-agent"}, "every step ran on the agent"

"""PipelineDecorator: the seed's decorated pipeline, lazily built, run on real kernels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineDecorator, Task
from clearnb.backend import Backend
from clearnb.errors import ClearnbError, PipelineError

pytestmark = pytest.mark.timeout(300)


@PipelineDecorator.component(return_values=["data_frame"], cache=True)
def step_one(rows: int, extra: int = 43):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame({"x": list(range(rows)), "target": [i % 2 for i in range(rows)]})


@PipelineDecorator.component(return_values=["X_train", "X_test", "y_train", "y_test"])
def step_two(data_frame, test_size: float = 0.25):  # type: ignore[no-untyped-def]
    import numpy as np

    split = int(len(data_frame) * (1 - test_size))
    features = data_frame[["x"]].to_numpy(dtype=float)
    target = data_frame["target"].to_numpy()
    return features[:split], features[split:], target[:split], np.asarray(target[split:])


@PipelineDecorator.component(return_values=["model"])
def step_three(X_train, y_train):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(X_train, y_train)


@PipelineDecorator.component(return_values=["accuracy"])
def step_four(model, X_data, Y_data):  # type: ignore[no-untyped-def]
    return float((model.predict(X_data) == Y_data).mean())


@PipelineDecorator.pipeline(
    name="pipeline",
    project="examples",
    version="0.1",
    args_map={"General": ["rows"], "Mock": ["mock_parameter"]},
)
def main(rows: int, mock_parameter: str = "mock") -> float:
    data_frame = step_one(rows)
    X_train, X_test, y_train, y_test = step_two(data_frame)
    model = step_three(X_train, y_train)
    accuracy = 100 * step_four(model, X_data=X_test, Y_data=y_test)
    print(f"Accuracy={accuracy}%")
    return float(accuracy)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path
    PipelineDecorator.run_locally()


def pipelines() -> list[Any]:
    return Backend.for_config().store.find_tasks(task_type="controller")


def step_tasks() -> list[str]:
    """Ids of every stored Task that is not a pipeline's own."""
    store = Backend.for_config().store
    return sorted(r.id for r in store.find_tasks() if r.task_type != "controller")


def test_the_seed_pipeline_runs_locally_and_in_debug_with_the_same_result(home: Path) -> None:
    # Outside a pipeline the components are plain functions: the accuracy they give here is
    # the one both modes must return.
    X_train, X_test, y_train, y_test = step_two(step_one(40))
    expected = 100 * step_four(step_three(X_train, y_train), X_data=X_test, Y_data=y_test)
    PipelineDecorator.run_locally()
    local = main(rows=40)
    ran_locally = step_tasks()
    PipelineDecorator.debug_pipeline()
    debug = main(rows=40)
    assert local == expected and debug == expected
    debug_run, local_run = pipelines()
    debug_nodes = debug_run.runtime["pipeline"]["nodes"]
    assert list(debug_nodes) == ["step_one", "step_two", "step_three", "step_four"]
    assert [n["executed"] for n in debug_nodes.values()] == [None] * 4, (
        "in debug mode a component is a call in this process: no Task, no notebook"
    )
    assert [n["status"] for n in debug_nodes.values()] == ["completed"] * 4
    assert step_tasks() == ran_locally, "the debug run started no step Task"
    assert Backend.for_config().store.find_tasks(parent=debug_run.id) == []
    state = local_run.runtime["pipeline"]
    assert list(state["nodes"]) == ["step_one", "step_two", "step_three", "step_four"]
    assert all(n["status"] == "completed" for n in state["nodes"].values())
    assert state["nodes"]["step_three"]["parents"] == ["step_two"]
    assert sorted(state["nodes"]["step_four"]["parents"]) == ["step_three", "step_two"]
    assert local_run.parameters == {"General": {"rows": 40}, "Mock": {"mock_parameter": "mock"}}
    four = Task.get_task(task_id=state["nodes"]["step_four"]["executed"])
    executed = Path(four.artifacts["notebook"].get_local_copy()).read_text()
    assert "def step_four" in executed, "every component leaves a notebook to open"
    two = Task.get_task(task_id=state["nodes"]["step_two"]["executed"])
    assert two.artifacts["X_train"].type == "numpy.ndarray"
    assert debug_run.runtime["pipeline"]["status"] == "completed"


def test_a_second_run_is_served_from_the_cache(home: Path) -> None:
    store = Backend.for_config().store
    PipelineDecorator.run_locally()
    main(rows=20)
    first = pipelines()[0].runtime["pipeline"]["nodes"]
    events_before = max(e.seq for e in store.get_events())
    main(rows=20)
    second_run = pipelines()[0]
    second = second_run.runtime["pipeline"]["nodes"]
    assert second["step_one"]["status"] == "cached"
    assert second["step_one"]["executed"] == first["step_one"]["executed"], "the first run's Task"
    started = {e.task_id for e in store.get_events(after=events_before) if e.kind == "task_started"}
    ran = {second[name]["executed"] for name in ("step_two", "step_three", "step_four")}
    assert started - {second_run.id} == ran, "the cached step started no Task, no kernel"
    steps_of_second = {
        r.runtime.get("pipeline_step") for r in store.find_tasks(parent=second_run.id)
    }
    assert "step_one" not in steps_of_second


@PipelineDecorator.component(return_values=["value"])
def slow_value(seconds: float, value: int):  # type: ignore[no-untyped-def]
    import time

    time.sleep(seconds)
    return value


@PipelineDecorator.component(return_values=["total"])
def add(a, b):  # type: ignore[no-untyped-def]
    return a + b


@PipelineDecorator.pipeline(name="parallel", project="tests", max_workers=2)
def parallel() -> Any:
    first = slow_value(1.0, 1)
    second = slow_value(1.0, 2)
    return add(first, second)


def test_independent_components_overlap_and_names_repeat(home: Path) -> None:
    PipelineDecorator.run_locally()
    assert parallel() == 3
    nodes = pipelines()[0].runtime["pipeline"]["nodes"]
    assert list(nodes) == ["slow_value", "slow_value_1", "add"]
    store = Backend.for_config().store
    one = store.get_task(nodes["slow_value"]["executed"])
    two = store.get_task(nodes["slow_value_1"]["executed"])
    assert one.started < two.completed and two.started < one.completed, "they ran together"


@PipelineDecorator.component(return_values=["best"])
def best_of(scores: list, by_name: dict):  # type: ignore[no-untyped-def]
    return max(scores) * 10 + by_name["b"]


@PipelineDecorator.pipeline(name="collected", project="tests")
def collected() -> Any:
    scores = [slow_value(0.0, value) for value in (3, 1)]
    return best_of(scores, {"b": slow_value(0.0, 2)})


def test_results_collected_in_a_list_or_dict_are_passed_as_their_values(home: Path) -> None:
    PipelineDecorator.run_locally()
    assert collected() == 32
    nodes = pipelines()[0].runtime["pipeline"]["nodes"]
    assert {name: node["status"] for name, node in nodes.items()} == dict.fromkeys(
        ["slow_value", "slow_value_1", "slow_value_2", "best_of"], "completed"
    )


@PipelineDecorator.component(return_values=["never"])
def broken(x: int):  # type: ignore[no-untyped-def]
    raise ValueError(f"broken {x}")


@PipelineDecorator.component(return_values=["never"], continue_on_fail=True)
def broken_but_allowed(x: int):  # type: ignore[no-untyped-def]
    raise ValueError(f"allowed {x}")


@PipelineDecorator.pipeline(name="failing", project="tests")
def failing() -> Any:
    return broken(1) + 1


@PipelineDecorator.pipeline(name="allowed", project="tests")
def allowed() -> Any:
    value = broken_but_allowed(1)  # a failed step that may fail gives None
    return value if value else add(2, 3)


def test_a_failed_component_value_names_the_step(home: Path) -> None:
    PipelineDecorator.run_locally()
    with pytest.raises(PipelineError, match=r"step 'broken' is not available: the step failed"):
        failing()
    assert allowed() == 5


SCALE = 3


@PipelineDecorator.component(return_values=["scaled"])
def uses_global(x: int):  # type: ignore[no-untyped-def]
    return x * SCALE


@PipelineDecorator.pipeline(name="unbound", project="tests")
def unbound() -> Any:
    return uses_global(2)


def test_a_component_using_an_undefined_name_fails_clearly(home: Path) -> None:
    PipelineDecorator.run_locally()
    with pytest.raises(PipelineError, match=r"uses 'SCALE', which it neither imports"):
        unbound()


def test_components_are_plain_functions_outside_a_pipeline() -> None:
    assert add(2, 5) == 7


@PipelineDecorator.component(return_values=["count"])
def flaky_count(counter: str, base):  # type: ignore[no-untyped-def]
    from pathlib import Path

    path = Path(counter)
    seen = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(seen))
    if seen < 2:
        raise RuntimeError("fails the first time")
    return base + seen


@PipelineDecorator.component(return_values=["value"], cache=True)
def cached_base(value: int):  # type: ignore[no-untyped-def]
    return value


@PipelineDecorator.pipeline(name="resumable", project="tests")
def resumable(counter: str) -> Any:
    base = cached_base(10)
    return flaky_count(counter, base) + 0


def test_resume_and_force_work_for_decorated_pipelines(home: Path, tmp_path: Path) -> None:
    counter = str(tmp_path / "counter")
    PipelineDecorator.run_locally()
    with pytest.raises(PipelineError, match="flaky_count"):
        resumable(counter)
    first = pipelines()[0].runtime["pipeline"]["nodes"]
    assert first["cached_base"]["status"] == "completed"
    PipelineDecorator.run_locally(resume=True)
    assert resumable(counter) == 12
    second = pipelines()[0].runtime["pipeline"]["nodes"]
    assert second["cached_base"]["executed"] == first["cached_base"]["executed"], "kept"
    assert second["flaky_count"]["status"] == "completed"
    PipelineDecorator.run_locally()
    assert resumable(counter) == 13
    third = pipelines()[0].runtime["pipeline"]["nodes"]
    assert third["cached_base"]["status"] == "cached"
    PipelineDecorator.run_locally(force=True)
    assert resumable(counter) == 14
    fourth = pipelines()[0].runtime["pipeline"]["nodes"]
    assert fourth["cached_base"]["status"] == "completed"
    assert fourth["cached_base"]["executed"] != first["cached_base"]["executed"]
    PipelineDecorator.run_locally()


@PipelineDecorator.component(return_values=["value"], time_limit=2, memory_limit="1GB")
def never_done():  # type: ignore[no-untyped-def]
    import time

    time.sleep(60)
    return 1


@PipelineDecorator.pipeline(name="limited", project="tests")
def limited() -> Any:
    return never_done()


def test_a_component_runs_within_its_limits(home: Path) -> None:
    PipelineDecorator.run_locally()
    with pytest.raises(PipelineError, match=r"step 'never_done' is not available"):
        limited()
    node = pipelines()[0].runtime["pipeline"]["nodes"]["never_done"]
    assert "exceeded its time limit of 2 s" in node["error"]["reason"]
    step_run = Backend.for_config().store.get_task(node["executed"])
    assert step_run.runtime.get("memory_limit") == 1_000_000_000, (
        "the memory limit reached the step"
    )
    with pytest.raises(ClearnbError, match="memory_limit must be bytes or a size"):
        PipelineDecorator.component(memory_limit="lots")(add)

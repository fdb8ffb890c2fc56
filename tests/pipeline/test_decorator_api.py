"""The rest of ClearML's PipelineDecorator API on real kernels: the pipeline's own
serialization functions, and several pipelines launched from one process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineDecorator, Task
from clearnb.backend import Backend
from tests.helpers import kernel_pids_of, wait_until

pytestmark = pytest.mark.timeout(300)


def tagged(value: Any) -> bytes:
    """The test's own format: a tag, then JSON (tuples kept as tuples)."""
    import json

    def plain(item: Any) -> Any:
        if isinstance(item, tuple):
            return {"tuple": [plain(part) for part in item]}
        return item

    return b"TAGGED:" + json.dumps(plain(value)).encode()


def untagged(data: bytes) -> Any:
    """Reads :func:`tagged`'s bytes; refuses anything else."""
    import json

    if not data.startswith(b"TAGGED:"):
        raise ValueError(f"not the test's format: {data[:20]!r}")

    def back(item: Any) -> Any:
        if isinstance(item, dict) and set(item) == {"tuple"}:
            return tuple(back(part) for part in item["tuple"])
        return item

    return back(json.loads(data[len(b"TAGGED:") :]))


@PipelineDecorator.component(return_values=["pair"])
def make_pair(start: int):  # type: ignore[no-untyped-def]
    return (start, start + 1)


@PipelineDecorator.component(return_values=["described"])
def describe(pair):  # type: ignore[no-untyped-def]
    # a tuple survives only through the pipeline's own functions (JSON would make a list)
    return (type(pair).__name__, sum(pair))


@PipelineDecorator.pipeline(
    name="serialized",
    project="tests",
    return_value="result",
    artifact_serialization_function=tagged,
    artifact_deserialization_function=untagged,
)
def serialized(start: int = 3) -> Any:
    kind, total = describe(make_pair(start))
    return (kind, total)


@PipelineDecorator.component(return_values=["value"])
def slow_add(x: int, seconds: float = 0.0) -> int:
    import time

    time.sleep(seconds)
    return x + 1


@PipelineDecorator.component(return_values=["value"])
def explode(x: int) -> int:
    raise ValueError(f"exploded on {x}")


@PipelineDecorator.pipeline(name="parallel", project="tests", multi_instance_support="parallel")
def parallel(x: int, fail: bool = False) -> int:
    if fail:
        return explode(x) + 0  # using the value waits for it: the pipeline fails
    return slow_add(x, seconds=6.0) * 10


@PipelineDecorator.pipeline(name="one by one", project="tests", multi_instance_support=True)
def one_by_one(x: int, fail: bool = False) -> int:
    if fail:
        return explode(x) + 0
    return slow_add(x) * 10


@PipelineDecorator.component(return_values=["total"], monitor_metrics=[("loss", "train")])
def reports(x: int) -> int:
    from clearnb import Task

    Task.current_task().get_logger().report_scalar("loss", "train", value=0.5, iteration=3)
    return x


@PipelineDecorator.pipeline(name="monitored", project="tests")
def monitored() -> int:
    return reports(1) + 0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    PipelineDecorator.run_locally()
    yield tmp_path
    PipelineDecorator.run_locally()


def test_component_values_travel_as_the_pipelines_own_bytes(home: Path) -> None:
    assert serialized(3) == ("tuple", 7)
    store = Backend.for_config().store
    (controller,) = store.find_tasks(task_type="controller")
    nodes = controller.runtime["pipeline"]["nodes"]
    assert [n["status"] for n in nodes.values()] == ["completed", "completed"]
    made = Task.get_task(task_id=nodes["make_pair"]["executed"]).artifacts["pair"]
    assert made.codec == "serialized"
    assert Path(made.get_local_copy()).read_bytes() == b'TAGGED:{"tuple": [3, 4]}'
    described = Task.get_task(task_id=nodes["describe"]["executed"]).artifacts["described"]
    assert described.get(deserialization_function=untagged) == ("tuple", 7)
    result = Task.get_task(task_id=controller.id).artifacts["result"]
    assert Path(result.get_local_copy()).read_bytes().startswith(b"TAGGED:")


def test_parallel_pipelines_return_at_once_and_their_results_in_launch_order(
    home: Path,
) -> None:
    began = time.monotonic()
    assert parallel(1) is None
    assert parallel(2, fail=True) is None
    assert parallel(3) is None
    assert time.monotonic() - began < 6, "each call only launches its pipeline (one runs 6 s)"
    with pytest.warns(RuntimeWarning, match="pipeline 'parallel' launched .* failed"):
        results = PipelineDecorator.wait_for_multi_pipelines()
    assert results == [20, 40], "the failed one has no result, as in ClearML"
    assert PipelineDecorator.wait_for_multi_pipelines() == [], "the runs waited for are gone"
    store = Backend.for_config().store
    runs = sorted(store.find_tasks(task_type="controller"), key=lambda r: r.created)
    assert sorted(r.status for r in runs) == ["completed", "completed", "failed"]
    assert sorted(r.name for r in runs) == ["parallel", "parallel #2", "parallel #3"]
    assert sorted(r.parameters["Args"]["x"] for r in runs) == [1, 2, 3]
    done = [r for r in runs if r.status == "completed"]
    assert max(r.started or 0 for r in done) < min(r.completed or 0 for r in done), (
        "the pipelines ran at the same time"
    )
    wait_until(lambda: kernel_pids_of(home) == [], 60, "every kernel to end")


def test_multi_instance_pipelines_run_one_by_one_and_return_their_result(home: Path) -> None:
    assert one_by_one(1) == 20
    with pytest.warns(RuntimeWarning, match="failed"):
        assert one_by_one(2, fail=True) is None
    assert PipelineDecorator.wait_for_multi_pipelines() == []
    store = Backend.for_config().store
    assert len(store.find_tasks(task_type="controller")) == 2


def test_a_component_s_metrics_reach_the_pipeline(home: Path) -> None:
    assert monitored() == 1
    store = Backend.for_config().store
    (controller,) = store.find_tasks(task_type="controller")
    scalars = Task.get_task(task_id=controller.id).get_reported_scalars()
    assert scalars["loss"]["train"] == {"x": [3], "y": [0.5]}

"""The rest of ClearML's PipelineDecorator API on real kernels: the pipeline's own
serialization functions, and several pipelines launched from one process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineDecorator, Task
from clearnb.backend import Backend

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


def test_a_component_s_metrics_reach_the_pipeline(home: Path) -> None:
    assert monitored() == 1
    store = Backend.for_config().store
    (controller,) = store.find_tasks(task_type="controller")
    scalars = Task.get_task(task_id=controller.id).get_reported_scalars()
    assert scalars["loss"]["train"] == {"x": [3], "y": [0.5]}

"""Step overrides on real kernels: undeclared names set as ClearML sets them, list references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb import PipelineController, Task
from clearnb.errors import ParameterWarning, PipelineError
from clearnb.pipeline.progress import warning_lines
from clearnb.pipeline.references import Reference, substitute_literal
from clearnb.store.pipelines import STEP_KEYS
from clearnb.widgets.details import step_details
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.timeout(240)

STEPS = NOTEBOOKS / "pipeline"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path


def undeclared_pipeline(**options: bool) -> PipelineController:
    pipe = PipelineController(name="undeclared", project="tests", **options)
    pipe.add_step(
        "stage_data",
        notebook=str(STEPS / "undeclared.ipynb"),
        parameter_override={"General/x": "3", "General/extra": "from the pipeline"},
    )
    return pipe


def test_an_undeclared_override_is_set_injected_and_warned_about(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = undeclared_pipeline()
    expected = (
        "step 'stage_data' (undeclared.ipynb) does not declare a parameter 'General/extra'; "
        "it declares: x."
    )
    with pytest.warns(ParameterWarning, match=r"'General/extra'; it declares: x\.") as seen:
        pipe.start(wait=True)
    assert any(expected in str(w.message) for w in seen)
    assert any(expected in record.getMessage() for record in caplog.records), "it is logged"
    node = pipe.get_pipeline_dag()["stage_data"]
    assert node.status == "completed", node.error
    task = Task.get_task(node.executed)
    assert task.artifacts["seen"].get() == {"x": 3, "extra": "from the pipeline"}
    assert task.get_parameters()["General/extra"] == "from the pipeline"
    entry = pipe.state()["nodes"]["stage_data"]
    assert "warnings" in STEP_KEYS
    assert len(entry["warnings"]) == 1 and expected in entry["warnings"][0]
    # shown where users look: `clearnb run`'s lines and the widget's step details
    assert warning_lines(pipe.state()) == [f"warning: {entry['warnings'][0]}"]
    assert warning_lines(pipe.state(), pipe.state()) == [], "each warning is printed once"
    assert "does not declare a parameter &#x27;General/extra&#x27;" in step_details(
        pipe, "stage_data"
    )


def test_strict_refuses_an_undeclared_override_before_anything_runs(home: Path) -> None:
    pipe = undeclared_pipeline(strict=True)
    with pytest.raises(PipelineError) as info:
        pipe.start(wait=True)
    assert "does not declare a parameter 'extra'; it declares: x" in str(info.value)
    assert Task.get_tasks(project_name="tests") == []


def test_an_undeclared_reference_is_warned_about_and_refused_when_strict(home: Path) -> None:
    for strict in (False, True):
        pipe = PipelineController(name="ref", project="tests", strict=strict)
        pipe.add_step("first", notebook=str(STEPS / "trivial.ipynb"))
        pipe.add_step(
            "second",
            notebook=str(STEPS / "undeclared.ipynb"),
            parameter_override={"General/extra": "${first.id}"},
        )
        if strict:
            with pytest.raises(PipelineError, match="does not declare a parameter"):
                pipe.validate()
        else:
            with pytest.warns(ParameterWarning, match="'General/extra'"):
                pipe.validate()


def test_a_value_that_does_not_fit_a_declared_parameter_is_still_refused(home: Path) -> None:
    pipe = PipelineController(name="bad value", project="tests")
    pipe.add_step(
        "stage_data",
        notebook=str(STEPS / "undeclared.ipynb"),
        parameter_override={"General/x": "three", "General/extra": 1},
    )
    with pytest.raises(PipelineError, match="'three' cannot be converted"):
        pipe.start(wait=True)


def test_a_list_written_as_text_receives_the_ids_of_two_steps(home: Path) -> None:
    pipe = PipelineController(name="gather", project="tests")
    pipe.add_step("train_1", notebook=str(STEPS / "trivial.ipynb"))
    pipe.add_step("train_2", notebook=str(STEPS / "trivial.ipynb"))
    pipe.add_step(
        "gather",
        notebook=str(STEPS / "gather_ids.ipynb"),
        parameter_override={"General/ids": "[${train_1.id}, ${train_2.id}]"},
    )
    pipe.start(wait=True)
    dag = pipe.get_pipeline_dag()
    assert dag["gather"].status == "completed", dag["gather"].error
    assert sorted(dag["gather"].parents) == ["train_1", "train_2"]
    expected = [dag["train_1"].executed, dag["train_2"].executed]
    seen = Task.get_task(dag["gather"].executed).artifacts["ids"].get()
    assert seen == {"ids": expected, "types": ["str", "str"]}
    assert pipe.state()["nodes"]["gather"]["resolved"]["General/ids"] == expected


def test_references_in_literal_text_keep_their_values_quoted_or_not() -> None:
    values = {"a": "id-1", "b": "x, y"}

    def lookup(reference: Reference) -> str:
        return values[reference.step]

    assert substitute_literal("[${a.id}, ${b.id}]", lookup) == ["id-1", "x, y"]
    assert substitute_literal('["${a.id}", "pre-${b.id}"]', lookup) == ["id-1", "pre-x, y"]
    assert substitute_literal('{"k": ${a.id}, "n": -2}', lookup) == {"k": "id-1", "n": -2}
    assert substitute_literal("[${a.id}", lookup) == "[id-1", "no literal: plain text"
    assert substitute_literal("[__import__('os')]", lookup) == "[__import__('os')]"

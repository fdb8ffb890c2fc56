"""The definition as plain data: options declared once, the file format, code export,
validation without a kernel. None of these start a kernel."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from clearnb.errors import PipelineError
from clearnb.pipeline import serialize, spec
from clearnb.pipeline.controller import PipelineController
from clearnb.pipeline.decorator import PipelineDecorator
from clearnb.pipeline.node import Node
from clearnb.pipeline.spec import FUNCTION, NOTEBOOK, PipelineSpec, StepSpec, build_step


def keywords(method: object, *leave_out: str) -> list[str]:
    names = inspect.signature(method).parameters  # type: ignore[arg-type]
    return [name for name in names if name not in {"self", *leave_out}]


def test_public_signatures_take_exactly_the_declared_options() -> None:
    assert spec.check_names(keywords(PipelineController.add_step), NOTEBOOK) == []
    assert spec.check_names(keywords(PipelineController.add_function_step), FUNCTION) == []
    component = set(keywords(PipelineDecorator.component, "_func", "name"))
    assert component == set(spec.component_options())


def test_a_keyword_outside_the_declaration_is_refused() -> None:
    with pytest.raises(PipelineError, match="takes no option 'bogus'"):
        build_step(NOTEBOOK, {"name": "a", "bogus": 1})


def test_file_keys_come_from_the_declaration_not_from_signatures() -> None:
    keys = spec.file_keys(NOTEBOOK)
    assert {"name", "parameter_override", "execution_queue", "memory_limit"} <= keys
    assert not keys & {"pre_execute_callback", "post_execute_callback", "base_task_factory"}
    assert "function_source" in spec.file_keys(FUNCTION)


def test_options_convert_as_declared(tmp_path: Path) -> None:
    step = build_step(
        NOTEBOOK,
        {
            "name": "s",
            "notebook": "x.ipynb",
            "memory_limit": "2MB",
            "execution_queue": "gpu",
            "time_limit": 5,
            "task_overrides": {"a": 1},
            "continue_behaviour": {"continue_on_abort": True},
        },
    )
    assert step.notebook == str(Path("x.ipynb").absolute())
    assert step.memory_limit == 2_000_000
    assert (step.queue, step.timeout) == ("gpu", 5)
    assert step.recorded == {"task_overrides": {"a": 1}}
    assert step.continue_on_abort and not step.skip_children_on_abort


def test_references_make_parents_and_edits_keep_the_order() -> None:
    pipeline = PipelineSpec("p", "proj")
    pipeline.add(StepSpec("a"))
    pipeline.add(StepSpec("b", parameters={"General/x": "${a.artifacts.out.url}"}))
    pipeline.add(StepSpec("c", parents=["b"]))
    assert pipeline.steps["b"].parents == ["a"]
    assert not pipeline.add(StepSpec("a")) and pipeline.duplicates == ["a"]
    pipeline.replace("b", StepSpec("beta", parameters={"General/x": "${a.id}"}))
    assert list(pipeline.steps) == ["a", "beta", "c"]
    assert pipeline.steps["c"].parents == ["beta"]
    pipeline.remove("a")
    assert pipeline.steps["beta"].parents == []


def test_the_file_round_trips_and_code_names_every_option(tmp_path: Path) -> None:
    pipeline = PipelineSpec("p", "proj", version="1", abort_on_failure=True)
    pipeline.add_parameter("url", "file:///x.csv", "the data")
    pipeline.add(
        build_step(
            NOTEBOOK,
            {
                "name": "a",
                "notebook": str(tmp_path / "a.ipynb"),
                "parameter_override": {"General/url": "${pipeline.url}"},
                "cache_executed_step": True,
                "retry_on_failure": 2,
                "memory_limit": "1GB",
                "continue_on_fail": True,
            },
        )
    )
    saved = serialize.save(pipeline, tmp_path / "p.json")
    data = json.loads(saved.read_text())
    assert data["steps"] == [
        {
            "name": "a",
            "notebook": str(tmp_path / "a.ipynb"),
            "parameter_override": {"General/url": "${pipeline.url}"},
            "memory_limit": 1_000_000_000,
            "cache_executed_step": True,
            "retry_on_failure": 2,
            "continue_on_fail": True,
        }
    ]
    again = serialize.from_dict(serialize.read_file(saved), tmp_path)
    assert serialize.to_dict(again) == data
    code = serialize.to_code(pipeline)
    assert "retry_on_failure=2" in code and "memory_limit=1000000000" in code
    assert "pipe.add_parameter('url', 'file:///x.csv', 'the data')" in code


def test_a_bad_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "clearnb_pipeline": 1,
                "project": "",
                "extra": 1,
                "steps": [{"name": "a", "pre_execute_callback": "x", "parents": "b"}, 3],
            }
        )
    )
    with pytest.raises(PipelineError) as raised:
        serialize.read_file(path)
    problems = raised.value.fields["problems"]
    assert len(problems) == 6, problems
    assert "'name' is missing or not a non-empty string" in problems
    assert "'project' is missing or not a non-empty string" in problems
    assert any("unknown key 'extra'" in p for p in problems)
    assert any("'pre_execute_callback'" in p for p in problems)
    assert any("'parents' must be a list" in p for p in problems)
    assert any("step #2 is a int" in p for p in problems)


def test_a_node_joins_definition_and_run_state() -> None:
    node = Node("a", parents=["b"], parameters={"General/x": 1})
    assert (node.name, node.parents, node.status, node.executed) == ("a", ["b"], "pending", None)
    node.executed = "t1"
    node.parameters["General/x"] = 2
    assert node.run.executed == "t1" and node.spec.parameters == {"General/x": 2}
    assert node.state()["executed"] == "t1"
    node.reset()
    assert node.executed is None and node.parameters == {"General/x": 2}
    with pytest.raises(AttributeError, match="no attribute 'bogus'"):
        node.bogus = 1


def test_validation_collects_every_problem_without_a_kernel(tmp_path: Path) -> None:
    from clearnb.pipeline import validate
    from clearnb.pipeline.sources import Sources
    from clearnb.store import open_store

    def steps_function(x: int) -> int:
        return x + undefined_name  # type: ignore[name-defined]  # noqa: F821

    pipeline = PipelineSpec("p", "proj")
    pipeline.add(StepSpec("a", parents=["c"], notebook=str(tmp_path / "missing.ipynb")))
    pipeline.add(StepSpec("b", parents=["a"], parameters={"General/x": "${pipeline.nope}"}))
    pipeline.add(StepSpec("c", parents=["b"], function=steps_function, function_return=["y"]))
    pipeline.add(StepSpec("d", function_kwargs={"x": "${c.z}"}, function=steps_function))
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        found = validate.problems(pipeline, Sources(store, tmp_path), lambda step: None)
    assert any("form a cycle" in p for p in found), found
    assert any("no parameter 'nope'" in p for p in found), found
    assert any("missing.ipynb" in p for p in found), found
    assert any("uses 'undefined_name'" in p for p in found), found
    assert any("but 'c' returns: y" in p for p in found), found
    assert any("step 'b' names no notebook" in p for p in found), found

"""The pipeline as data: references, graph checks, layers, cache keys."""

from __future__ import annotations

import pytest

from clearnb.errors import InvalidReferenceError
from clearnb.pipeline import cache, references
from clearnb.pipeline.graph import descendants, find_cycle, layers, structure_problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${pipeline.url}", ("pipeline", "parameter", "url", "")),
        ("${stage_process.id}", ("stage_process", "id", "", "")),
        ("${s.parameters.General/test_size}", ("s", "step_parameter", "General/test_size", "")),
        ("${s.artifacts.dataset.url}", ("s", "artifact", "dataset", "url")),
        ("${s.artifacts.dataset.hash}", ("s", "artifact", "dataset", "hash")),
        ("${s.artifacts.dataset}", ("s", "artifact", "dataset", "url")),
        ("${step_one.data_frame}", ("step_one", "return", "data_frame", "")),
    ],
)
def test_references_parse(text: str, expected: tuple[str, str, str, str]) -> None:
    ref = references.parse(text)
    assert (ref.step, ref.kind, ref.name, ref.field) == expected


@pytest.mark.parametrize(
    "text", ["${}", "${stage}", "${s.artifacts}", "${s.artifacts.x.colour}", "${s.a.b.c}"]
)
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        references.parse(text)


def test_substitution_keeps_the_type_of_a_whole_reference() -> None:
    values = {"${s.artifacts.x.size}": 12, "${pipeline.name}": "iris"}

    def lookup(ref: references.Reference) -> object:
        return values[ref.text]

    assert references.substitute("${s.artifacts.x.size}", lookup) == 12
    assert references.substitute("size=${s.artifacts.x.size}", lookup) == "size=12"
    assert references.substitute(["${pipeline.name}", 3], lookup) == ["iris", 3]
    assert [r.text for r in references.find({"a": ["${pipeline.name}"]})] == ["${pipeline.name}"]


def nodes(edges: dict[str, list[str]]) -> dict[str, list[str]]:
    return dict(edges)


def test_cycles_are_named() -> None:
    cycle = find_cycle(nodes({"a": ["c"], "b": ["a"], "c": ["b"], "d": []}))
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle(nodes({"a": [], "b": ["a"]})) is None


def test_structure_problems_are_all_listed() -> None:
    problems = structure_problems(
        nodes({"a": ["ghost"], "b": ["c"], "c": ["b"]}), duplicates=["a"]
    )
    assert len(problems) == 3
    assert any("unknown parent 'ghost'" in p for p in problems)
    assert any("cycle" in p for p in problems)


def test_layers_and_descendants() -> None:
    graph = nodes({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []})
    assert layers(graph) == [["a", "e"], ["b", "c"], ["d"]]
    assert sorted(descendants(graph, "a")) == ["b", "c", "d"]


def test_cache_keys_depend_on_content_not_on_ids() -> None:
    def content(ref: references.Reference) -> str:
        return "artifacts:same"

    one = cache.cache_key("code", {"General/id": "${s.id}"}, content)
    two = cache.cache_key("code", {"General/id": "${s.id}"}, content)
    other_code = cache.cache_key("other", {"General/id": "${s.id}"}, content)
    other_value = cache.cache_key("code", {"General/id": "${s.id}", "General/x": 1}, content)
    assert one == two and len({one, other_code, other_value}) == 3

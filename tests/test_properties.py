"""Properties of references and parameter values, over generated input (hypothesis).

References: well-formed ones survive format and parse; any text parses or is refused
with :class:`InvalidReferenceError`; every reference in a value is replaced where it
stands, and nothing else changes; a value that is exactly one reference takes the
referenced value's type. Parameters: values of the declared type come back unchanged
(and so does their text form); anything else is a :class:`ParameterError` naming the
parameter, and a value of a type nothing converts from always is; what papermill injects
is plain literals that evaluate back to the values.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from typing import Any

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from papermill.translators import translate_parameters

from clearnb.errors import InvalidReferenceError, ParameterError
from clearnb.notebook.parameters import DeclaredParameter, NotebookParameters, coerce
from clearnb.pipeline import references
from clearnb.pipeline.references import ARTIFACT_FIELDS, Reference

EXAMPLES = 200
"""Examples per property: enough to find the edges, few enough to run in seconds."""

checked = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies ----------------------------------------------------------------------------

segment = st.text(
    st.characters(exclude_characters=".${}"), min_size=1, max_size=12
).filter(lambda s: s.strip() == s and s != "")
"""One dot-free part of a reference: no surrounding blank space, no '$', '{' or '}'."""

dotted = st.lists(segment, min_size=1, max_size=3).map(".".join)
step_names = segment.filter(lambda s: s != "pipeline")
return_names = segment.filter(lambda s: s not in ("id", "parameters", "artifacts"))

well_formed = st.one_of(
    st.builds(lambda name: Reference("", "pipeline", "parameter", name), dotted),
    st.builds(lambda step: Reference("", step, "id"), step_names),
    st.builds(lambda step, name: Reference("", step, "step_parameter", name), step_names, dotted),
    st.builds(
        lambda step, name, field: Reference("", step, "artifact", name, field),
        step_names,
        segment,
        st.sampled_from(ARTIFACT_FIELDS),
    ),
    st.builds(lambda step, name: Reference("", step, "return", name), step_names, return_names),
)

tricky_text = st.text(st.sampled_from(list("${}.ab /_-\\ 0")), max_size=24)
"""Text made mostly of the characters references are made of."""
any_text = st.one_of(st.text(max_size=40), tricky_text)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
plain_text = st.text(st.characters(exclude_characters="$"), max_size=20)
"""Text that cannot hold a reference."""

# -- references ----------------------------------------------------------------------------


@checked
@given(well_formed)
def test_well_formed_references_round_trip_through_format_and_parse(ref: Reference) -> None:
    text = references.format_reference(ref)
    parsed = references.parse(text)
    assert parsed == replace(ref, text=text)
    assert references.parse(text[2:-1]) == parsed, "the ${ } may be left out"
    assert references.format_reference(parsed) == text


@checked
@given(well_formed, plain_text, plain_text)
def test_references_are_found_inside_longer_text(
    ref: Reference, before: str, after: str
) -> None:
    text = references.format_reference(ref)
    found = references.find([{"k": before + text + after}, text])
    assert found == [references.parse(text), references.parse(text)]


@checked
@given(any_text)
def test_any_text_parses_or_is_refused_clearly(text: str) -> None:
    try:
        parsed = references.parse(text)
    except InvalidReferenceError as exc:
        assert "is not a valid reference" in str(exc) or "never closed" in str(exc)
        assert "Write" in str(exc) or "Add the closing" in str(exc)
    else:
        assert parsed.kind in ("parameter", "id", "step_parameter", "artifact", "return")
        assert parsed.step and (parsed.kind == "id" or parsed.name)
        assert not any(char in parsed.step + parsed.name for char in "${}")
        canonical = references.format_reference(parsed)
        assert references.parse(canonical) == replace(parsed, text=canonical)


@checked
@given(any_text, json_values)
def test_any_value_is_searched_and_substituted_or_refused_clearly(
    text: str, value: Any
) -> None:
    looked_up: list[Reference] = []

    def lookup(ref: Reference) -> str:
        looked_up.append(ref)
        return "X"

    for candidate in (text, [text, value], {"k": text, "v": value}):
        try:
            found = references.find(candidate)
        except InvalidReferenceError:
            with pytest.raises(InvalidReferenceError):
                references.substitute(candidate, lambda ref: 1)
            continue
        looked_up.clear()
        result = references.substitute(candidate, lookup)
        assert len(found) == sum(s.count("${") for s in strings_in(candidate)), (
            "every '${' opens a reference"
        )
        assert looked_up == found, "each reference found is looked up once, in order"
        assert not any("${" in s for s in strings_in(result)), "every reference is replaced"
        kept = references.substitute(candidate, lambda ref: ref.text)
        assert kept == candidate, "only the references change: the text around them stays"
        if not found:
            assert result == candidate, "a value without references is left as it is"


@checked
@given(st.lists(st.tuples(plain_text, well_formed), min_size=1, max_size=4), plain_text)
def test_every_reference_in_a_text_is_replaced_where_it_stands(
    parts: list[tuple[str, Reference]], tail: str
) -> None:
    text = "".join(before + references.format_reference(ref) for before, ref in parts) + tail
    looked_up: list[Reference] = []

    def lookup(ref: Reference) -> str:
        looked_up.append(ref)
        return f"<{len(looked_up) - 1}>"

    substituted = references.substitute(text, lookup)
    assert substituted == "".join(f"{before}<{i}>" for i, (before, _) in enumerate(parts)) + tail
    assert looked_up == [references.parse(references.format_reference(ref)) for _, ref in parts], (
        "each reference is looked up once, from left to right"
    )


def strings_in(value: Any) -> list[str]:
    """The strings of ``value`` where references are looked for (not dict keys)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings_in(item)]
    return []


@checked
@given(well_formed, json_values)
def test_a_whole_value_reference_keeps_the_type_of_what_it_references(
    ref: Reference, value: Any
) -> None:
    text = references.format_reference(ref)
    assert references.substitute(text, lambda r: value) is value
    assert references.substitute([text, {"a": text}], lambda r: value) == [value, {"a": value}]


@checked
@given(well_formed, json_values, plain_text, plain_text)
def test_a_reference_inside_longer_text_is_replaced_by_its_text(
    ref: Reference, value: Any, before: str, after: str
) -> None:
    text = references.format_reference(ref)
    substituted = references.substitute(f"{before}{text}x{after}", lambda r: value)
    assert substituted == f"{before}{value}x{after}"


# -- parameter values ----------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "int": 3,
    "float": 0.5,
    "str": "a",
    "bool": False,
    "list": [1, 2],
    "dict": {"a": 1},
    "tuple": (1, 2),
    "any": None,
}
DOMAINS: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(),
    "float": st.floats(allow_nan=False),
    "str": st.text(),
    "bool": st.booleans(),
    "list": st.lists(json_values, max_size=5),
    "dict": st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    "tuple": st.lists(json_values, max_size=5).map(tuple),
    "any": json_values.filter(lambda v: not isinstance(v, str)),
}
TEXT_FORMS: dict[str, Any] = {
    "int": str,
    "float": repr,
    "bool": lambda v: str(v).lower(),
    "list": json.dumps,
    "dict": json.dumps,
}
names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)


def declared(kind: str, name: str = "p") -> DeclaredParameter:
    default = DEFAULTS[kind]
    return DeclaredParameter(name, default, repr(default))


@st.composite
def kinds_and_values(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(sorted(DOMAINS)))
    return kind, draw(DOMAINS[kind])


@checked
@given(kinds_and_values())
def test_values_of_the_declared_type_come_back_unchanged(kind_value: tuple[str, Any]) -> None:
    kind, value = kind_value
    result = coerce(value, declared(kind))
    assert result == value and type(result) is type(value)


@checked
@given(st.sampled_from(sorted(TEXT_FORMS)).flatmap(lambda k: st.tuples(st.just(k), DOMAINS[k])))
def test_the_text_form_of_a_value_comes_back_as_the_value(kind_value: tuple[str, Any]) -> None:
    kind, value = kind_value
    result = coerce(TEXT_FORMS[kind](value), declared(kind))
    assert result == value and type(result) is type(value)


anything = st.one_of(
    json_values,
    st.floats(),
    st.binary(max_size=8),
    st.frozensets(st.integers(), max_size=3),
    st.tuples(st.integers(), st.text(max_size=4)),
    st.builds(object),
    st.complex_numbers(),
    any_text,
    st.text(st.sampled_from(list("[]{}()0123456789,.:'\"eE+-xjn ")), max_size=30),
)
EXPECTED_TYPES: dict[str, type | None] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "any": None,
}


@checked
@given(st.sampled_from(sorted(DEFAULTS)), names, anything)
def test_values_that_cannot_convert_raise_a_parameter_error_naming_the_parameter(
    kind: str, name: str, value: Any
) -> None:
    try:
        result = coerce(value, declared(kind, name))
    except ParameterError as exc:
        assert str(exc).startswith(f"parameter {name!r} is ")
        assert "cannot be converted" in str(exc) and str(exc).endswith(".")
        assert exc.fields["parameter"] == name and exc.fields["expected"] == kind
    else:
        wanted = EXPECTED_TYPES[kind]
        if wanted is not None:
            assert type(result) is wanted


unconvertible = st.one_of(
    st.builds(object),
    st.complex_numbers(),
    st.binary(max_size=8),
    st.frozensets(st.integers(), max_size=3),
)
"""Values of a type no declared parameter converts from (only ``any`` takes them)."""


@checked
@given(st.sampled_from(sorted(set(DEFAULTS) - {"any"})), names, unconvertible)
def test_values_of_a_type_nothing_converts_from_are_always_refused(
    kind: str, name: str, value: Any
) -> None:
    with pytest.raises(ParameterError) as info:
        coerce(value, declared(kind, name))
    assert str(info.value).startswith(f"parameter {name!r} is ")
    assert "cannot be converted" in str(info.value)
    assert info.value.fields["parameter"] == name and info.value.fields["expected"] == kind


def notebook_with(defaults: dict[str, Any]) -> NotebookParameters:
    cell = "\n".join(f"{name} = {value!r}" for name, value in defaults.items())
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell)]
    nb.cells[0].metadata["tags"] = ["parameters"]
    return NotebookParameters.of(nb)


INJECT_DEFAULTS = {"text": "a", "items": [1], "mapping": {"a": 1}, "anything": None}
literal_text = st.text(
    st.characters(exclude_categories=()) | st.sampled_from(list("\"'\\\n\r\t\0\u2028{}$")),
    max_size=30,
)
overrides = st.fixed_dictionaries(
    {},
    optional={
        "text": literal_text,
        "items": st.lists(json_values, max_size=5),
        "mapping": st.dictionaries(literal_text, json_values, max_size=5),
        "anything": json_values,
    },
)


def injected_code(values: dict[str, Any]) -> str:
    """The cell papermill writes for ``values`` into a Python notebook."""
    return str(translate_parameters("python3", "python", values, "Parameters"))


@checked
@given(overrides)
def test_injected_parameters_are_assignments_of_literals(values: dict[str, Any]) -> None:
    declared_parameters = notebook_with(INJECT_DEFAULTS)
    resolved = declared_parameters.resolve(values, "step.ipynb")
    injected = declared_parameters.injected(resolved)
    code = injected_code(injected)
    tree = ast.parse(code)
    assert len(tree.body) == len(values)
    for statement in tree.body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1
        target = statement.targets[0]
        assert isinstance(target, ast.Name) and target.id in values
        # the value as resolved: text for a str default; for a None default (any type)
        # text is read as the value it spells, as a command line's is ("0" is 0)
        assert ast.literal_eval(statement.value) == injected[target.id]
        if target.id != "anything":
            assert injected[target.id] == values[target.id]


@checked
@given(st.lists(st.tuples(st.text(max_size=10), st.integers()), max_size=4).map(tuple))
def test_tuples_are_injected_as_lists_of_literals(value: tuple[Any, ...]) -> None:
    declared_parameters = notebook_with({"shape": (1, 2)})
    injected = declared_parameters.injected(declared_parameters.resolve({"shape": value}, "s"))
    statement = ast.parse(injected_code(injected)).body[0]
    assert isinstance(statement, ast.Assign)
    assert ast.literal_eval(statement.value) == [list(item) for item in value]


@checked
@given(
    st.one_of(
        st.frozensets(st.integers(), min_size=1, max_size=3).map(set),
        st.binary(min_size=1, max_size=5),
        st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=3),
        st.lists(st.builds(object), min_size=1, max_size=2),
        st.complex_numbers(),
    )
)
def test_values_papermill_cannot_write_as_literals_are_refused(value: Any) -> None:
    declared_parameters = notebook_with({"anything": None})
    resolved = declared_parameters.resolve({"anything": value}, "s")
    with pytest.raises(ParameterError) as info:
        declared_parameters.injected(resolved)
    assert "parameter 'anything' cannot be written into the notebook's parameters cell" in str(
        info.value
    )

"""``docs/clearml.md`` says the truth about clearnb's ClearML API, and covers all of it.

Every public name of ClearML's classes in the snapshot has a row; every ClearML argument is
in exactly one of the row's columns; what the table calls supported or recorded clearnb
takes, by that name; what it calls not available clearnb does not take, and never swallows
through ``**kwargs``.
"""

from __future__ import annotations

import pytest

from tests import compat_table
from tests.compat_table import STATUSES, Row, accepts, clearnb_arguments, clearnb_class

SNAPSHOT = compat_table.load_snapshot()
ROWS = compat_table.parse_table(compat_table.TABLE.read_text())
CASES = [
    (table_name, name, member["arguments"])
    for table_name, members in SNAPSHOT["classes"].items()
    for name, member in members.items()
]


def row_of(table_name: str, name: str) -> Row:
    row = ROWS.get(table_name, {}).get(name)
    assert row is not None, (
        f"docs/clearml.md has no row for {table_name}.{name}: run "
        "`python -m tests.compat_table write` and fill it in"
    )
    return row


def test_the_table_has_no_row_for_a_name_clearml_does_not_have() -> None:
    extra = [
        f"{table_name}.{name}"
        for table_name, rows in ROWS.items()
        for name in rows
        if name not in SNAPSHOT["classes"].get(table_name, {})
    ]
    assert extra == []


@pytest.mark.parametrize(("table_name", "name", "arguments"), CASES)
def test_each_row_matches_clearml_and_clearnb(
    table_name: str, name: str, arguments: list[str]
) -> None:
    row = row_of(table_name, name)
    where = f"{table_name}.{name}"
    assert row.status in STATUSES, f"{where}: status {row.status!r} is none of {STATUSES}"
    listed = row.supported + row.recorded + row.missing
    assert sorted(listed) == sorted(arguments), (
        f"{where}: the row lists {listed}, ClearML's arguments are {arguments}"
    )
    cls = clearnb_class(table_name)
    found = None if cls is None else clearnb_arguments(cls, name)
    if row.status == "no":
        assert found is None, f"{where} exists in clearnb: the row must say what it does"
        assert row.note, f"{where}: say why it is not available"
        return
    assert found is not None, f"{where} is marked {row.status} but clearnb has no such name"
    takes_any_keyword = found[1]

    def takes(argument: str) -> bool:
        return accepts(found, argument)

    for argument in row.supported:
        assert takes(argument), f"{where}: {argument!r} is marked supported, not taken"
    for argument in row.recorded:
        assert takes(argument) or takes_any_keyword, (
            f"{where}: {argument!r} is marked recorded, not taken"
        )
    for argument in row.missing:
        assert not takes(argument), (
            f"{where}: {argument!r} is marked not available but clearnb takes it"
        )
        assert argument.startswith("*") or not takes_any_keyword, (
            f"{where}: {argument!r} is marked not available but **kwargs would swallow it"
        )
    if row.missing:
        assert row.note, f"{where}: say why {', '.join(row.missing)} are not available"

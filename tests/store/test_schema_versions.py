"""The store records which clearnb wrote it; a store of a newer clearnb is refused with the
version to install. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
import sqlalchemy as sa

from clearnb.errors import SchemaVersionError
from clearnb.store import SCHEMA_VERSION, open_store, schema
from tests.store.direct import direct_engine, execute

MINE = version("clearnb")


def stored_info(url: str) -> dict[object, object]:
    return dict(execute(url, "SELECT key, value FROM store_info"))  # type: ignore[arg-type]


def written_by_a_newer_clearnb(url: str, writer: str = "0.3.0") -> None:
    """Make the store at ``url`` look like one that clearnb ``writer`` migrated to
    schema version 3 (with a table this clearnb does not know)."""
    open_store(url).close()
    execute(
        url,
        "CREATE TABLE future_things (id INTEGER PRIMARY KEY)",
        f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}",
        f"UPDATE store_info SET value = '{writer}' WHERE key = 'clearnb_version'",
    )


def test_a_new_store_records_the_clearnb_that_created_it(store_url: str) -> None:
    with open_store(store_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert stored_info(store_url) == {"clearnb_version": MINE}
    assert schema.clearnb_version() == MINE


def test_a_migrated_store_records_the_clearnb_that_migrated_it(store_url: str) -> None:
    engine = direct_engine(store_url)
    try:
        metadata = sa.MetaData()
        version_table = schema._version_table(metadata)
        schema._v1_tables(metadata)
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(sa.insert(version_table).values(id=1, version=1))
            assert not sa.inspect(conn).has_table("store_info")
    finally:
        engine.dispose()
    with open_store(store_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert stored_info(store_url) == {"clearnb_version": MINE}


def test_a_store_of_a_newer_clearnb_names_the_version_to_install(store_url: str) -> None:
    written_by_a_newer_clearnb(store_url, "0.3.0")
    with pytest.raises(SchemaVersionError) as caught:
        open_store(store_url)
    shown = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    assert str(caught.value) == (
        f"The store at {shown} was written by clearnb 0.3.0 (schema version "
        f"{SCHEMA_VERSION + 1}); this clearnb {MINE} reads up to schema version "
        f"{SCHEMA_VERSION}. Upgrade clearnb to use it: pip install 'clearnb>=0.3.0'"
    )
    assert caught.value.fields == {
        "found": SCHEMA_VERSION + 1,
        "supported": SCHEMA_VERSION,
        "written_by": "0.3.0",
    }
    # Refusing changed nothing: the newer clearnb still finds its store as it left it.
    assert execute(store_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]
    assert stored_info(store_url) == {"clearnb_version": "0.3.0"}
    assert execute(store_url, "SELECT COUNT(*) FROM future_things") == [(0,)]


def test_a_newer_store_without_a_recorded_version_still_says_to_upgrade(store_url: str) -> None:
    written_by_a_newer_clearnb(store_url)
    execute(store_url, "DROP TABLE store_info")
    with pytest.raises(SchemaVersionError) as caught:
        open_store(store_url)
    message = str(caught.value)
    assert f"written by a newer clearnb (schema version {SCHEMA_VERSION + 1})" in message
    assert f"this clearnb {MINE} reads up to schema version {SCHEMA_VERSION}" in message
    assert message.endswith("pip install -U clearnb")
    assert caught.value.fields["written_by"] is None


def test_the_command_line_shows_the_version_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from clearnb.cli import main

    home = tmp_path / "home"
    url = f"sqlite:///{home}/clearnb.db"
    written_by_a_newer_clearnb(url, "0.3.0")
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    result = CliRunner().invoke(main, ["task", "ls"])
    assert result.exit_code != 0
    assert "written by clearnb 0.3.0" in result.output
    assert "pip install 'clearnb>=0.3.0'" in result.output

"""The store tests run on SQLite and on PostgreSQL.

PostgreSQL needs a server: ``CLEARNB_TEST_POSTGRES_URL`` names it (``bash .ci/postgres``
starts a throwaway one and prints its URL). Each test gets a fresh database there, dropped
afterwards. Without the variable the PostgreSQL tests are skipped, except in CI
(``CI=true``), where they fail so that they can never silently stop running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.helpers import skip_or_fail_in_ci

POSTGRES_URL_VARIABLE = "CLEARNB_TEST_POSTGRES_URL"
SKIP_MESSAGE = (
    f"{POSTGRES_URL_VARIABLE} is not set: set it to run the store tests on PostgreSQL "
    "(.ci/postgres starts a server; .ci/run does so in CI)"
)


def postgres_server_url() -> sa.URL:
    """The server of ``CLEARNB_TEST_POSTGRES_URL``; skips (fails in CI) when it is unset."""
    value = os.environ.get(POSTGRES_URL_VARIABLE, "").strip()
    if not value:
        skip_or_fail_in_ci(SKIP_MESSAGE)
    return sa.make_url(value)


def admin_engine(server: sa.URL) -> sa.Engine:
    """An engine on the server's maintenance database, outside transactions."""
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    return sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    server = postgres_server_url()
    name = f"clearnb_test_{uuid.uuid4().hex[:16]}"
    engine = admin_engine(server)
    try:
        quoted = engine.dialect.identifier_preparer.quote(name)
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/home/clearnb.db"
    url: str = request.getfixturevalue("postgres_url")
    return url

"""SQL on a store's database without the Store, to set up what a test needs."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def direct_engine(url: str) -> sa.Engine:
    """An engine on the database at ``url`` that bypasses the Store."""
    if is_sqlite(url):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run SQL on the database at ``url`` directly; returns the last statement's rows."""
    engine = direct_engine(url)
    rows: list[tuple[object, ...]] = []
    try:
        with engine.begin() as conn:
            for statement in statements:
                result = conn.exec_driver_sql(statement)
                rows = [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()
    return rows

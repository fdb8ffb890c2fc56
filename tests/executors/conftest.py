"""Queue and agent tests use the store fixtures of tests/store (SQLite and PostgreSQL)."""

from tests.store.conftest import postgres_url, store_url

__all__ = ["postgres_url", "store_url"]

"""Tables of the metadata store and the migrations that build them.

The schema is versioned by a single-row ``schema_version`` table. ``MIGRATIONS[n - 1]``
takes a database from version ``n - 1`` to ``n``; :func:`migrate` applies the missing ones
inside the caller's (write) transaction, so a failed migration leaves the store unchanged.
The ``store_info`` table (from version 2) records which clearnb created or last migrated the
store, so that an older clearnb can say which release to install to read it.

Each migration builds the tables it needs from its own definitions rather than from the
current :data:`METADATA`, so that an old store is upgraded step by step to exactly the
schema the next migration expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clearnb.errors import SchemaVersionError

SCHEMA_VERSION = 3
"""The schema version this clearnb writes and reads."""

CLEARNB_VERSION_KEY = "clearnb_version"
"""Key of ``store_info`` holding the version of the clearnb that created or migrated the store."""

JSON_TEXT = sa.Text
"""JSON values are stored as text (``json.dumps``), which every database can hold."""


def _version_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "schema_version",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
    )


def _task_fk() -> sa.ForeignKey:
    return sa.ForeignKey("tasks.id", ondelete="CASCADE")


def _v1_tables(metadata: sa.MetaData) -> None:
    """Define the version 1 tables on ``metadata``."""
    sa.Table(
        "tasks",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("task_type", sa.String(32), nullable=False),
        sa.Column("notebook", sa.Text, nullable=True),
        sa.Column("output_notebook", sa.Text, nullable=True),
        sa.Column("parameters", JSON_TEXT, nullable=False),
        sa.Column("tags", JSON_TEXT, nullable=False),
        sa.Column("parent", sa.String(64), nullable=True),
        sa.Column("error", JSON_TEXT, nullable=True),
        sa.Column("runtime", JSON_TEXT, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("started", sa.Double, nullable=True),
        sa.Column("completed", sa.Double, nullable=True),
        sa.Column("last_update", sa.Double, nullable=False),
        sa.Index("ix_tasks_project_name_created", "project", "name", "created"),
        sa.Index("ix_tasks_created", "created"),
        sa.Index("ix_tasks_status", "status"),
        sa.Index("ix_tasks_parent", "parent"),
        sa.Index("ix_tasks_cache_key", "cache_key"),
    )
    sa.Table(
        "artifacts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("codec", sa.String(64), nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("preview", sa.Text, nullable=False),
        sa.Column("metadata", JSON_TEXT, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.UniqueConstraint("task_id", "name", name="uq_artifacts_task_name"),
    )
    sa.Table(
        "scalars",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("iteration", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Double, nullable=True),  # NULL holds NaN
        sa.Column("timestamp", sa.Double, nullable=False),
        sa.Index("ix_scalars_task_title_series_iter", "task_id", "title", "series", "iteration"),
    )
    sa.Table(
        "reports",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("iteration", sa.BigInteger, nullable=False),
        sa.Column("payload", JSON_TEXT, nullable=False),
        sa.Column("timestamp", sa.Double, nullable=False),
        sa.Index("ix_reports_task_kind", "task_id", "kind"),
    )
    sa.Table(
        "events",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", JSON_TEXT, nullable=False),
        sa.Column("timestamp", sa.Double, nullable=False),
        sa.Index("ix_events_task_seq", "task_id", "seq"),
        # Never reuse a sequence number, even after the newest events are deleted.
        sqlite_autoincrement=True,
    )


def _v2_task_columns() -> list[sa.Column[Any]]:
    """Columns version 2 adds to ``tasks``: where a task waits and who runs it."""
    return [
        sa.Column("queue", sa.String(128), nullable=True),
        sa.Column("enqueued", sa.Double, nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("lease_expires", sa.Double, nullable=True),
        sa.Column("abort_requested", sa.Text, nullable=True),
    ]


def _v2_tables(metadata: sa.MetaData) -> None:
    """Define the tables version 2 adds on ``metadata``."""
    sa.Table(
        "workers",
        metadata,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", JSON_TEXT, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("running", JSON_TEXT, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
    )
    sa.Table(
        "store_info",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def _v3_task_columns() -> list[sa.Column[Any]]:
    """Columns version 3 adds to ``tasks``: the configuration objects."""
    return [sa.Column("configuration", JSON_TEXT, nullable=True)]


def _v3_tables(metadata: sa.MetaData) -> None:
    """Define the tables version 3 adds on ``metadata``: models, and the models of tasks."""
    sa.Table(
        "models",
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        # No foreign key: a model outlives the task that created it, as in ClearML.
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("framework", sa.Text, nullable=False),
        sa.Column("tags", JSON_TEXT, nullable=False),
        sa.Column("system_tags", JSON_TEXT, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("design", sa.Text, nullable=False),
        sa.Column("labels", JSON_TEXT, nullable=False),
        sa.Column("metadata", JSON_TEXT, nullable=False),
        sa.Column("uri", sa.Text, nullable=True),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("codec", sa.String(64), nullable=False),
        sa.Column("iteration", sa.BigInteger, nullable=True),
        sa.Column("published", sa.Boolean, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("last_update", sa.Double, nullable=False),
        sa.Index("ix_models_project_name_created", "project", "name", "created"),
        sa.Index("ix_models_task_id", "task_id"),
        sa.Index("ix_models_created", "created"),
    )
    sa.Table(
        "task_models",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(64), _task_fk(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.UniqueConstraint("task_id", "kind", "name", name="uq_task_models_task_kind_name"),
        sa.Index("ix_task_models_model_id", "model_id"),
    )


METADATA = sa.MetaData()
"""The current schema, used by the queries of :mod:`clearnb.store.sql` and
:mod:`clearnb.store.queues`."""
schema_version_table = _version_table(METADATA)
_v1_tables(METADATA)
_v2_tables(METADATA)
_v3_tables(METADATA)
for _column in [*_v2_task_columns(), *_v3_task_columns()]:
    METADATA.tables["tasks"].append_column(_column)
tasks_table = METADATA.tables["tasks"]
sa.Index(
    "ix_tasks_queue_status_enqueued",
    tasks_table.c.queue,
    tasks_table.c.status,
    tasks_table.c.enqueued,
)
artifacts_table = METADATA.tables["artifacts"]
scalars_table = METADATA.tables["scalars"]
reports_table = METADATA.tables["reports"]
events_table = METADATA.tables["events"]
workers_table = METADATA.tables["workers"]
store_info_table = METADATA.tables["store_info"]
models_table = METADATA.tables["models"]
task_models_table = METADATA.tables["task_models"]


def _migrate_0_to_1(conn: Connection) -> None:
    """Create the version 1 tables (on an empty or partially created database)."""
    metadata = sa.MetaData()
    _v1_tables(metadata)
    metadata.create_all(conn, checkfirst=True)


def _add_task_columns(conn: Connection, columns: Sequence[sa.Column[Any]]) -> None:
    """Add the nullable ``columns`` to ``tasks``, leaving out those it has already."""
    existing = {column["name"] for column in sa.inspect(conn).get_columns("tasks")}
    preparer = conn.dialect.identifier_preparer
    for column in columns:
        if column.name in existing:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE tasks ADD COLUMN {preparer.quote(column.name)} {kind}"))


def _migrate_1_to_2(conn: Connection) -> None:
    """Add the queue columns of ``tasks``, the ``workers`` table (agents) and ``store_info``."""
    _add_task_columns(conn, _v2_task_columns())
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_tasks_queue_status_enqueued "
            "ON tasks (queue, status, enqueued)"
        )
    )
    metadata = sa.MetaData()
    _v2_tables(metadata)
    metadata.create_all(conn, checkfirst=True)


def _migrate_2_to_3(conn: Connection) -> None:
    """Add the ``configuration`` column of ``tasks`` and the ``models`` and ``task_models``
    tables."""
    _add_task_columns(conn, _v3_task_columns())
    metadata = sa.MetaData()
    _v1_tables(metadata)  # task_models refers to tasks: the table must be known
    _v3_tables(metadata)
    metadata.create_all(
        conn,
        tables=[metadata.tables["models"], metadata.tables["task_models"]],
        checkfirst=True,
    )


Migration = Callable[[Connection], None]

MIGRATIONS: Sequence[Migration] = (_migrate_0_to_1, _migrate_1_to_2, _migrate_2_to_3)
"""``MIGRATIONS[n - 1]`` upgrades a store from schema version ``n - 1`` to ``n``."""


def clearnb_version() -> str:
    """The version of the installed clearnb (its package metadata), e.g. ``0.2.0``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clearnb")
    except PackageNotFoundError:
        from clearnb import __version__

        return __version__


def too_new_message(found: int, url: str, written_by: str | None = None) -> str:
    """The message of the error raised when a store is newer than this clearnb.

    ``written_by`` is the clearnb version recorded in the store (``store_info``), if any.
    """
    mine = clearnb_version()
    if written_by and written_by != mine:
        return (
            f"The store at {url} was written by clearnb {written_by} (schema version {found}); "
            f"this clearnb {mine} reads up to schema version {SCHEMA_VERSION}. "
            f"Upgrade clearnb to use it: pip install 'clearnb>={written_by}'"
        )
    by = f"a newer clearnb (recorded as {written_by})" if written_by else "a newer clearnb"
    return (
        f"The store at {url} was written by {by} (schema version {found}); "
        f"this clearnb {mine} reads up to schema version {SCHEMA_VERSION}. "
        "Upgrade clearnb to use it: pip install -U clearnb"
    )


def read_info(conn: Connection) -> dict[str, str]:
    """The ``store_info`` entries (empty for a store that has no such table)."""
    if not sa.inspect(conn).has_table(store_info_table.name):
        return {}
    rows = conn.execute(sa.select(store_info_table.c.key, store_info_table.c.value))
    return {str(key): str(value) for key, value in rows}


def write_info(conn: Connection, key: str, value: str) -> None:
    """Set ``store_info[key]`` to ``value``."""
    conn.execute(sa.delete(store_info_table).where(store_info_table.c.key == key))
    conn.execute(sa.insert(store_info_table).values(key=key, value=value))


def read_version(conn: Connection) -> int | None:
    """The store's schema version: ``None`` if it has no version table, 0 if it is empty."""
    if not sa.inspect(conn).has_table(schema_version_table.name):
        return None
    value = conn.execute(sa.select(sa.func.max(schema_version_table.c.version))).scalar()
    return int(value) if value is not None else 0


def check_version(found: int, url: str, conn: Connection | None = None) -> None:
    """Raise :class:`SchemaVersionError` if ``found`` is newer than this code knows; with
    ``conn``, the message names the clearnb version recorded in the store."""
    if found <= SCHEMA_VERSION:
        return
    written_by = None
    if conn is not None:
        try:
            written_by = read_info(conn).get(CLEARNB_VERSION_KEY)
        except sa.exc.SQLAlchemyError:  # a newer layout this clearnb cannot read
            written_by = None
    raise SchemaVersionError(
        too_new_message(found, url, written_by),
        found=found,
        supported=SCHEMA_VERSION,
        written_by=written_by,
    )


def migrate(conn: Connection, url: str) -> int:
    """Bring the store up to :data:`SCHEMA_VERSION` inside the caller's transaction.

    Returns the version the store had before. Safe to call when another process is doing
    the same: the caller holds the write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
    advisory lock) and every step checks what already exists. A store created or migrated
    here records this clearnb's version in ``store_info``.
    """
    found = read_version(conn)
    if found is None:
        schema_version_table.create(conn, checkfirst=True)
        found = 0
    check_version(found, url, conn)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
    if found < SCHEMA_VERSION:
        conn.execute(sa.delete(schema_version_table))
        conn.execute(sa.insert(schema_version_table).values(id=1, version=SCHEMA_VERSION))
        write_info(conn, CLEARNB_VERSION_KEY, clearnb_version())
    return found

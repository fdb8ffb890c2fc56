"""The store's database connection: engine set-up, transactions, retries of transient errors.

Several processes (agents, the CLI, notebooks) may write to one SQLite file at once. The
:class:`Database` makes that safe and quiet:

* WAL mode, so readers never block the writer and the writer never blocks readers;
* every write transaction starts with ``BEGIN IMMEDIATE``, so writers queue on SQLite's
  busy timeout when they start instead of failing later when a read lock cannot be
  upgraded;
* every transaction is retried with backoff while the database reports itself locked or
  busy, up to ``lock_timeout`` seconds, after which a :class:`StoreError` explains what
  is holding it.

On PostgreSQL a lock wait gives up after the same busy timeout, and serialization
failures, deadlocks and lock timeouts are retried the same way.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

from clearnb.config import PRIVATE_FILE_MODE, make_private_folder
from clearnb.errors import MissingDependencyError, StoreError, TaskNotFoundError
from clearnb.store import schema
from clearnb.store.records import TaskRecord
from clearnb.store.rows import row_to_task
from clearnb.store.schema import tasks_table

T = TypeVar("T")

DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds a transaction keeps retrying while the database is locked by other writers."""

_BUSY_TIMEOUT = 30.0
"""Seconds SQLite itself waits for a lock before one attempt reports the database busy."""
_WRITE_OPTION = "clearnb_write"
_ADVISORY_LOCK_KEY = 0x636C6E62  # "clnb": serialises schema migrations on PostgreSQL
_EVENTS_LOCK_KEY = 0x636C6E65  # "clne": serialises event inserts on PostgreSQL
_POSTGRES_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})
"""Serialization failure, deadlock, lock wait timed out: the transaction is worth a retry."""


class Database:
    """One store's engine: transactions with retries, and the task lookups every part needs.

    Opening it creates or migrates the schema. Safe to share between the threads of a
    process; each process opens its own.
    """

    def __init__(self, url: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self._url = sa.make_url(url)
        if self._url.drivername == "postgresql":
            # SQLAlchemy's default driver for postgresql:// is psycopg2; clearnb uses psycopg 3.
            self._url = self._url.set(drivername="postgresql+psycopg")
        self._lock_timeout = float(lock_timeout)
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        self._memory = self._is_sqlite and _is_memory_sqlite(self._url)
        # One in-memory SQLite connection is shared by all threads: they take turns on it.
        # On a SQLite file only one writer can proceed anyway; the threads of this process
        # queue on a lock rather than on SQLite's polling busy handler.
        self._read_guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._write_guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self._memory:
            self._read_guard = self._write_guard = threading.RLock()
        elif self._is_sqlite:
            self._write_guard = threading.Lock()
        self._engine = self._create_engine()
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})
        try:
            self._open_schema()
        except sa.exc.DBAPIError as exc:
            self._engine.dispose()
            problem = store_problem(exc, self.url)
            if problem is None:
                raise
            raise problem from exc
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def url(self) -> str:
        """The database's URL, with any password masked."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (reads; writes go through :meth:`run`)."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection. The Database must not be used afterwards."""
        self._engine.dispose()

    def run(self, op: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``op`` in one transaction, retrying while the database is locked.

        A ``write`` transaction holds SQLite's write lock from its start, so a
        read-modify-write in ``op`` cannot interleave with another writer's.
        """
        engine = self._writer if write else self._engine
        guard = self._write_guard if write else self._read_guard
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.005
        while True:
            try:
                with guard, engine.begin() as conn:
                    return op(conn)
            except sa.exc.DatabaseError as exc:
                problem = store_problem(exc, self.url)
                if problem is not None:
                    raise problem from exc
                if not isinstance(exc, sa.exc.OperationalError):
                    raise
                if not _is_busy(exc):
                    raise StoreError(
                        f"The store at {self.url} cannot be used: {exc.orig}",
                        url=self.url,
                    ) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(
                        f"The store at {self.url} stayed locked by other writers for "
                        f"{self._lock_timeout:g} s. Check for a stuck process holding it "
                        "(an agent, a notebook kernel, the CLI), then try again.",
                        url=self.url,
                    ) from exc
                time.sleep(min(delay * (0.5 + random.random()), remaining))
                delay = min(delay * 2, 0.5)

    def run_for_tasks(self, op: Callable[[Connection], T], task_ids: Iterable[str]) -> T:
        """A write whose rows belong to ``task_ids``: a missing task is a clear error."""
        try:
            return self.run(op, write=True)
        except sa.exc.IntegrityError:
            self.raise_if_missing(task_ids)
            raise

    def raise_if_missing(self, task_ids: Iterable[str]) -> None:
        """Raise :class:`TaskNotFoundError` for the first of ``task_ids`` not in the store."""
        ids = sorted(set(task_ids))

        def op(conn: Connection) -> set[str]:
            query = sa.select(tasks_table.c.id).where(tasks_table.c.id.in_(ids))
            return set(conn.execute(query).scalars())

        present = self.run(op, write=False)
        for task_id in ids:
            if task_id not in present:
                raise self.task_not_found(task_id)

    def select_task(self, conn: Connection, task_id: str, *, lock: bool = False) -> TaskRecord:
        """The task ``task_id`` read in ``conn``'s transaction; ``lock`` locks its row
        until the transaction ends (``FOR UPDATE`` on PostgreSQL; SQLite's write
        transaction already excludes other writers)."""
        query = sa.select(tasks_table).where(tasks_table.c.id == task_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise self.task_not_found(task_id)
        return row_to_task(row)

    def task_not_found(self, task_id: str) -> TaskNotFoundError:
        """The error for a task id this store does not have."""
        return TaskNotFoundError(
            f"No task with id {task_id!r} in the store at {self.url}. "
            "Check the id with `clearnb task ls`.",
            task_id=task_id,
        )

    # -- opening ---------------------------------------------------------------------

    def _create_engine(self) -> Engine:
        if not self._is_sqlite:
            try:
                engine = sa.create_engine(self._url, pool_pre_ping=True)
            except (ImportError, sa.exc.NoSuchModuleError) as exc:
                raise MissingDependencyError(
                    f"The store URL {self.url} needs a database driver that is not "
                    f"installed ({exc}). For PostgreSQL: pip install 'clearnb[postgres]'.",
                    url=self.url,
                ) from exc
            if engine.dialect.name == "postgresql":
                _install_postgres_hooks(engine, lock_timeout=self._lock_timeout)
            _install_fork_guard(engine)
            return engine
        database = self._url.database or ""
        if not self._memory and not self._url.query.get("uri"):
            _create_private_database(Path(database).absolute())
        options: dict[str, Any] = {
            "connect_args": {
                "check_same_thread": False,
                "timeout": min(_BUSY_TIMEOUT, self._lock_timeout),
            },
        }
        if self._memory:
            options["poolclass"] = StaticPool
        engine = sa.create_engine(self._url, **options)
        _install_sqlite_hooks(engine, wal=not self._memory, lock_timeout=self._lock_timeout)
        _install_fork_guard(engine)
        return engine

    def _open_schema(self) -> None:
        found = self.run(schema.read_version, write=False)
        if found == schema.SCHEMA_VERSION:
            return
        if found is not None and found > schema.SCHEMA_VERSION:

            def refuse(conn: Connection) -> None:
                schema.check_version(found, self.url, conn)

            self.run(refuse, write=False)

        def op(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ADVISORY_LOCK_KEY)))
            schema.migrate(conn, self.url)

        try:
            self.run(op, write=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Another process created the schema at the same moment on a database without
            # a lock that serialises DDL; it is there now, or the error was real.
            if self.run(schema.read_version, write=False) != schema.SCHEMA_VERSION:
                raise


def task_exists(conn: Connection, task_id: str) -> bool:
    """Whether the task ``task_id`` is in the store (read in ``conn``'s transaction)."""
    query = sa.select(tasks_table.c.id).where(tasks_table.c.id == task_id)
    return conn.execute(query).first() is not None


def lock_event_numbers(conn: Connection) -> None:
    """Before inserting events: on PostgreSQL, hold the events lock until commit.

    A sequence hands out numbers when rows are inserted, not when they are committed, so
    without the lock a reader following ``get_events(after=last seen)`` could see event 11
    committed before event 10 and skip 10 for good. One event writer at a time makes the
    numbers commit in order, as SQLite's single writer does.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_EVENTS_LOCK_KEY)))


# -- engine set-up ---------------------------------------------------------------------


SQLITE_HEADER = b"SQLite format 3\x00"


def _create_private_database(path: Path) -> None:
    """Create the SQLite file and its folder, readable by the owner only (SQLite gives its
    -wal and -shm files the same permissions), unless it exists; then check that it is one.

    A new file is made complete under a temporary name and linked into place, so clearnb
    never leaves an empty store file: an empty or foreign file found there is damage, and
    is refused by :func:`check_sqlite_file` rather than silently used as a new store.
    """
    make_private_folder(path.parent)
    if not path.exists():
        scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}.new")
        try:
            os.close(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
            os.chmod(scratch, PRIVATE_FILE_MODE)
            made = sqlite3.connect(scratch)
            try:
                made.execute("PRAGMA journal_mode = WAL").fetchone()  # writes the header
            finally:
                made.close()
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(scratch, path)
        finally:
            for leftover in (scratch, *(Path(f"{scratch}{s}") for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
    check_sqlite_file(path)


def check_sqlite_file(path: Path) -> None:
    """Raise :class:`StoreError` saying what to do if ``path`` is not a SQLite database
    (empty, truncated to nothing, or another kind of file)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(len(SQLITE_HEADER))
    except PermissionError as exc:
        raise StoreError(
            f"The store file {path} cannot be read ({exc.strerror}): give your user read "
            "and write access to it (and to its folder), or set CLEARNB_HOME or "
            "CLEARNB_STORE_URL to a store you own.",
            path=str(path),
        ) from exc
    if head == SQLITE_HEADER:
        return
    what = (
        "is empty (0 bytes)"
        if not head
        else f"is not a SQLite database (it starts with {head[:12]!r})"
    )
    raise StoreError(
        f"The store file {path} {what}: it is damaged, or is not a clearnb store. Nothing "
        "was changed. Restore it from a backup, or move it away to start a new store "
        "there (its artifacts stay in the artifact folder), or set CLEARNB_HOME or "
        "CLEARNB_STORE_URL to another store.",
        path=str(path),
        reason=what,
    )


def store_problem(exc: BaseException, url: str) -> StoreError | None:
    """A :class:`StoreError` saying what to do for a damaged or read-only database, or
    None for other errors."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "readonly" in text or "read-only" in text or "attempt to write" in text:
        return StoreError(
            f"The store {url} is read-only ({text.strip()}): clearnb writes every run "
            "there. Make the file and its folder writable for your user, or set "
            "CLEARNB_HOME or CLEARNB_STORE_URL to a store you can write.",
            url=url,
        )
    if "not a database" in text or "malformed" in text or "disk image" in text:
        return StoreError(
            f"The store {url} is damaged ({text.strip()}). Nothing was changed. Restore "
            "it from a backup, or move it away to start a new store there, or set "
            "CLEARNB_HOME or CLEARNB_STORE_URL to another store.",
            url=url,
        )
    return None


def _is_memory_sqlite(url: sa.URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is locked by another connection (worth a retry)."""
    if getattr(getattr(exc, "orig", None), "sqlstate", None) in _POSTGRES_RETRY_STATES:
        return True
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "database is locked" in text or "is busy" in text or "table is locked" in text


def _install_sqlite_hooks(engine: Engine, *, wal: bool, lock_timeout: float) -> None:
    """Per-connection pragmas and our own BEGIN (the pysqlite recipe of SQLAlchemy)."""
    busy_ms = int(min(_BUSY_TIMEOUT, lock_timeout) * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # sqlite3 must not emit BEGIN itself: the "begin" hook below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                _enable_wal(cursor, lock_timeout)
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _install_postgres_hooks(engine: Engine, *, lock_timeout: float) -> None:
    """A lock wait gives up like SQLite's busy timeout, and the transaction is retried."""
    lock_ms = max(1, int(min(_BUSY_TIMEOUT, lock_timeout) * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET lock_timeout = {lock_ms}")
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


def _enable_wal(cursor: Any, lock_timeout: float) -> None:
    """Switch the database file to WAL; it stays so for every later connection."""
    deadline = time.monotonic() + lock_timeout
    delay = 0.005
    while True:
        try:
            mode = str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return
            mode = str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode == "wal":
                return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise StoreError(
                "Could not switch the SQLite store to WAL mode: other connections kept it "
                "busy. Close them (or wait for them to finish) and open the store again."
            )
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.5)


def _install_fork_guard(engine: Engine) -> None:
    """Never hand a connection opened by a parent process to a forked child."""

    @event.listens_for(engine, "connect")
    def _remember_pid(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(dbapi_connection: Any, record: Any, proxy: PoolProxiedConnection) -> None:
        if record.info.get("pid") != os.getpid():
            # Drop it without closing: the parent process still owns it.
            record.dbapi_connection = None
            raise sa.exc.DisconnectionError(
                "connection was opened by another process; opening a new one"
            )

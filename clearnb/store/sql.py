"""The metadata store on SQLAlchemy Core: SQLite by default, PostgreSQL for teams.

Several processes (agents, the CLI, notebooks) may write to one SQLite file at once. The
store makes that safe and quiet:

* WAL mode, so readers never block the writer and the writer never blocks readers;
* every write transaction starts with ``BEGIN IMMEDIATE``, so writers queue on SQLite's
  busy timeout when they start instead of failing later when a read lock cannot be
  upgraded;
* every transaction is retried with backoff while the database reports itself locked or
  busy, up to ``lock_timeout`` seconds, after which a :class:`StoreError` explains what
  is holding it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

from clearnb.config import PRIVATE_FILE_MODE, make_private_folder
from clearnb.errors import (
    ArtifactNotFoundError,
    MissingDependencyError,
    StoreError,
    TaskNotFoundError,
)
from clearnb.store import schema
from clearnb.store.records import (
    FINAL_STATUSES,
    TASK_STATUSES,
    ArtifactRecord,
    EventRecord,
    ReportRecord,
    ScalarRecord,
    TaskRecord,
    WorkerRecord,
)
from clearnb.store.schema import (
    artifacts_table,
    events_table,
    reports_table,
    scalars_table,
    tasks_table,
    workers_table,
)

T = TypeVar("T")

DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds a transaction keeps retrying while the database is locked by other writers."""

_BUSY_TIMEOUT = 30.0
"""Seconds SQLite itself waits for a lock before one attempt reports the database busy."""
_WRITE_OPTION = "clearnb_write"
_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))
_TASK_JSON_FIELDS = frozenset({"parameters", "tags", "error", "runtime"})
_ADVISORY_LOCK_KEY = 0x636C6E62  # "clnb": serialises schema migrations on PostgreSQL
_EVENTS_LOCK_KEY = 0x636C6E65  # "clne": serialises event inserts on PostgreSQL
_POSTGRES_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})
"""Serialization failure, deadlock, lock wait timed out: the transaction is worth a retry."""
_WORKER_FIELDS = tuple(f.name for f in dataclasses.fields(WorkerRecord))
CONTROLLER_WORKER_PREFIX = "controller "
"""A lease held by a pipeline controller on its own Task names it ``controller host:pid``."""
_ALL_TAGS = "__$all"
_ANY_TAGS = "__$any"


def open_store(url: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Store:
    """Open (and create or migrate, if needed) the metadata store at ``url``.

    ``url`` is a SQLAlchemy URL such as ``sqlite:////abs/path/clearnb.db`` or
    ``postgresql+psycopg://user@host/db``.
    """
    return Store(url, lock_timeout=lock_timeout)


class Store:
    """Tasks, artifacts, scalars, reports and events of one clearnb installation.

    Safe to share between the threads of a process; each process opens its own Store.
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
        except BaseException:
            self._engine.dispose()
            raise

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store's URL, with any password masked."""
        return self._url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close every pooled connection. The Store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def schema_version(self) -> int:
        """The schema version recorded in the store."""
        version = self._run(schema.read_version, write=False)
        return version or 0

    # -- tasks -----------------------------------------------------------------------

    def create_task(self, record: TaskRecord) -> TaskRecord:
        """Insert a new task; its id must not exist yet. Returns ``record``."""
        _check_status(record.status)
        _check_parameters(record.parameters)
        row = _task_to_row(record)

        def exists() -> StoreError:
            return StoreError(
                f"A task with id {record.id!r} already exists in the store at "
                f"{self.url}; create the record with a new id.",
                task_id=record.id,
            )

        def op(conn: Connection) -> None:
            if _task_exists(conn, record.id):
                raise exists()
            conn.execute(sa.insert(tasks_table).values(**row))

        try:
            self._run(op, write=True)
        except sa.exc.IntegrityError as exc:
            # Another writer inserted the same id after the check (possible on PostgreSQL).
            raise exists() from exc
        return record

    def get_task(self, task_id: str) -> TaskRecord:
        """The task with id ``task_id``; raises :class:`TaskNotFoundError` if there is none."""

        def op(conn: Connection) -> TaskRecord:
            return self._select_task(conn, task_id)

        return self._run(op, write=False)

    def update_task(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change the given fields of a task (and its ``last_update``); returns the task."""
        unknown = sorted(set(fields) - set(_TASK_FIELDS))
        if unknown:
            raise ValueError(
                f"Unknown task field(s) {', '.join(unknown)}; "
                f"a task has: {', '.join(f for f in _TASK_FIELDS if f != 'id')}."
            )
        if "id" in fields:
            raise ValueError("The id of a task cannot change; create a new task instead.")
        if "status" in fields:
            _check_status(fields["status"])
        if "parameters" in fields:
            _check_parameters(fields["parameters"])
        values = {name: _encode_task_field(name, value) for name, value in fields.items()}
        values.setdefault("last_update", time.time())

        def op(conn: Connection) -> TaskRecord:
            conn.execute(sa.update(tasks_table).where(tasks_table.c.id == task_id).values(values))
            return self._select_task(conn, task_id)

        return self._run(op, write=True)

    def set_parameters(self, task_id: str, parameters: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge ``parameters`` into the task's, section by section.

        A key given in a section replaces the stored value; keys not given are kept.
        """
        _check_parameters(parameters)

        def op(conn: Connection) -> None:
            stored = conn.execute(
                sa.select(tasks_table.c.parameters)
                .where(tasks_table.c.id == task_id)
                .with_for_update()
            ).scalar()
            if stored is None:
                raise self._task_not_found(task_id)
            merged: dict[str, dict[str, Any]] = json.loads(stored)
            for section, values in parameters.items():
                merged.setdefault(section, {}).update(values)
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(parameters=_dumps(merged, "parameters"), last_update=time.time())
            )

        self._run(op, write=True)

    def find_tasks(
        self,
        project: str | None = None,
        name: str | None = None,
        status: str | Iterable[str] | None = None,
        task_type: str | None = None,
        tags: Iterable[str] | None = None,
        parent: str | None = None,
        limit: int | None = None,
        cache_key: str | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, newest first.

        ``status`` is one status or several (any of them matches). ``tags`` follows
        ClearML: a task matches if it has any of the tags; ``"-tag"`` excludes tasks
        having ``tag``; a first element ``"__$all"`` asks for all the tags instead.
        """
        statuses = _status_list(status)
        tag_filter = _TagFilter.parse(tags)
        query = sa.select(tasks_table)
        if project is not None:
            query = query.where(tasks_table.c.project == project)
        if name is not None:
            query = query.where(tasks_table.c.name == name)
        if statuses is not None:
            query = query.where(tasks_table.c.status.in_(statuses))
        if task_type is not None:
            query = query.where(tasks_table.c.task_type == task_type)
        if parent is not None:
            query = query.where(tasks_table.c.parent == parent)
        if cache_key is not None:
            query = query.where(tasks_table.c.cache_key == cache_key)
        query = query.order_by(tasks_table.c.created.desc(), tasks_table.c.id.desc())
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, not {limit}.")
        if limit is not None and tag_filter is None:
            query = query.limit(limit)

        def op(conn: Connection) -> list[TaskRecord]:
            found: list[TaskRecord] = []
            if limit == 0:
                return found
            for row in conn.execute(query):
                record = _row_to_task(row)
                if tag_filter is not None and not tag_filter.matches(record.tags):
                    continue
                found.append(record)
                if limit is not None and len(found) >= limit:
                    break
            return found

        return self._run(op, write=False)

    def delete_task(self, task_id: str) -> None:
        """Delete a task with its artifact rows, scalars, reports and events."""

        def op(conn: Connection) -> None:
            if not _task_exists(conn, task_id):
                raise self._task_not_found(task_id)
            for table in (events_table, reports_table, scalars_table, artifacts_table):
                conn.execute(sa.delete(table).where(table.c.task_id == task_id))
            conn.execute(sa.delete(tasks_table).where(tasks_table.c.id == task_id))

        self._run(op, write=True)

    # -- artifacts -------------------------------------------------------------------

    def put_artifact(self, record: ArtifactRecord) -> None:
        """Record an artifact; one of the same name on the same task is replaced in place."""
        values = _artifact_to_row(record)
        del values["task_id"], values["name"]
        where = (artifacts_table.c.task_id == record.task_id) & (
            artifacts_table.c.name == record.name
        )

        def op(conn: Connection) -> None:
            replaced = conn.execute(sa.update(artifacts_table).where(where).values(values))
            if not replaced.rowcount:
                conn.execute(
                    sa.insert(artifacts_table).values(
                        task_id=record.task_id, name=record.name, **values
                    )
                )

        for attempt in range(3):
            try:
                self._run(op, write=True)
                return
            except sa.exc.IntegrityError:
                # Either the task is missing, or another writer inserted the same name
                # first (possible on PostgreSQL): then the next attempt replaces it.
                self._raise_if_missing([record.task_id])
                if attempt == 2:
                    raise

    def get_artifacts(self, task_id: str) -> dict[str, ArtifactRecord]:
        """The task's artifacts by name, in the order they were first stored."""

        def op(conn: Connection) -> dict[str, ArtifactRecord]:
            rows = conn.execute(
                sa.select(artifacts_table)
                .where(artifacts_table.c.task_id == task_id)
                .order_by(artifacts_table.c.id)
            )
            return {row.name: _row_to_artifact(row) for row in rows}

        return self._run(op, write=False)

    def get_artifact(self, task_id: str, name: str) -> ArtifactRecord:
        """One artifact; raises :class:`ArtifactNotFoundError` naming those the task has."""

        def op(conn: Connection) -> ArtifactRecord:
            row = conn.execute(
                sa.select(artifacts_table).where(
                    (artifacts_table.c.task_id == task_id) & (artifacts_table.c.name == name)
                )
            ).first()
            if row is not None:
                return _row_to_artifact(row)
            if not _task_exists(conn, task_id):
                raise self._task_not_found(task_id)
            names = list(
                conn.execute(
                    sa.select(artifacts_table.c.name)
                    .where(artifacts_table.c.task_id == task_id)
                    .order_by(artifacts_table.c.id)
                ).scalars()
            )
            have = ", ".join(repr(n) for n in names) if names else "none"
            raise ArtifactNotFoundError(
                f"Task {task_id} has no artifact named {name!r}; its artifacts are: {have}.",
                task_id=task_id,
                name=name,
                available=names,
            )

        return self._run(op, write=False)

    # -- scalars, reports, events ----------------------------------------------------

    def add_scalars(self, records: Iterable[ScalarRecord]) -> None:
        """Store reported scalars, all in one transaction."""
        rows = [dataclasses.asdict(record) for record in records]
        for row in rows:
            if math.isnan(row["value"]):
                row["value"] = None  # SQL has no NaN; NULL stands for it
        if not rows:
            return

        def op(conn: Connection) -> None:
            conn.execute(sa.insert(scalars_table), rows)

        self._run_for_tasks(op, {row["task_id"] for row in rows})

    def get_scalars(self, task_id: str, title: str | None = None) -> list[ScalarRecord]:
        """The task's scalars (of one title, if given) by title, series and iteration."""
        query = sa.select(scalars_table).where(scalars_table.c.task_id == task_id)
        if title is not None:
            query = query.where(scalars_table.c.title == title)
        query = query.order_by(
            scalars_table.c.title,
            scalars_table.c.series,
            scalars_table.c.iteration,
            scalars_table.c.id,
        )

        def op(conn: Connection) -> list[ScalarRecord]:
            return [
                ScalarRecord(
                    task_id=row.task_id,
                    title=row.title,
                    series=row.series,
                    iteration=int(row.iteration),
                    value=math.nan if row.value is None else float(row.value),
                    timestamp=float(row.timestamp),
                )
                for row in conn.execute(query)
            ]

        return self._run(op, write=False)

    def add_report(self, record: ReportRecord) -> None:
        """Store a text, table or figure report."""
        row = dataclasses.asdict(record)
        row["payload"] = _dumps(record.payload, "report payload")

        def op(conn: Connection) -> None:
            conn.execute(sa.insert(reports_table).values(**row))

        self._run_for_tasks(op, {record.task_id})

    def get_reports(self, task_id: str, kind: str | None = None) -> list[ReportRecord]:
        """The task's reports (of one kind, if given) in the order they were stored."""
        query = sa.select(reports_table).where(reports_table.c.task_id == task_id)
        if kind is not None:
            query = query.where(reports_table.c.kind == kind)
        query = query.order_by(reports_table.c.id)

        def op(conn: Connection) -> list[ReportRecord]:
            return [
                ReportRecord(
                    task_id=row.task_id,
                    kind=row.kind,
                    title=row.title,
                    series=row.series,
                    iteration=int(row.iteration),
                    payload=json.loads(row.payload),
                    timestamp=float(row.timestamp),
                )
                for row in conn.execute(query)
            ]

        return self._run(op, write=False)

    def add_event(self, record: EventRecord) -> EventRecord:
        """Store an event; sets ``record.seq`` to its new sequence number and returns it."""
        payload = _dumps(record.payload, "event payload")

        def op(conn: Connection) -> int:
            _lock_event_numbers(conn)
            result = conn.execute(
                sa.insert(events_table).values(
                    task_id=record.task_id,
                    kind=record.kind,
                    payload=payload,
                    timestamp=record.timestamp,
                )
            )
            key = result.inserted_primary_key
            if key is None:
                raise StoreError(f"The store at {self.url} did not return an event number.")
            return int(key[0])

        record.seq = self._run_for_tasks(op, {record.task_id})
        return record

    def get_events(
        self, task_id: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """Events with a sequence number above ``after`` (of one task, if given), oldest first."""
        query = sa.select(events_table).where(events_table.c.seq > after)
        if task_id is not None:
            query = query.where(events_table.c.task_id == task_id)
        query = query.order_by(events_table.c.seq)
        if limit is not None:
            query = query.limit(limit)

        def op(conn: Connection) -> list[EventRecord]:
            return [
                EventRecord(
                    task_id=row.task_id,
                    kind=row.kind,
                    payload=json.loads(row.payload),
                    seq=int(row.seq),
                    timestamp=float(row.timestamp),
                )
                for row in conn.execute(query)
            ]

        return self._run(op, write=False)

    # -- queues and agents -----------------------------------------------------------

    def enqueue_task(self, task_id: str, queue: str, *, force: bool = False) -> TaskRecord:
        """Put a draft task in ``queue`` (status ``queued``) for an agent to run.

        A task that already ran is refused unless ``force``, which resets it to run again;
        a running task is always refused.
        """
        if not isinstance(queue, str) or not queue.strip():
            raise ValueError(f"A queue name is a non-empty string, not {queue!r}.")

        def op(conn: Connection) -> TaskRecord:
            record = self._select_task(conn, task_id, lock=True)
            if record.status == "running":
                raise StoreError(
                    f"Task {task_id} ({record.name}) is running; abort it first "
                    f"(clearnb task abort {task_id}) or clone it to run a copy.",
                    task_id=task_id,
                )
            if record.status in FINAL_STATUSES and not force:
                raise StoreError(
                    f"Task {task_id} ({record.name}) is {record.status}; clone it "
                    "(Task.clone) to run it again, or enqueue it with force=True to reset it.",
                    task_id=task_id,
                )
            now = time.time()
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(
                    status="queued",
                    queue=queue,
                    enqueued=now,
                    worker=None,
                    lease_expires=None,
                    abort_requested=None,
                    error=None,
                    started=None,
                    completed=None,
                    last_update=now,
                )
            )
            return self._select_task(conn, task_id)

        return self._run(op, write=True)

    def has_queued(self, queues: Sequence[str]) -> bool:
        """Whether any task waits in one of ``queues`` (a cheap read before dequeuing)."""
        query = (
            sa.select(tasks_table.c.id)
            .where(tasks_table.c.status == "queued", tasks_table.c.queue.in_(list(queues)))
            .limit(1)
        )
        return self._run(lambda conn: conn.execute(query).first() is not None, write=False)

    def dequeue_task(self, queues: Sequence[str], worker: str, lease: float) -> TaskRecord | None:
        """Take the next task of ``queues`` for ``worker``, or ``None`` if they are empty.

        Queues are served in the order given, each oldest first. The task becomes
        ``running`` on ``worker`` with a lease of ``lease`` seconds; exactly one caller
        gets each task (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on
        SQLite).
        """
        names = list(queues)
        if not names:
            return None
        rank = sa.case({name: index for index, name in enumerate(names)}, value=tasks_table.c.queue)
        query = (
            sa.select(tasks_table.c.id)
            .where(tasks_table.c.status == "queued", tasks_table.c.queue.in_(names))
            .order_by(rank, tasks_table.c.enqueued, tasks_table.c.created)
            .limit(1)
            .with_for_update(skip_locked=True)
        )

        def op(conn: Connection) -> TaskRecord | None:
            task_id = conn.execute(query).scalar()
            if task_id is None:
                return None
            now = time.time()
            taken = conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id, tasks_table.c.status == "queued")
                .values(status="running", worker=worker, lease_expires=now + lease, last_update=now)
            )
            if taken.rowcount != 1:
                return None
            return self._select_task(conn, task_id)

        return self._run(op, write=True)

    def renew_leases(
        self, worker: str, task_ids: Iterable[str], lease: float
    ) -> dict[str, str | None]:
        """Extend ``worker``'s lease on its running tasks.

        Returns, for each task id given, ``None`` to go on, the reason someone asked to
        abort it, or a message saying the task is no longer this worker's to run.
        """
        wanted = list(task_ids)
        if not wanted:
            return {}

        def op(conn: Connection) -> dict[str, str | None]:
            now = time.time()
            rows = conn.execute(
                sa.select(
                    tasks_table.c.id,
                    tasks_table.c.status,
                    tasks_table.c.worker,
                    tasks_table.c.abort_requested,
                ).where(tasks_table.c.id.in_(wanted))
            ).all()
            found = {row.id: row for row in rows}
            answers: dict[str, str | None] = {}
            mine: list[str] = []
            for task_id in wanted:
                row = found.get(task_id)
                if row is None:
                    answers[task_id] = "the task was deleted from the store"
                elif row.worker != worker or row.status != "running":
                    answers[task_id] = (
                        f"the task is {row.status}"
                        + (f" on {row.worker}" if row.worker and row.worker != worker else "")
                        + " (this agent's lease on it had expired)"
                    )
                else:
                    answers[task_id] = row.abort_requested
                    mine.append(task_id)
            if mine:
                conn.execute(
                    sa.update(tasks_table)
                    .where(tasks_table.c.id.in_(mine))
                    .values(lease_expires=now + lease)
                )
            return answers

        return self._run(op, write=True)

    def release_task(self, task_id: str, worker: str) -> None:
        """``worker`` is done with ``task_id``: drop its lease (the status is the run's)."""
        self._run(
            lambda conn: conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id, tasks_table.c.worker == worker)
                .values(worker=None, lease_expires=None)
            ),
            write=True,
        )

    def expire_leases(self, now: float | None = None) -> list[TaskRecord]:
        """Fail every running task whose agent stopped renewing its lease; returns them."""
        moment = time.time() if now is None else now
        query = (
            sa.select(tasks_table.c.id)
            .where(
                tasks_table.c.status == "running",
                tasks_table.c.lease_expires.is_not(None),
                tasks_table.c.lease_expires < moment,
            )
            .with_for_update(skip_locked=True)
        )
        probe = sa.select(tasks_table.c.id).where(
            tasks_table.c.status == "running",
            tasks_table.c.lease_expires.is_not(None),
            tasks_table.c.lease_expires < moment,
        )
        if self._run(lambda conn: conn.execute(probe.limit(1)).first() is None, write=False):
            return []

        def op(conn: Connection) -> list[TaskRecord]:
            expired: list[TaskRecord] = []
            for task_id in conn.execute(query).scalars().all():
                record = self._select_task(conn, task_id)
                since = time.strftime(
                    "%H:%M:%S", time.localtime(record.lease_expires or moment)
                )
                worker = record.worker or "?"
                if worker.startswith(CONTROLLER_WORKER_PREFIX):
                    reason = (
                        f"the pipeline controller ({worker.removeprefix(CONTROLLER_WORKER_PREFIX)})"
                        f" stopped responding (its lease expired at {since}): its process "
                        "was killed or lost the store"
                    )
                else:
                    reason = (
                        f"the agent {worker} running it stopped responding (its lease "
                        f"expired at {since}): the agent died or lost the store"
                    )
                conn.execute(
                    sa.update(tasks_table)
                    .where(tasks_table.c.id == task_id)
                    .values(
                        status="failed",
                        error=_dumps({"reason": reason, "ename": "LeaseExpired"}, "task error"),
                        completed=moment,
                        lease_expires=None,
                        last_update=moment,
                    )
                )
                _lock_event_numbers(conn)
                conn.execute(
                    sa.insert(events_table).values(
                        task_id=task_id,
                        kind="task_finished",
                        payload=_dumps({"status": "failed", "error": {"reason": reason}}, "event"),
                        timestamp=moment,
                    )
                )
                expired.append(self._select_task(conn, task_id))
            return expired

        return self._run(op, write=True)

    def request_abort(self, task_id: str, reason: str) -> TaskRecord:
        """Stop a task: a queued one leaves its queue ``aborted`` at once; a running one is
        flagged, and the agent (or controller) running it stops its kernel."""

        def op(conn: Connection) -> TaskRecord:
            record = self._select_task(conn, task_id, lock=True)
            now = time.time()
            if record.status in ("created", "queued"):
                values: dict[str, Any] = {
                    "status": "aborted",
                    "completed": now,
                    "error": _dumps({"reason": f"aborted: {reason}"}, "task error"),
                }
            elif record.status == "running":
                values = {"abort_requested": reason}
            else:
                return record
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(last_update=now, **values)
            )
            return self._select_task(conn, task_id)

        return self._run(op, write=True)

    def queued_tasks(self, queue: str | None = None) -> list[TaskRecord]:
        """Tasks waiting in ``queue`` (or in any queue), next to run first."""
        query = sa.select(tasks_table).where(tasks_table.c.status == "queued")
        query = query.where(
            tasks_table.c.queue.is_not(None)
            if queue is None
            else tasks_table.c.queue == queue
        ).order_by(tasks_table.c.enqueued, tasks_table.c.created)
        return self._run(
            lambda conn: [_row_to_task(row) for row in conn.execute(query)], write=False
        )

    def put_worker(self, record: WorkerRecord) -> None:
        """Record an agent's heartbeat: who it is, what it serves, what it runs now."""
        values = {
            name: _dumps(value, "worker field") if name in ("queues", "running") else value
            for name, value in dataclasses.asdict(record).items()
        }
        del values["id"]

        def op(conn: Connection) -> None:
            where = workers_table.c.id == record.id
            if not conn.execute(sa.update(workers_table).where(where).values(values)).rowcount:
                conn.execute(sa.insert(workers_table).values(id=record.id, **values))

        self._run(op, write=True)

    def get_workers(self, seen_since: float | None = None) -> list[WorkerRecord]:
        """Agents in the store (those seen since ``seen_since``), most recently seen first."""
        query = sa.select(workers_table).order_by(workers_table.c.last_seen.desc())
        if seen_since is not None:
            query = query.where(workers_table.c.last_seen >= seen_since)

        def op(conn: Connection) -> list[WorkerRecord]:
            found = []
            for row in conn.execute(query):
                values = dict(row._mapping)
                values["queues"] = json.loads(values["queues"])
                values["running"] = json.loads(values["running"])
                found.append(WorkerRecord(**{name: values[name] for name in _WORKER_FIELDS}))
            return found

        return self._run(op, write=False)

    # -- internals -------------------------------------------------------------------

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
        found = self._run(schema.read_version, write=False)
        if found == schema.SCHEMA_VERSION:
            return
        if found is not None and found > schema.SCHEMA_VERSION:

            def refuse(conn: Connection) -> None:
                schema.check_version(found, self.url, conn)

            self._run(refuse, write=False)

        def op(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ADVISORY_LOCK_KEY)))
            schema.migrate(conn, self.url)

        try:
            self._run(op, write=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Another process created the schema at the same moment on a database without
            # a lock that serialises DDL; it is there now, or the error was real.
            if self._run(schema.read_version, write=False) != schema.SCHEMA_VERSION:
                raise

    def _run(self, op: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``op`` in one transaction, retrying while the database is locked."""
        engine = self._writer if write else self._engine
        guard = self._write_guard if write else self._read_guard
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.005
        while True:
            try:
                with guard, engine.begin() as conn:
                    return op(conn)
            except sa.exc.OperationalError as exc:
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

    def _run_for_tasks(self, op: Callable[[Connection], T], task_ids: Iterable[str]) -> T:
        """A write whose rows belong to ``task_ids``: a missing task is a clear error."""
        try:
            return self._run(op, write=True)
        except sa.exc.IntegrityError:
            self._raise_if_missing(task_ids)
            raise

    def _raise_if_missing(self, task_ids: Iterable[str]) -> None:
        ids = sorted(set(task_ids))

        def op(conn: Connection) -> set[str]:
            query = sa.select(tasks_table.c.id).where(tasks_table.c.id.in_(ids))
            return set(conn.execute(query).scalars())

        present = self._run(op, write=False)
        for task_id in ids:
            if task_id not in present:
                raise self._task_not_found(task_id)

    def _select_task(self, conn: Connection, task_id: str, *, lock: bool = False) -> TaskRecord:
        query = sa.select(tasks_table).where(tasks_table.c.id == task_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise self._task_not_found(task_id)
        return _row_to_task(row)

    def _task_not_found(self, task_id: str) -> TaskNotFoundError:
        return TaskNotFoundError(
            f"No task with id {task_id!r} in the store at {self.url}. "
            "Check the id with `clearnb task ls`.",
            task_id=task_id,
        )


# -- engine set-up ---------------------------------------------------------------------


def _create_private_database(path: Path) -> None:
    """Create the SQLite file (an empty file is an empty database) and its folder, readable
    by the owner only; SQLite gives its -wal and -shm files the same permissions."""
    make_private_folder(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_FILE_MODE)


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


# -- rows and records ------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not JSON")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"The {what} must hold only JSON values (str, int, float, bool, None, lists "
            f"and dicts with str keys): {exc}"
        ) from exc


def _encode_task_field(name: str, value: Any) -> Any:
    if name in _TASK_JSON_FIELDS:
        return None if value is None else _dumps(value, f"task {name}")
    return value


def _task_to_row(record: TaskRecord) -> dict[str, Any]:
    return {name: _encode_task_field(name, getattr(record, name)) for name in _TASK_FIELDS}


def _row_to_task(row: Row[Any]) -> TaskRecord:
    values = dict(row._mapping)
    for name in _TASK_JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return TaskRecord(**{name: values[name] for name in _TASK_FIELDS})


def _artifact_to_row(record: ArtifactRecord) -> dict[str, Any]:
    row = dataclasses.asdict(record)
    row["metadata"] = _dumps(record.metadata, "artifact metadata")
    return row


def _row_to_artifact(row: Row[Any]) -> ArtifactRecord:
    values = row._mapping
    return ArtifactRecord(
        task_id=values["task_id"],
        name=values["name"],
        url=values["url"],
        codec=values["codec"],
        type=values["type"],
        hash=values["hash"],
        size=int(values["size"]),
        preview=values["preview"],
        metadata=json.loads(values["metadata"]),
        created=float(values["created"]),
    )


def _lock_event_numbers(conn: Connection) -> None:
    """Before inserting events: on PostgreSQL, hold the events lock until commit.

    A sequence hands out numbers when rows are inserted, not when they are committed, so
    without the lock a reader following ``get_events(after=last seen)`` could see event 11
    committed before event 10 and skip 10 for good. One event writer at a time makes the
    numbers commit in order, as SQLite's single writer does.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_EVENTS_LOCK_KEY)))


def _task_exists(conn: Connection, task_id: str) -> bool:
    query = sa.select(tasks_table.c.id).where(tasks_table.c.id == task_id)
    return conn.execute(query).first() is not None


def _check_status(status: Any) -> None:
    if status not in TASK_STATUSES:
        raise ValueError(
            f"Unknown task status {status!r}; a status is one of: {', '.join(TASK_STATUSES)}."
        )


def _status_list(status: str | Iterable[str] | None) -> list[str] | None:
    if status is None:
        return None
    statuses = [status] if isinstance(status, str) else list(status)
    for value in statuses:
        _check_status(value)
    return statuses


def _check_parameters(parameters: Any) -> None:
    if not isinstance(parameters, Mapping):
        raise ValueError(
            "Task parameters are a dict of sections, e.g. {'General': {'x': 1}}; "
            f"got {type(parameters).__name__}."
        )
    for section, values in parameters.items():
        if not isinstance(section, str) or not isinstance(values, Mapping):
            raise ValueError(
                f"Parameter section {section!r} must be a str mapped to a dict of values, "
                f"e.g. {{'General': {{'x': 1}}}}; got {type(values).__name__}."
            )


@dataclasses.dataclass(frozen=True)
class _TagFilter:
    """ClearML's tag filter: any (default) or all of ``wanted``, none of ``excluded``."""

    wanted: frozenset[str]
    excluded: frozenset[str]
    require_all: bool

    @classmethod
    def parse(cls, tags: Iterable[str] | None) -> _TagFilter | None:
        if tags is None:
            return None
        items = [tags] if isinstance(tags, str) else list(tags)
        require_all = False
        if items and items[0] in (_ALL_TAGS, _ANY_TAGS):
            require_all = items.pop(0) == _ALL_TAGS
        wanted = frozenset(tag for tag in items if not tag.startswith("-"))
        excluded = frozenset(tag[1:] for tag in items if tag.startswith("-"))
        if not wanted and not excluded:
            return None
        return cls(wanted, excluded, require_all)

    def matches(self, tags: Iterable[str]) -> bool:
        have = set(tags)
        if have & self.excluded:
            return False
        if not self.wanted:
            return True
        if self.require_all:
            return self.wanted <= have
        return bool(self.wanted & have)

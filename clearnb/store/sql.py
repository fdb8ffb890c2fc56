"""The metadata store on SQLAlchemy Core: SQLite by default, PostgreSQL for teams.

:class:`Store` is the one interface: tasks, artifacts, scalars, reports and events here,
the queue tables from :mod:`clearnb.store.queues`, the model tables from
:mod:`clearnb.store.models`, all through one :class:`Database`
(:mod:`clearnb.store.engine`), which makes concurrent writers from several processes safe.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clearnb.errors import ArtifactNotFoundError, StoreError, TaskNotFoundError
from clearnb.store import schema
from clearnb.store.engine import (
    DEFAULT_LOCK_TIMEOUT,
    Database,
    lock_event_numbers,
    task_exists,
)
from clearnb.store.models import ModelOperations
from clearnb.store.queues import QueueOperations
from clearnb.store.records import (
    FINAL_STATUSES,
    ArtifactRecord,
    EventRecord,
    ReportRecord,
    ScalarRecord,
    TaskRecord,
)
from clearnb.store.rows import (
    artifact_to_row,
    check_parameters,
    check_status,
    dumps,
    encode_task_fields,
    row_to_artifact,
    row_to_task,
    status_list,
    task_to_row,
)
from clearnb.store.schema import (
    artifacts_table,
    events_table,
    reports_table,
    scalars_table,
    task_models_table,
    tasks_table,
)
from clearnb.store.tags import TagFilter

__all__ = ["Store", "open_store"]

SETTLED_FIELDS = ("status", "error", "completed")
MIN_ID_PREFIX = 4
"""The fewest characters of a task id that :meth:`Store.resolve_task_id` looks up."""
"""What ``merge_runtime(..., keep_final=True)`` leaves as it is on a task that has ended."""


def open_store(url: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Store:
    """Open (and create or migrate, if needed) the metadata store at ``url``.

    ``url`` is a SQLAlchemy URL such as ``sqlite:////abs/path/clearnb.db`` or
    ``postgresql+psycopg://user@host/db``.
    """
    return Store(url, lock_timeout=lock_timeout)


class Store(QueueOperations, ModelOperations):
    """Tasks, artifacts, scalars, reports, events, queues and models of one clearnb
    installation.

    Safe to share between the threads of a process; each process opens its own Store.
    """

    def __init__(self, url: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.database = Database(url, lock_timeout=lock_timeout)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store's URL, with any password masked."""
        return self.database.url

    def close(self) -> None:
        """Close every pooled connection. The Store must not be used afterwards."""
        self.database.close()

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
        version = self.database.run(schema.read_version, write=False)
        return version or 0

    # -- tasks -----------------------------------------------------------------------

    def create_task(self, record: TaskRecord) -> TaskRecord:
        """Insert a new task; its id must not exist yet. Returns ``record``."""
        check_status(record.status)
        check_parameters(record.parameters)
        row = task_to_row(record)

        def exists() -> StoreError:
            return StoreError(
                f"A task with id {record.id!r} already exists in the store at "
                f"{self.url}; create the record with a new id.",
                task_id=record.id,
            )

        def op(conn: Connection) -> None:
            if task_exists(conn, record.id):
                raise exists()
            conn.execute(sa.insert(tasks_table).values(**row))

        try:
            self.database.run(op, write=True)
        except sa.exc.IntegrityError as exc:
            # Another writer inserted the same id after the check (possible on PostgreSQL).
            raise exists() from exc
        return record

    def get_task(self, task_id: str) -> TaskRecord:
        """The task with id ``task_id``; raises :class:`TaskNotFoundError` if there is none."""

        def op(conn: Connection) -> TaskRecord:
            return self.database.select_task(conn, task_id)

        return self.database.run(op, write=False)

    def resolve_task_id(self, task_id: str) -> str:
        """The full id of the one task whose id is ``task_id`` or starts with it (the short
        ids the widget and JupyterLab show); an unknown or ambiguous prefix is an error."""
        text = task_id.strip()
        if not text or (len(text) < MIN_ID_PREFIX and not self.has_task(text)):
            raise TaskNotFoundError(
                f"No task with id {task_id!r} in the store at {self.url}: give its id, or at "
                f"least its first {MIN_ID_PREFIX} characters.",
                task_id=task_id,
            )
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = (
            sa.select(tasks_table.c.id)
            .where(tasks_table.c.id.like(pattern, escape="\\"))
            .order_by(tasks_table.c.id)
            .limit(6)
        )

        def op(conn: Connection) -> list[str]:
            return [str(row.id) for row in conn.execute(query)]

        found = self.database.run(op, write=False)
        if text in found or len(found) == 1:
            return text if text in found else found[0]
        if not found:
            raise self.database.task_not_found(text)
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise TaskNotFoundError(
            f"{task_id!r} is the start of several task ids ({shown}); give more of it.",
            task_id=task_id,
        )

    def has_task(self, task_id: str) -> bool:
        """Whether the store holds the task ``task_id`` (its full id)."""
        return self.database.run(lambda conn: task_exists(conn, task_id), write=False)

    def update_task(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change the given fields of a task (and its ``last_update``); returns the task."""
        values = encode_task_fields(fields)
        values.setdefault("last_update", time.time())

        def op(conn: Connection) -> TaskRecord:
            conn.execute(sa.update(tasks_table).where(tasks_table.c.id == task_id).values(values))
            return self.database.select_task(conn, task_id)

        return self.database.run(op, write=True)

    def update_runtime(self, task_id: str, key: str, change: Callable[[Any], Any]) -> TaskRecord:
        """Set ``runtime[key]`` to what ``change`` makes of it, in one transaction.

        ``change`` gets a copy of the stored value (``None`` if the key is absent) and
        returns the new value; ``None`` removes the key. The task's row stays locked
        meanwhile (``FOR UPDATE`` on PostgreSQL; on SQLite the write transaction excludes
        other writers), so neither this change nor a concurrent writer's is lost. Nothing
        is written if the value is unchanged. ``change`` runs inside the transaction: it
        must not use the store, and an exception it raises leaves the task as it was.
        Returns the task.
        """

        def op(conn: Connection) -> TaskRecord:
            record = self.database.select_task(conn, task_id, lock=True)
            runtime = dict(record.runtime)
            value = change(copy.deepcopy(runtime.get(key)))
            if value is None:
                runtime.pop(key, None)
            else:
                runtime[key] = value
            if runtime == record.runtime:
                return record
            self._write_runtime(conn, task_id, runtime, {"last_update": time.time()})
            return self.database.select_task(conn, task_id)

        return self.database.run(op, write=True)

    def merge_runtime(
        self, task_id: str, values: Mapping[str, Any], *, keep_final: bool = False, **fields: Any
    ) -> TaskRecord:
        """Set the runtime keys in ``values`` (the others kept) and the given task fields,
        in one transaction with the task's row locked; returns the task.

        Unlike ``update_task(runtime=...)``, a runtime key another writer sets meanwhile
        is kept. With ``keep_final``, a task that has ended meanwhile (someone settled it:
        its worker was declared lost) keeps its status, error and end time.
        """
        if "runtime" in fields:
            raise ValueError("Give the runtime keys to set as `values`, not as `runtime=`.")
        columns = encode_task_fields(fields)
        columns.setdefault("last_update", time.time())

        def op(conn: Connection) -> TaskRecord:
            record = self.database.select_task(conn, task_id, lock=True)
            kept = columns
            if keep_final and record.status in FINAL_STATUSES:
                kept = {k: v for k, v in columns.items() if k not in SETTLED_FIELDS}
            self._write_runtime(conn, task_id, {**record.runtime, **values}, kept)
            return self.database.select_task(conn, task_id)

        return self.database.run(op, write=True)

    def set_parameters(self, task_id: str, parameters: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge ``parameters`` into the task's, section by section.

        A key given in a section replaces the stored value; keys not given are kept.
        """
        check_parameters(parameters)

        def op(conn: Connection) -> None:
            stored = conn.execute(
                sa.select(tasks_table.c.parameters)
                .where(tasks_table.c.id == task_id)
                .with_for_update()
            ).scalar()
            if stored is None:
                raise self.database.task_not_found(task_id)
            merged: dict[str, dict[str, Any]] = json.loads(stored)
            for section, values in parameters.items():
                merged.setdefault(section, {}).update(values)
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(parameters=dumps(merged, "parameters"), last_update=time.time())
            )

        self.database.run(op, write=True)

    def set_configuration(self, task_id: str, items: Mapping[str, Mapping[str, Any]]) -> TaskRecord:
        """Set the task's configuration objects ``items`` (by name; the others are kept) in
        one transaction with the task's row locked; returns the task."""

        def op(conn: Connection) -> TaskRecord:
            record = self.database.select_task(conn, task_id, lock=True)
            merged = {**record.configuration, **{name: dict(item) for name, item in items.items()}}
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(configuration=dumps(merged, "configuration"), last_update=time.time())
            )
            return self.database.select_task(conn, task_id)

        return self.database.run(op, write=True)

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
        updated_after: float | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, newest first.

        ``updated_after`` keeps the tasks whose ``last_update`` is later than it.

        ``status`` is one status or several (any of them matches). ``tags`` follows
        ClearML: a task matches if it has any of the tags; ``"-tag"`` excludes tasks
        having ``tag``; a first element ``"__$all"`` asks for all the tags instead.
        """
        statuses = status_list(status)
        tag_filter = TagFilter.parse(tags)
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
        if updated_after is not None:
            query = query.where(tasks_table.c.last_update > updated_after)
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
                record = row_to_task(row)
                if tag_filter is not None and not tag_filter.matches(record.tags):
                    continue
                found.append(record)
                if limit is not None and len(found) >= limit:
                    break
            return found

        return self.database.run(op, write=False)

    def delete_task(self, task_id: str) -> None:
        """Delete a task with its artifact rows, scalars, reports, events and the connections
        of models to it (the models it created stay, as in ClearML)."""

        def op(conn: Connection) -> None:
            if not task_exists(conn, task_id):
                raise self.database.task_not_found(task_id)
            tables = (
                events_table,
                reports_table,
                scalars_table,
                artifacts_table,
                task_models_table,
            )
            for table in tables:
                conn.execute(sa.delete(table).where(table.c.task_id == task_id))
            conn.execute(sa.delete(tasks_table).where(tasks_table.c.id == task_id))

        self.database.run(op, write=True)

    def _write_runtime(
        self, conn: Connection, task_id: str, runtime: Mapping[str, Any], columns: Mapping[str, Any]
    ) -> None:
        conn.execute(
            sa.update(tasks_table)
            .where(tasks_table.c.id == task_id)
            .values(runtime=dumps(runtime, "task runtime"), **columns)
        )

    # -- artifacts -------------------------------------------------------------------

    def put_artifact(self, record: ArtifactRecord) -> None:
        """Record an artifact; one of the same name on the same task is replaced in place."""
        values = artifact_to_row(record)
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
                self.database.run(op, write=True)
                return
            except sa.exc.IntegrityError:
                # Either the task is missing, or another writer inserted the same name
                # first (possible on PostgreSQL): then the next attempt replaces it.
                self.database.raise_if_missing([record.task_id])
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
            return {row.name: row_to_artifact(row) for row in rows}

        return self.database.run(op, write=False)

    def get_artifact(self, task_id: str, name: str) -> ArtifactRecord:
        """One artifact; raises :class:`ArtifactNotFoundError` naming those the task has."""

        def op(conn: Connection) -> ArtifactRecord:
            row = conn.execute(
                sa.select(artifacts_table).where(
                    (artifacts_table.c.task_id == task_id) & (artifacts_table.c.name == name)
                )
            ).first()
            if row is not None:
                return row_to_artifact(row)
            if not task_exists(conn, task_id):
                raise self.database.task_not_found(task_id)
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

        return self.database.run(op, write=False)

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

        self.database.run_for_tasks(op, {row["task_id"] for row in rows})

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

        return self.database.run(op, write=False)

    def add_report(self, record: ReportRecord) -> None:
        """Store a text, table or figure report."""
        row = dataclasses.asdict(record)
        row["payload"] = dumps(record.payload, "report payload")

        def op(conn: Connection) -> None:
            conn.execute(sa.insert(reports_table).values(**row))

        self.database.run_for_tasks(op, {record.task_id})

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

        return self.database.run(op, write=False)

    def add_event(self, record: EventRecord) -> EventRecord:
        """Store an event; sets ``record.seq`` to its new sequence number and returns it."""
        payload = dumps(record.payload, "event payload")

        def op(conn: Connection) -> int:
            lock_event_numbers(conn)
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

        record.seq = self.database.run_for_tasks(op, {record.task_id})
        return record

    def last_event_number(self) -> int:
        """The sequence number of the newest event (0 when there is none)."""

        def op(conn: Connection) -> int:
            return int(conn.execute(sa.select(sa.func.max(events_table.c.seq))).scalar() or 0)

        return self.database.run(op, write=False)

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

        return self.database.run(op, write=False)

"""The model tables: models (their weights' location, hash and description) and the models
each task uses as input or produced as output, under a name.

Part of :class:`clearnb.store.Store`. The weights themselves live in the artifact storage;
a row holds where, with their sha256 and size, so that a reader can verify them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clearnb.errors import ModelNotFoundError, StoreError
from clearnb.store.engine import Database
from clearnb.store.records import ModelRecord, TaskModelRecord
from clearnb.store.rows import (
    dumps,
    encode_model_fields,
    model_to_row,
    row_to_model,
    row_to_task_model,
)
from clearnb.store.schema import models_table, task_models_table
from clearnb.store.tags import TagFilter

ARCHIVED_TAG = "archived"
"""The system tag of an archived model (left out of queries unless asked for)."""
MODEL_KINDS = ("input", "output")
"""How a model is connected to a task."""


class ModelOperations:
    """Creating, reading, finding and changing models, and connecting them to tasks.

    Part of :class:`clearnb.store.Store`, working through its :attr:`database`.
    """

    database: Database
    """The store's database (set by the store this is part of)."""

    def create_model(self, record: ModelRecord) -> ModelRecord:
        """Insert a new model; its id must not exist yet. Returns ``record``."""
        row = model_to_row(record)

        def op(conn: Connection) -> None:
            conn.execute(sa.insert(models_table).values(**row))

        try:
            self.database.run(op, write=True)
        except sa.exc.IntegrityError as exc:
            raise StoreError(
                f"A model with id {record.id!r} already exists in the store at "
                f"{self.database.url}; create the record with a new id.",
                model_id=record.id,
            ) from exc
        return record

    def get_model(self, model_id: str) -> ModelRecord:
        """The model ``model_id``; raises :class:`ModelNotFoundError` if there is none."""

        def op(conn: Connection) -> ModelRecord:
            return self._select_model(conn, model_id)

        return self.database.run(op, write=False)

    def update_model(self, model_id: str, **fields: Any) -> ModelRecord:
        """Change the given fields of a model (and its ``last_update``); returns the model."""
        values = encode_model_fields(fields)
        values.setdefault("last_update", time.time())

        def op(conn: Connection) -> ModelRecord:
            conn.execute(
                sa.update(models_table).where(models_table.c.id == model_id).values(values)
            )
            return self._select_model(conn, model_id)

        return self.database.run(op, write=True)

    def merge_model_metadata(
        self, model_id: str, entries: Mapping[str, Mapping[str, str]], *, replace: bool = False
    ) -> ModelRecord:
        """Set the metadata ``entries`` of a model in one transaction (with ``replace``, the
        others go); returns the model. A key another writer sets meanwhile is kept."""

        def op(conn: Connection) -> ModelRecord:
            stored = self._select_model(conn, model_id, lock=True)
            metadata = {} if replace else dict(stored.metadata)
            metadata.update({key: dict(entry) for key, entry in entries.items()})
            conn.execute(
                sa.update(models_table)
                .where(models_table.c.id == model_id)
                .values(metadata=dumps(metadata, "model metadata"), last_update=time.time())
            )
            return self._select_model(conn, model_id)

        return self.database.run(op, write=True)

    def find_models(
        self,
        project: str | None = None,
        name: str | None = None,
        tags: str | Iterable[str] | None = None,
        *,
        only_published: bool = False,
        include_archived: bool = False,
        limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        uri: str | None = None,
    ) -> list[ModelRecord]:
        """Models matching every given filter, newest first.

        ``tags`` is ClearML's tag filter (see :mod:`clearnb.store.tags`); ``metadata``
        keeps models whose metadata value of each key is the given value (as text).
        Archived models are left out unless ``include_archived``.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, not {limit}.")
        tag_filter = TagFilter.parse(tags)
        wanted = {str(key): str(value) for key, value in (metadata or {}).items()}
        query = sa.select(models_table)
        if project is not None:
            query = query.where(models_table.c.project == project)
        if name is not None:
            query = query.where(models_table.c.name == name)
        if only_published:
            query = query.where(models_table.c.published.is_(True))
        if task_id is not None:
            query = query.where(models_table.c.task_id == task_id)
        if uri is not None:
            query = query.where(models_table.c.uri == uri)
        query = query.order_by(models_table.c.created.desc(), models_table.c.id.desc())

        def keep(record: ModelRecord) -> bool:
            if not include_archived and ARCHIVED_TAG in record.system_tags:
                return False
            if tag_filter is not None and not tag_filter.matches(record.tags):
                return False
            return all(
                record.metadata.get(key, {}).get("value") == value for key, value in wanted.items()
            )

        def op(conn: Connection) -> list[ModelRecord]:
            found: list[ModelRecord] = []
            if limit == 0:
                return found
            for row in conn.execute(query):
                record = row_to_model(row)
                if keep(record):
                    found.append(record)
                    if limit is not None and len(found) >= limit:
                        break
            return found

        return self.database.run(op, write=False)

    def delete_model(self, model_id: str) -> None:
        """Delete a model and its connections to tasks (not its weights file)."""

        def op(conn: Connection) -> None:
            self._select_model(conn, model_id)
            conn.execute(
                sa.delete(task_models_table).where(task_models_table.c.model_id == model_id)
            )
            conn.execute(sa.delete(models_table).where(models_table.c.id == model_id))

        self.database.run(op, write=True)

    # -- models of tasks -------------------------------------------------------------

    def set_task_model(self, link: TaskModelRecord) -> None:
        """Connect a model to a task as its input or output under ``link.name``; a model
        connected under that name before is replaced."""
        if link.kind not in MODEL_KINDS:
            raise ValueError(
                f"A task's model is one of {', '.join(MODEL_KINDS)}, not {link.kind!r}."
            )
        where = (
            (task_models_table.c.task_id == link.task_id)
            & (task_models_table.c.kind == link.kind)
            & (task_models_table.c.name == link.name)
        )

        def op(conn: Connection) -> None:
            self._select_model(conn, link.model_id)
            changed = conn.execute(
                sa.update(task_models_table).where(where).values(model_id=link.model_id)
            )
            if not changed.rowcount:
                conn.execute(
                    sa.insert(task_models_table).values(
                        task_id=link.task_id,
                        kind=link.kind,
                        name=link.name,
                        model_id=link.model_id,
                        created=link.created,
                    )
                )

        for attempt in range(3):
            try:
                self.database.run(op, write=True)
                return
            except sa.exc.IntegrityError:
                # The task is missing, or another writer connected the same name first
                # (possible on PostgreSQL): then the next attempt replaces it.
                self.database.raise_if_missing([link.task_id])
                if attempt == 2:
                    raise

    def get_task_models(self, task_id: str, kind: str | None = None) -> list[TaskModelRecord]:
        """The models connected to a task (of one kind, if given), in the order connected."""
        query = sa.select(task_models_table).where(task_models_table.c.task_id == task_id)
        if kind is not None:
            query = query.where(task_models_table.c.kind == kind)
        query = query.order_by(task_models_table.c.id)

        def op(conn: Connection) -> list[TaskModelRecord]:
            return [row_to_task_model(row) for row in conn.execute(query)]

        return self.database.run(op, write=False)

    def copy_task_models(self, source_id: str, target_id: str, kind: str = "input") -> None:
        """Connect to task ``target_id`` the models of ``kind`` connected to ``source_id``,
        under the same names (a clone uses the models its source uses)."""
        for link in self.get_task_models(source_id, kind=kind):
            self.set_task_model(
                TaskModelRecord(target_id, link.kind, link.name, link.model_id, link.created)
            )

    def _select_model(self, conn: Connection, model_id: str, *, lock: bool = False) -> ModelRecord:
        query = sa.select(models_table).where(models_table.c.id == model_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise ModelNotFoundError(
                f"No model with id {model_id!r} in the store at {self.database.url}. "
                "Find models with Model.query_models(...).",
                model_id=model_id,
            )
        return row_to_model(row)

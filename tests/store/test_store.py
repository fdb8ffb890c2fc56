from __future__ import annotations

import math
import pickle
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from clearnb.errors import (
    ArtifactNotFoundError,
    MissingDependencyError,
    SchemaVersionError,
    StoreError,
    TaskNotFoundError,
)
from clearnb.store import (
    SCHEMA_VERSION,
    TASK_STATUSES,
    ArtifactRecord,
    EventRecord,
    ReportRecord,
    ScalarRecord,
    Store,
    TaskRecord,
    open_store,
    rows,
    schema,
)
from tests.helpers import wait_until
from tests.store.direct import direct_engine, execute, is_sqlite

TABLES = {"schema_version", "tasks", "artifacts", "scalars", "reports", "events"}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "clearnb.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A new store on each backend."""
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Store]:
    with open_store(sqlite_url(db_path)) as opened:
        yield opened


def database_tables(url: str) -> set[str]:
    engine = direct_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def make_task(project: str = "proj", name: str = "step", **fields: object) -> TaskRecord:
    return TaskRecord(project=project, name=name, **fields)  # type: ignore[arg-type]


def artifact(task_id: str, name: str, **fields: object) -> ArtifactRecord:
    values: dict[str, object] = {
        "url": f"/artifacts/{task_id}/{name}.json",
        "codec": "json",
        "type": "builtins.dict",
        "hash": "ab" * 32,
        "size": 12,
    }
    values.update(fields)
    return ArtifactRecord(task_id=task_id, name=name, **values)  # type: ignore[arg-type]


# -- opening, schema, pragmas -------------------------------------------------------------


def test_open_creates_parent_folder_and_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    with open_store(sqlite_url(db_path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.url == sqlite_url(db_path)
    assert db_path.is_file()
    assert database_tables(sqlite_url(db_path)) >= TABLES


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    with open_store(postgres_url) as store:
        assert store.database.engine.dialect.driver == "psycopg"
        assert store.url == postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
        assert repr(store) == f"Store({store.url!r})"


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'clearnb\[postgres\]'"):
        open_store("postgresql://user@127.0.0.1:1/none")


def test_wal_mode_is_on(sqlite_store: Store, db_path: Path) -> None:
    sqlite_store.create_task(make_task())
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db_path.with_name(db_path.name + "-wal").exists()


def test_connection_pragmas(sqlite_store: Store) -> None:
    with sqlite_store.database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_reopen_keeps_data(store_url: str) -> None:
    with open_store(store_url) as store:
        task = store.create_task(make_task())
    with open_store(store_url) as store:
        assert store.get_task(task.id) == task
        assert store.schema_version() == SCHEMA_VERSION


def test_one_migration_per_version() -> None:
    assert len(schema.MIGRATIONS) == SCHEMA_VERSION


def test_migrates_an_empty_database(store_url: str) -> None:
    # a database without tables (a SQLite file with its header: a 0-byte file is refused)
    execute(store_url, "CREATE TABLE scratch (a INTEGER)", "DROP TABLE scratch")
    assert database_tables(store_url) == set()
    with open_store(store_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
        task = store.create_task(make_task())
        assert store.get_task(task.id) == task
    assert database_tables(store_url) >= TABLES


@pytest.mark.parametrize("row", [None, 0], ids=["no-row", "version-0"])
def test_migrates_a_version_0_database(store_url: str, row: int | None) -> None:
    statements = ["CREATE TABLE schema_version (id INTEGER PRIMARY KEY, version INTEGER)"]
    if row is not None:
        statements.append(f"INSERT INTO schema_version VALUES (1, {row})")
    execute(store_url, *statements)
    with open_store(store_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert execute(store_url, "SELECT id, version FROM schema_version") == [(1, SCHEMA_VERSION)]
    assert database_tables(store_url) >= TABLES


def test_newer_schema_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    newer = SCHEMA_VERSION + 41
    execute(
        store_url,
        f"UPDATE schema_version SET version = {newer}",
        "UPDATE store_info SET value = '99.0.0' WHERE key = 'clearnb_version'",
    )
    with pytest.raises(SchemaVersionError) as caught:
        open_store(store_url)
    message = str(caught.value)
    assert f"written by clearnb 99.0.0 (schema version {newer})" in message
    assert f"reads up to schema version {SCHEMA_VERSION}" in message
    assert "pip install 'clearnb>=99.0.0'" in message
    assert caught.value.fields == {
        "found": newer,
        "supported": SCHEMA_VERSION,
        "written_by": "99.0.0",
    }
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, SchemaVersionError) and str(copy) == message


def test_in_memory_store() -> None:
    with open_store("sqlite://") as store:
        task = store.create_task(make_task())
        assert store.find_tasks() == [task]


def test_store_is_a_context_manager_and_closes(store_url: str) -> None:
    store = open_store(store_url)
    with store as entered:
        assert entered is store
        assert repr(store) == f"Store({store.url!r})"
        if is_sqlite(store_url):
            assert store.url == store_url
    assert store.database.engine.pool.checkedout() == 0


# -- tasks --------------------------------------------------------------------------------


def test_task_round_trip_with_typed_json_fields(store: Store) -> None:
    task = make_task(
        status="failed",
        task_type="function",
        notebook="/nb/step.ipynb",
        output_notebook="/out/step.ipynb",
        parameters={
            "General": {
                "n": 3,
                "ratio": 0.25,
                "flag": True,
                "off": False,
                "label": "x",
                "nothing": None,
                "items": [1, 2.5, "a", None, [True]],
                "nested": {"k": {"deep": 1}},
            },
            "Args": {},
        },
        tags=["b", "a"],
        parent="0" * 32,
        error={"reason": "cell raised", "cell_index": 2, "traceback": ["l1", "l2"]},
        runtime={"kernel": "python3", "cells": [0.1, 0.2]},
        comment="hello",
        started=1_700_000_000.5,
        completed=1_700_000_010.25,
    )
    assert store.create_task(task) is task
    loaded = store.get_task(task.id)
    assert loaded == task
    general = loaded.parameters["General"]
    assert type(general["n"]) is int
    assert type(general["ratio"]) is float
    assert general["flag"] is True and general["off"] is False
    assert general["nothing"] is None
    assert list(general) == list(task.parameters["General"])


def test_task_defaults_round_trip(store: Store) -> None:
    task = store.create_task(make_task())
    loaded = store.get_task(task.id)
    assert loaded == task
    assert loaded.error is None and loaded.started is None and loaded.parameters == {}


def test_create_task_with_existing_id_fails(store: Store) -> None:
    task = store.create_task(make_task())
    with pytest.raises(StoreError, match="already exists"):
        store.create_task(make_task(id=task.id))


def test_create_task_rejects_unknown_status(store: Store) -> None:
    with pytest.raises(ValueError) as caught:
        store.create_task(make_task(status="done"))
    for status in TASK_STATUSES:
        assert status in str(caught.value)


def test_create_task_rejects_non_json_parameters(store: Store) -> None:
    with pytest.raises(TypeError, match="JSON"):
        store.create_task(make_task(parameters={"General": {"x": object()}}))
    with pytest.raises(ValueError, match="section"):
        store.create_task(make_task(parameters={"General": 1}))


def test_numpy_values_are_stored_as_plain_json(store: Store) -> None:
    import numpy as np  # a dependency of clearnb itself: never skipped

    task = store.create_task(
        make_task(parameters={"General": {"f": np.float64(0.5), "a": np.arange(3)}})
    )
    assert store.get_task(task.id).parameters == {"General": {"f": 0.5, "a": [0, 1, 2]}}


def test_get_task_unknown_id(store: Store) -> None:
    with pytest.raises(TaskNotFoundError) as caught:
        store.get_task("deadbeef")
    assert "deadbeef" in str(caught.value)
    assert "clearnb task ls" in str(caught.value)
    assert caught.value.fields["task_id"] == "deadbeef"
    assert isinstance(caught.value, LookupError)


def test_update_task(store: Store) -> None:
    task = store.create_task(make_task(last_update=1.0))
    updated = store.update_task(
        task.id,
        status="completed",
        started=10.0,
        completed=20.0,
        runtime={"kernel": "python3"},
        error=None,
        tags=["done"],
    )
    assert updated.status == "completed"
    assert (updated.started, updated.completed) == (10.0, 20.0)
    assert updated.runtime == {"kernel": "python3"}
    assert updated.tags == ["done"]
    assert updated.last_update > 1.0
    assert store.get_task(task.id) == updated
    assert updated.name == task.name and updated.created == task.created


def test_update_task_can_set_last_update_explicitly(store: Store) -> None:
    task = store.create_task(make_task())
    assert store.update_task(task.id, last_update=5.0).last_update == 5.0


def test_update_task_rejects_bad_input(store: Store) -> None:
    task = store.create_task(make_task())
    with pytest.raises(ValueError, match=r"Unknown task field.*colour"):
        store.update_task(task.id, colour="red")
    with pytest.raises(ValueError, match="id of a task cannot change"):
        store.update_task(task.id, id="other")
    with pytest.raises(ValueError, match="Unknown task status 'finished'"):
        store.update_task(task.id, status="finished")
    with pytest.raises(TaskNotFoundError, match="missing-id"):
        store.update_task("missing-id", status="running")
    assert store.get_task(task.id) == task


def test_set_parameters_merges_by_section(store: Store) -> None:
    task = store.create_task(
        make_task(parameters={"General": {"a": 1, "b": 2}, "Other": {"x": "y"}})
    )
    store.set_parameters(task.id, {"General": {"b": 3.5, "c": None}, "New": {"z": [1]}})
    assert store.get_task(task.id).parameters == {
        "General": {"a": 1, "b": 3.5, "c": None},
        "Other": {"x": "y"},
        "New": {"z": [1]},
    }
    with pytest.raises(TaskNotFoundError, match="nope"):
        store.set_parameters("nope", {"General": {}})


def test_find_tasks_filters(store: Store) -> None:
    parent = store.create_task(make_task("p1", "controller", task_type="controller"))
    a = store.create_task(
        make_task("p1", "train", status="completed", tags=["best", "gpu"], parent=parent.id)
    )
    b = store.create_task(make_task("p1", "train", status="failed", tags=["gpu"]))
    c = store.create_task(make_task("p2", "train", status="running", tags=["debug"]))
    d = store.create_task(make_task("p1", "eval", task_type="function", parent=parent.id))

    def ids(tasks: list[TaskRecord]) -> set[str]:
        return {task.id for task in tasks}

    assert ids(store.find_tasks()) == {parent.id, a.id, b.id, c.id, d.id}
    assert ids(store.find_tasks(project="p1")) == {parent.id, a.id, b.id, d.id}
    assert ids(store.find_tasks(project="p1", name="train")) == {a.id, b.id}
    assert ids(store.find_tasks(name="train")) == {a.id, b.id, c.id}
    assert ids(store.find_tasks(status="failed")) == {b.id}
    assert ids(store.find_tasks(status=["completed", "running"])) == {a.id, c.id}
    assert ids(store.find_tasks(status=("created",))) == {parent.id, d.id}
    assert ids(store.find_tasks(task_type="function")) == {d.id}
    assert ids(store.find_tasks(parent=parent.id)) == {a.id, d.id}
    assert ids(store.find_tasks(tags=["gpu"])) == {a.id, b.id}
    assert ids(store.find_tasks(tags=["best", "debug"])) == {a.id, c.id}
    assert ids(store.find_tasks(tags=["__$all", "best", "gpu"])) == {a.id}
    assert ids(store.find_tasks(tags=["gpu", "-best"])) == {b.id}
    assert ids(store.find_tasks(tags=["-gpu"])) == {parent.id, c.id, d.id}
    assert ids(store.find_tasks(tags=[])) == ids(store.find_tasks())
    assert store.find_tasks(project="nowhere") == []
    assert store.find_tasks(project="p1", status="running") == []
    with pytest.raises(ValueError, match="Unknown task status 'done'"):
        store.find_tasks(status=["completed", "done"])


def test_find_tasks_newest_first_with_id_tiebreak(store: Store) -> None:
    old = store.create_task(make_task(created=100.0))
    new = store.create_task(make_task(created=300.0))
    tie_low = store.create_task(make_task(id="a" * 32, created=200.0))
    tie_high = store.create_task(make_task(id="b" * 32, created=200.0))
    expected = [new.id, tie_high.id, tie_low.id, old.id]
    assert [task.id for task in store.find_tasks()] == expected
    assert [task.id for task in store.find_tasks(limit=2)] == expected[:2]
    assert store.find_tasks(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.find_tasks(limit=-1)


def test_find_tasks_limit_applies_after_tag_filter(store: Store) -> None:
    for created in range(6):
        tags = ["keep"] if created % 2 else []
        store.create_task(make_task(created=float(created), tags=tags))
    found = store.find_tasks(tags=["keep"], limit=2)
    assert [task.created for task in found] == [5.0, 3.0]


def test_delete_task_removes_its_rows(store: Store) -> None:
    task = store.create_task(make_task())
    other = store.create_task(make_task())
    for owner in (task, other):
        store.put_artifact(artifact(owner.id, "data"))
        store.add_scalars([ScalarRecord(owner.id, "loss", "train", 0, 1.0)])
        store.add_report(ReportRecord(owner.id, "text", payload={"text": "hi"}))
        store.add_event(EventRecord(owner.id, "task_started"))
    store.delete_task(task.id)
    with pytest.raises(TaskNotFoundError):
        store.get_task(task.id)
    assert store.get_artifacts(task.id) == {}
    assert store.get_scalars(task.id) == []
    assert store.get_reports(task.id) == []
    assert store.get_events(task.id) == []
    assert list(store.get_artifacts(other.id)) == ["data"]
    assert len(store.get_scalars(other.id)) == 1
    assert len(store.get_reports(other.id)) == 1
    assert len(store.get_events(other.id)) == 1
    with pytest.raises(TaskNotFoundError, match=task.id):
        store.delete_task(task.id)


# -- artifacts ----------------------------------------------------------------------------


def test_artifact_round_trip(store: Store) -> None:
    task = store.create_task(make_task())
    record = artifact(
        task.id,
        "model",
        codec="pickle",
        type="sklearn.linear_model.LogisticRegression",
        size=2**40,
        preview="LogisticRegression()",
        metadata={"shape": [3, 4], "dtype": "float64", "ok": True},
        created=123.5,
    )
    store.put_artifact(record)
    assert store.get_artifact(task.id, "model") == record
    assert store.get_artifacts(task.id) == {"model": record}


def test_put_artifact_replaces_same_name_in_place(store: Store) -> None:
    task = store.create_task(make_task())
    for name in ("first", "second", "third"):
        store.put_artifact(artifact(task.id, name))
    replacement = artifact(task.id, "second", url="/new/url", hash="cd" * 32, size=99)
    store.put_artifact(replacement)
    artifacts = store.get_artifacts(task.id)
    assert list(artifacts) == ["first", "second", "third"]
    assert artifacts["second"] == replacement
    with store.database.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM artifacts").scalar() == 3


def test_same_artifact_name_on_two_tasks(store: Store) -> None:
    one = store.create_task(make_task())
    two = store.create_task(make_task())
    store.put_artifact(artifact(one.id, "data", size=1))
    store.put_artifact(artifact(two.id, "data", size=2))
    assert store.get_artifact(one.id, "data").size == 1
    assert store.get_artifact(two.id, "data").size == 2


def test_get_artifact_missing_lists_names(store: Store) -> None:
    task = store.create_task(make_task())
    store.put_artifact(artifact(task.id, "alpha"))
    store.put_artifact(artifact(task.id, "beta"))
    with pytest.raises(ArtifactNotFoundError) as caught:
        store.get_artifact(task.id, "gamma")
    message = str(caught.value)
    assert "'gamma'" in message and "'alpha', 'beta'" in message and task.id in message
    assert caught.value.fields["available"] == ["alpha", "beta"]
    assert isinstance(caught.value, KeyError)

    empty = store.create_task(make_task())
    with pytest.raises(ArtifactNotFoundError, match="artifacts are: none"):
        store.get_artifact(empty.id, "gamma")
    with pytest.raises(TaskNotFoundError, match="clearnb task ls"):
        store.get_artifact("unknown", "gamma")


def test_rows_for_an_unknown_task_are_refused(store: Store) -> None:
    with pytest.raises(TaskNotFoundError, match="ghost"):
        store.put_artifact(artifact("ghost", "x"))
    with pytest.raises(TaskNotFoundError, match="ghost"):
        store.add_scalars([ScalarRecord("ghost", "t", "s", 0, 1.0)])
    with pytest.raises(TaskNotFoundError, match="ghost"):
        store.add_report(ReportRecord("ghost", "text"))
    with pytest.raises(TaskNotFoundError, match="ghost"):
        store.add_event(EventRecord("ghost", "task_started"))
    assert store.get_events() == []


# -- scalars, reports, events -------------------------------------------------------------


def test_scalars_round_trip_in_order(store: Store) -> None:
    task = store.create_task(make_task())
    other = store.create_task(make_task())
    records = [
        ScalarRecord(task.id, "loss", "val", 1, 0.5, timestamp=1.0),
        ScalarRecord(task.id, "loss", "train", 2, 0.25, timestamp=2.0),
        ScalarRecord(task.id, "acc", "val", 0, 0.9, timestamp=3.0),
        ScalarRecord(task.id, "loss", "train", 0, 1.0, timestamp=4.0),
        ScalarRecord(other.id, "loss", "train", 0, 7.0, timestamp=5.0),
    ]
    store.add_scalars(iter(records))
    store.add_scalars([])
    assert store.get_scalars(task.id) == [records[2], records[3], records[1], records[0]]
    assert store.get_scalars(task.id, title="loss") == [records[3], records[1], records[0]]
    assert store.get_scalars(other.id) == [records[4]]
    assert store.get_scalars(task.id, title="none") == []
    loaded = store.get_scalars(task.id)[0]
    assert type(loaded.iteration) is int and type(loaded.value) is float


def test_floats_big_integers_and_text_round_trip_exactly(store: Store) -> None:
    now = time.time()
    values = [0.1 + 0.2, 1e-300, 5e-324, 1.7976931348623157e308, -0.0, math.inf, -math.inf, now]
    task = store.create_task(
        make_task("prøject ✓", "naïve 𝄞 step", comment="two\nlines\tand a tab", created=now)
    )
    assert store.get_task(task.id) == task
    records = [ScalarRecord(task.id, "x", "s", i, v, timestamp=now) for i, v in enumerate(values)]
    records.append(ScalarRecord(task.id, "x", "s", 2**62, math.nan, timestamp=now))
    store.add_scalars(records)
    loaded = store.get_scalars(task.id)
    assert [s.value for s in loaded[:-1]] == values
    assert loaded[-1].iteration == 2**62 and math.isnan(loaded[-1].value)
    assert all(s.timestamp == now for s in loaded)


def test_add_scalars_is_one_transaction(store: Store) -> None:
    task = store.create_task(make_task())
    batch = [ScalarRecord(task.id, "t", "s", 0, 1.0), ScalarRecord("ghost", "t", "s", 0, 1.0)]
    with pytest.raises(TaskNotFoundError):
        store.add_scalars(batch)
    assert store.get_scalars(task.id) == []


def test_reports_round_trip(store: Store) -> None:
    task = store.create_task(make_task())
    text = ReportRecord(task.id, "text", "notes", "s", 0, {"text": "hello"}, timestamp=1.0)
    table = ReportRecord(
        task.id,
        "table",
        "scores",
        "val",
        3,
        {"columns": ["a", "b"], "rows": [[1, 2.5], ["x", None]]},
        timestamp=2.0,
    )
    figure = ReportRecord(task.id, "figure", "plot", payload={"artifact": "fig"}, timestamp=3.0)
    for record in (text, table, figure):
        store.add_report(record)
    assert store.get_reports(task.id) == [text, table, figure]
    assert store.get_reports(task.id, kind="table") == [table]
    assert store.get_reports(task.id, kind="log") == []


def test_events_sequence_and_filters(store: Store) -> None:
    one = store.create_task(make_task())
    two = store.create_task(make_task())
    added = []
    for i in range(6):
        owner = one if i % 2 == 0 else two
        record = EventRecord(owner.id, "progress", {"cell": i, "ok": True}, timestamp=float(i))
        returned = store.add_event(record)
        assert returned is record and record.seq > 0
        added.append(record)
    seqs = [record.seq for record in added]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert store.get_events() == added
    assert store.get_events(one.id) == added[0::2]
    assert store.get_events(two.id, after=added[1].seq) == added[3::2]
    assert store.get_events(after=added[2].seq, limit=2) == added[3:5]
    assert store.get_events(after=added[-1].seq) == []


def test_event_numbers_are_never_reused(store: Store) -> None:
    keep = store.create_task(make_task())
    gone = store.create_task(make_task())
    store.add_event(EventRecord(keep.id, "a"))
    last = store.add_event(EventRecord(gone.id, "b")).seq
    store.delete_task(gone.id)
    assert store.add_event(EventRecord(keep.id, "c")).seq > last


# -- locking ------------------------------------------------------------------------------


HELD_AT_MOST = 60.0
"""Seconds a test's lock is held at most: the test releases it as soon as it has seen what
it waits for, so this only bounds a failing test."""


class HeldLock:
    """A lock another connection holds, from :meth:`hold` until :meth:`release`."""

    def __init__(self) -> None:
        self.locked = threading.Event()
        self.released = threading.Event()
        self.released_at: float | None = None
        """``time.monotonic()`` just before the lock was let go."""
        self.thread: threading.Thread | None = None

    def hold(self, take: Callable[[HeldLock], None]) -> None:
        """Run ``take`` (which takes the lock, sets :attr:`locked`, then calls
        :meth:`wait_for_release`) on a thread; return once the lock is held."""
        self.thread = threading.Thread(target=take, args=(self,), daemon=True)
        self.thread.start()
        assert self.locked.wait(HELD_AT_MOST), "the lock was never taken"

    def wait_for_release(self) -> None:
        """In ``take``, with the lock held: wait for :meth:`release`, then note the time."""
        self.released.wait(HELD_AT_MOST)
        self.released_at = time.monotonic()

    def release(self) -> None:
        """Let the lock go and wait until it is."""
        self.released.set()
        if self.thread is not None:
            self.thread.join(HELD_AT_MOST)


def sqlite_write_lock(path: Path) -> Callable[[HeldLock], None]:
    def take(lock: HeldLock) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            lock.locked.set()
            lock.wait_for_release()
            conn.execute("COMMIT")
        finally:
            conn.close()

    return take


def test_writer_waits_for_a_held_lock(sqlite_store: Store, db_path: Path) -> None:
    lock = HeldLock()
    lock.hold(sqlite_write_lock(db_path))
    written: list[tuple[TaskRecord, float]] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            written.append((sqlite_store.create_task(make_task()), time.monotonic()))
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    try:
        writer.start()
        writer.join(1.0)  # it tries to write while the lock is held
        assert errors == [] and written == [], "the writer neither fails nor writes meanwhile"
        assert writer.is_alive(), "the writer waits for the lock"
    finally:
        lock.release()
        writer.join(HELD_AT_MOST)
    assert errors == []
    ((task, written_at),) = written
    assert lock.released_at is not None and written_at >= lock.released_at
    assert sqlite_store.get_task(task.id) == task


def test_lock_held_too_long_is_a_clear_store_error(db_path: Path) -> None:
    with open_store(sqlite_url(db_path), lock_timeout=0.3) as store:
        lock = HeldLock()
        lock.hold(sqlite_write_lock(db_path))
        try:
            with pytest.raises(StoreError, match="stayed locked") as caught:
                store.create_task(make_task())
            assert "database is locked" not in str(caught.value)
            # Reads still work while another process writes (WAL).
            assert store.find_tasks() == []
        finally:
            lock.release()


def postgres_row_lock(url: str, task_id: str) -> Callable[[HeldLock], None]:
    def take(lock: HeldLock) -> None:
        engine = direct_engine(url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "SELECT id FROM tasks WHERE id = %(id)s FOR UPDATE", {"id": task_id}
                )
                lock.locked.set()
                lock.wait_for_release()
        finally:
            engine.dispose()

    return take


@pytest.mark.postgres
def test_postgres_lock_held_too_long_is_a_clear_store_error(postgres_url: str) -> None:
    with open_store(postgres_url, lock_timeout=0.3) as store:
        task = store.create_task(make_task())
        lock = HeldLock()
        lock.hold(postgres_row_lock(postgres_url, task.id))
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="stayed locked"):
                store.update_task(task.id, status="running")
            waited = time.monotonic() - started
            # It waited its lock timeout, then gave up by itself: the row is held for a
            # minute, and nothing else ends the wait.
            assert 0.25 <= waited < HELD_AT_MOST / 2, waited
            # Reads still work while another transaction holds the row.
            assert store.get_task(task.id) == task
        finally:
            lock.release()
        assert store.update_task(task.id, status="running").status == "running"


def backends_waiting_on_a_lock(url: str) -> int:
    """How many sessions on the PostgreSQL database at ``url`` wait for a lock now."""
    ((count,),) = execute(
        url,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    assert isinstance(count, int)
    return count


@pytest.mark.postgres
def test_postgres_same_id_created_concurrently_is_a_store_error(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        task = make_task()
        engine = direct_engine(postgres_url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.insert(schema.tasks_table).values(**rows.task_to_row(task)))
                # Not committed yet: the store's check cannot see it, its insert waits.
                result: list[BaseException] = []

                def create() -> None:
                    try:
                        store.create_task(task)
                    except BaseException as exc:
                        result.append(exc)

                creator = threading.Thread(target=create)
                creator.start()
                wait_until(
                    lambda: backends_waiting_on_a_lock(postgres_url),
                    60,
                    "the store's insert to wait for the uncommitted row",
                )
                conn.commit()
                creator.join(timeout=10)
        finally:
            engine.dispose()
        assert len(result) == 1
        assert isinstance(result[0], StoreError)
        assert "already exists" in str(result[0])
        assert isinstance(result[0].__cause__, sa.exc.IntegrityError)

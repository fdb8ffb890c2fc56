"""The queue tables: tasks waiting in queues, the agents' leases on them, the agents.

A queued task is taken by exactly one agent, which holds a lease on it and renews it while
the task runs; a task whose lease runs out is failed, so a dead agent (or a killed pipeline
controller holding a lease on its own Task) is seen from any machine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clearnb.errors import StoreError
from clearnb.processes import controller_gone
from clearnb.store.engine import Database, lock_event_numbers
from clearnb.store.records import FINAL_STATUSES, TaskRecord, WorkerRecord
from clearnb.store.rows import dumps, row_to_task, row_to_worker, worker_to_row
from clearnb.store.schema import events_table, tasks_table, workers_table

OWNER_KEY = "owner"
"""Runtime key of a running task naming the process that runs it here (host, pid, start)."""

CONTROLLER_WORKER_PREFIX = "controller "
"""A lease held by a pipeline controller on its own Task names it ``controller host:pid``."""
DASK_WORKER_PREFIX = "dask "
"""A lease held by a Dask worker on the step it runs names it ``dask tcp://host:port``."""


class QueueOperations:
    """Enqueueing, dequeueing, leases, abort requests and agents' heartbeats.

    Part of :class:`clearnb.store.Store`, working through its :attr:`database`.
    """

    database: Database
    """The store's database (set by the store this is part of)."""

    def enqueue_task(self, task_id: str, queue: str, *, force: bool = False) -> TaskRecord:
        """Put a draft task in ``queue`` (status ``queued``) for an agent to run.

        A task that already ran is refused unless ``force``, which resets it to run again;
        a running task is always refused.
        """
        if not isinstance(queue, str) or not queue.strip():
            raise ValueError(f"A queue name is a non-empty string, not {queue!r}.")
        database = self.database

        def op(conn: Connection) -> TaskRecord:
            record = database.select_task(conn, task_id, lock=True)
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
            return database.select_task(conn, task_id)

        return database.run(op, write=True)

    def remove_from_queue(self, task_id: str) -> TaskRecord:
        """Take a queued task out of its queue, back to a draft (status ``created``);
        a task that is not queued is refused with a :class:`StoreError` saying what it is."""
        database = self.database

        def op(conn: Connection) -> TaskRecord:
            record = database.select_task(conn, task_id, lock=True)
            if record.status != "queued":
                hint = (
                    f"abort it instead (clearnb task abort {task_id})"
                    if record.status == "running"
                    else "only a queued task can be dequeued"
                )
                raise StoreError(
                    f"Task {task_id} ({record.name}) is {record.status}, not queued: {hint}.",
                    task_id=task_id,
                    status=record.status,
                )
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(status="created", queue=None, enqueued=None, last_update=time.time())
            )
            return database.select_task(conn, task_id)

        return database.run(op, write=True)

    def has_queued(self, queues: Sequence[str]) -> bool:
        """Whether any task waits in one of ``queues`` (a cheap read before dequeuing)."""
        query = (
            sa.select(tasks_table.c.id)
            .where(tasks_table.c.status == "queued", tasks_table.c.queue.in_(list(queues)))
            .limit(1)
        )
        return self.database.run(lambda conn: conn.execute(query).first() is not None, write=False)

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
        database = self.database

        def op(conn: Connection) -> TaskRecord | None:
            task_id = conn.execute(query).scalar()
            if task_id is None:
                return None
            if not _take(conn, task_id, worker, lease):
                return None
            return database.select_task(conn, task_id)

        return database.run(op, write=True)

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

        return self.database.run(op, write=True)

    def release_task(self, task_id: str, worker: str) -> None:
        """``worker`` is done with ``task_id``: drop its lease (the status is the run's)."""
        self.database.run(
            lambda conn: conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id, tasks_table.c.worker == worker)
                .values(worker=None, lease_expires=None)
            ),
            write=True,
        )

    def expire_leases(self, now: float | None = None) -> list[TaskRecord]:
        """Fail every running task whose agent stopped renewing its lease, and every one
        whose owner (the process running it here, :data:`OWNER_KEY`) is gone; returns them.
        """
        moment = time.time() if now is None else now
        lost = self._running_where(
            tasks_table.c.lease_expires.is_not(None), tasks_table.c.lease_expires < moment
        )
        orphaned = [
            record
            for record in self._running_where(tasks_table.c.lease_expires.is_(None))
            if controller_gone(record.runtime.get(OWNER_KEY))
        ]
        if not lost and not orphaned:
            return []
        database = self.database

        def op(conn: Connection) -> list[TaskRecord]:
            ended: list[TaskRecord] = []
            for seen in lost + orphaned:
                record = database.select_task(conn, seen.id, lock=True)
                if record.status != "running":
                    continue
                if seen in lost:
                    if record.lease_expires is None or record.lease_expires >= moment:
                        continue  # renewed meanwhile
                    since = time.localtime(record.lease_expires)
                    reason = _lease_lost_reason(
                        record.worker or "?", time.strftime("%H:%M:%S", since)
                    )
                    ename = "LeaseExpired"
                else:
                    if record.runtime.get(OWNER_KEY) != seen.runtime.get(OWNER_KEY):
                        continue
                    reason = _owner_gone_reason(record.runtime.get(OWNER_KEY), record.parent)
                    ename = "OwnerGone"
                # a step of a pipeline whose controller died was interrupted, as its run was
                outcome = "aborted" if ename == "OwnerGone" and record.parent else "failed"
                _fail(conn, record.id, {"reason": reason, "ename": ename}, moment, outcome)
                ended.append(database.select_task(conn, record.id))
            return ended

        return database.run(op, write=True)

    def _running_where(self, *conditions: Any) -> list[TaskRecord]:
        query = sa.select(tasks_table).where(tasks_table.c.status == "running", *conditions)
        return self.database.run(
            lambda conn: [row_to_task(row) for row in conn.execute(query)], write=False
        )

    def claim_task(
        self,
        task_id: str,
        worker: str,
        lease: float,
        runtime: Mapping[str, Any] | None = None,
    ) -> TaskRecord | None:
        """Take the queued task ``task_id`` for ``worker`` (a Dask worker given it by id):
        it becomes ``running`` with a lease of ``lease`` seconds, and ``runtime`` facts
        (where it runs) are added to its runtime. ``None`` if it is not ``queued`` any more
        (aborted, or taken by an earlier attempt), so that a task handed out twice runs
        once."""
        database = self.database

        def op(conn: Connection) -> TaskRecord | None:
            if not _take(conn, task_id, worker, lease):
                return None
            record = database.select_task(conn, task_id)
            if not runtime:
                return record
            merged = {**record.runtime, **runtime}
            conn.execute(
                sa.update(tasks_table)
                .where(tasks_table.c.id == task_id)
                .values(runtime=dumps(merged, "task runtime"))
            )
            return dataclasses.replace(record, runtime=merged)

        return database.run(op, write=True)

    def fail_unfinished(
        self, task_id: str, error: Mapping[str, Any], *, worker: str | None = None
    ) -> TaskRecord | None:
        """Fail task ``task_id`` with ``error`` (its ``reason`` and ``ename``) unless it has
        ended; with ``worker``, only while it is queued or runs on that worker (which was
        lost). Records the ``task_finished`` event; returns the task, or ``None`` if it was
        left as it was."""
        database = self.database

        def op(conn: Connection) -> TaskRecord | None:
            record = database.select_task(conn, task_id, lock=True)
            if record.status in FINAL_STATUSES:
                return None
            if worker is not None and record.status == "running" and record.worker != worker:
                return None
            _fail(conn, task_id, error, time.time())
            return database.select_task(conn, task_id)

        return database.run(op, write=True)

    def request_abort(self, task_id: str, reason: str) -> TaskRecord:
        """Stop a task: a queued one leaves its queue ``aborted`` at once; a running one is
        flagged, and the agent (or controller) running it stops its kernel."""
        database = self.database

        def op(conn: Connection) -> TaskRecord:
            record = database.select_task(conn, task_id, lock=True)
            now = time.time()
            if record.status in ("created", "queued"):
                values: dict[str, Any] = {
                    "status": "aborted",
                    "completed": now,
                    "error": dumps({"reason": f"aborted: {reason}"}, "task error"),
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
            return database.select_task(conn, task_id)

        return database.run(op, write=True)

    def queued_tasks(self, queue: str | None = None) -> list[TaskRecord]:
        """Tasks waiting in ``queue`` (or in any queue), next to run first."""
        query = sa.select(tasks_table).where(tasks_table.c.status == "queued")
        query = query.where(
            tasks_table.c.queue.is_not(None) if queue is None else tasks_table.c.queue == queue
        ).order_by(tasks_table.c.enqueued, tasks_table.c.created)
        return self.database.run(
            lambda conn: [row_to_task(row) for row in conn.execute(query)], write=False
        )

    def put_worker(self, record: WorkerRecord) -> None:
        """Record an agent's heartbeat: who it is, what it serves, what it runs now."""
        values = worker_to_row(record)
        del values["id"]

        def op(conn: Connection) -> None:
            where = workers_table.c.id == record.id
            if not conn.execute(sa.update(workers_table).where(where).values(values)).rowcount:
                conn.execute(sa.insert(workers_table).values(id=record.id, **values))

        self.database.run(op, write=True)

    def get_workers(self, seen_since: float | None = None) -> list[WorkerRecord]:
        """Agents in the store (those seen since ``seen_since``), most recently seen first."""
        query = sa.select(workers_table).order_by(workers_table.c.last_seen.desc())
        if seen_since is not None:
            query = query.where(workers_table.c.last_seen >= seen_since)
        return self.database.run(
            lambda conn: [row_to_worker(row) for row in conn.execute(query)], write=False
        )


def _take(conn: Connection, task_id: str, worker: str, lease: float) -> bool:
    """Make the queued task ``task_id`` run on ``worker`` with a lease of ``lease`` seconds;
    False if it is not queued any more (another worker took it, or it was aborted)."""
    now = time.time()
    taken = conn.execute(
        sa.update(tasks_table)
        .where(tasks_table.c.id == task_id, tasks_table.c.status == "queued")
        .values(status="running", worker=worker, lease_expires=now + lease, last_update=now)
    )
    return bool(taken.rowcount == 1)


def _fail(
    conn: Connection,
    task_id: str,
    error: Mapping[str, Any],
    moment: float,
    status: str = "failed",
) -> None:
    """End task ``task_id`` ``status`` (failed) with ``error``; record its ``task_finished``
    event."""
    conn.execute(
        sa.update(tasks_table)
        .where(tasks_table.c.id == task_id)
        .values(
            status=status,
            error=dumps(dict(error), "task error"),
            completed=moment,
            lease_expires=None,
            last_update=moment,
        )
    )
    lock_event_numbers(conn)
    payload = {"status": status, "error": {"reason": error.get("reason")}}
    conn.execute(
        sa.insert(events_table).values(
            task_id=task_id, kind="task_finished", payload=dumps(payload, "event"), timestamp=moment
        )
    )


def _owner_gone_reason(owner: Any, parent: str | None = None) -> str:
    where = (
        f"process {owner.get('pid')} on {owner.get('host')}"
        if isinstance(owner, dict)
        else "the process running it"
    )
    if parent:
        return f"the pipeline controller ({where}) stopped without finishing the run"
    return (
        f"the task's run ended without recording its end: {where} is gone (killed, or "
        "its machine restarted); run the task again"
    )


def _lease_lost_reason(worker: str, since: str) -> str:
    """Why a task whose lease (held by ``worker``) expired at ``since`` was failed."""
    if worker.startswith(DASK_WORKER_PREFIX):
        return (
            f"the Dask worker {worker.removeprefix(DASK_WORKER_PREFIX)} running it stopped "
            f"responding (its lease expired at {since}): the worker died or lost the store"
        )
    if worker.startswith(CONTROLLER_WORKER_PREFIX):
        return (
            f"the pipeline controller ({worker.removeprefix(CONTROLLER_WORKER_PREFIX)})"
            f" stopped responding (its lease expired at {since}): its process "
            "was killed or lost the store"
        )
    return (
        f"the agent {worker} running it stopped responding (its lease "
        f"expired at {since}): the agent died or lost the store"
    )

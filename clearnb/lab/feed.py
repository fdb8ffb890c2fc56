"""Live changes of the store for every open sidebar: one look at the store per tick.

The feed reads the events stored after the last one it saw (by their increasing numbers)
and the tasks whose ``last_update`` moved, once per :data:`TICK` for all clients together,
and hands each subscriber the rows that changed. Runs started anywhere (a terminal, an
agent, another notebook) write to the store, so they reach the sidebar the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from clearnb import events
from clearnb.lab.views import run_row

if TYPE_CHECKING:
    from clearnb.store import Store

log = logging.getLogger(__name__)

TICK = 0.15
"""Seconds between two looks at the store while someone follows it."""
OVERLAP = 2.0
"""Seconds of ``last_update`` read again each look: a write that commits after a later one
(clocks of several processes, long transactions) is still seen."""
QUEUE_SIZE = 256
"""Changes kept for a subscriber that does not read; beyond, it is told to reload."""
PROGRESS_KINDS = (events.CELL_STARTED, events.CELL_FINISHED)


class ChangeFeed:
    """Follows one store for all subscribers; looks only while someone subscribes."""

    def __init__(self, store: Store, *, tick: float = TICK) -> None:
        self.store = store
        self.tick = tick
        self.seq = store.last_event_number()
        self.progress: dict[str, dict[str, int]] = {}
        """A running task's last cell (``{"cell": i, "cells": n}``), from its events."""
        self._since = time.time()
        self._seen: dict[str, float] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue receiving every change from now on; starts looking if needed."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._follow())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop handing changes to ``queue``."""
        self._subscribers.discard(queue)

    async def close(self) -> None:
        """Stop looking at the store."""
        self._subscribers.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while self._subscribers:
            began = time.monotonic()
            try:
                change = await loop.run_in_executor(None, self.look)
            except Exception:  # the store is busy or gone for a moment: look again later
                log.warning("clearnb could not read its store's changes", exc_info=True)
                change = None
            if change is not None:
                self._hand_out(change)
            await asyncio.sleep(max(0.0, self.tick - (time.monotonic() - began)))

    def _hand_out(self, change: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:  # a client that stopped reading: it reloads
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait({"seq": self.seq, "reload": True, "runs": [], "tasks": []})

    def look(self) -> dict[str, Any] | None:
        """The changes since the last look (rows of the runs that changed), or None."""
        now = time.time()
        found = self.store.get_events(after=self.seq)
        touched: set[str] = set()
        for event in found:
            self.seq = max(self.seq, event.seq)
            touched.add(event.task_id)
            if event.kind in PROGRESS_KINDS and event.payload.get("count"):
                cell = int(event.payload.get("index") or 0)
                self.progress[event.task_id] = {"cell": cell, "cells": int(event.payload["count"])}
            elif event.kind in (events.TASK_FINISHED, events.TASK_STARTED):
                self.progress.pop(event.task_id, None)
        changed = {
            record.id: record
            for record in self.store.find_tasks(updated_after=self._since - OVERLAP)
            if self._seen.get(record.id) != record.last_update
        }
        self._since = now
        self._seen = {
            task_id: stamp for task_id, stamp in self._seen.items() if stamp > now - 2 * OVERLAP
        }
        for task_id in touched - set(changed):
            with contextlib.suppress(Exception):  # deleted meanwhile
                changed[task_id] = self.store.get_task(task_id)
        if not changed:
            return None
        rows = []
        for record in changed.values():
            self._seen[record.id] = record.last_update
            rows.append(run_row(record, self.progress.get(record.id)))
        return {"seq": self.seq, "runs": rows, "tasks": sorted(changed)}

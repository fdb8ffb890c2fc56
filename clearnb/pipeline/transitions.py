"""Every change of a run's state goes through here: stored, then told to listeners.

:class:`RunState` holds the steps of one pipeline (their :class:`Node` objects, definition
and run state) and the pipeline's own status. :meth:`RunState.set_status` is the one way a
step changes status, in every mode: it updates the node, stores the run document and the
event, then tells the listeners and the step's ``status_change_callback``. A process that
follows a run through the store applies the stored events with :meth:`RunState.apply`,
so its listeners hear the same sequence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from clearnb.events import (
    PIPELINE_STATE,
    PIPELINE_STATUS,
    STEP_PROGRESS,
    STEP_STATUS,
    Broadcaster,
    PipelineEvent,
)
from clearnb.pipeline.node import Node
from clearnb.pipeline.spec import PipelineSpec
from clearnb.status import PENDING, STEP_FINISHED
from clearnb.store.pipelines import CONTROLLER_KEY

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
"""Seconds between two writes of step progress to the store (status changes: at once)."""


class RunState:
    """The steps of a pipeline and its status; the one place they change."""

    def __init__(self, spec: PipelineSpec, broadcaster: Broadcaster) -> None:
        self.spec = spec
        self.broadcaster = broadcaster
        self.lock = threading.RLock()
        self.nodes: dict[str, Node] = {}
        self.status = PENDING
        self.started: float | None = None
        self.ended: float | None = None
        self.controller: dict[str, Any] | None = None
        """The process running the current run (host, pid), stored with its state."""
        self.write_document: Callable[[Mapping[str, Any]], None] = _nowhere
        """Stores the run document (set while a run is recorded)."""
        self.record_event: Callable[[PipelineEvent], None] = _nowhere
        """Stores one event (set while a run is recorded)."""
        self.pipeline: Any = None
        """What ``status_change_callback(pipeline, node, previous)`` receives."""
        self.on_change: Callable[[], None] = _no_change
        """Called after every status change (the picture redraws)."""
        self._last_progress_write = 0.0
        self.sync()

    # -- the definition ------------------------------------------------------------------

    def sync(self) -> None:
        """Follow the definition: a node per step, in the definition's order."""
        with self.lock:
            nodes: dict[str, Node] = {}
            for name, step in self.spec.steps.items():
                node = self.nodes.get(name)
                if node is None or node.spec is not step:
                    node = Node(spec=step)
                nodes[name] = node
            self.nodes = nodes

    def sync_definition(self) -> None:
        """Follow a change of the definition (a step added, edited or removed) and tell the
        listeners the whole state, so a widget shown earlier draws the new steps at once."""
        self.sync()
        with self.lock:
            event = PipelineEvent(PIPELINE_STATE, None, self.status, self.status, self.document())
        self._tell(event)

    def reset(self) -> None:
        """Every step back to ``pending``, before a new run."""
        with self.lock:
            self.sync()
            self.status = PENDING
            for node in self.nodes.values():
                node.reset()

    def detach(self) -> None:
        """Stop storing changes (a run followed from elsewhere is stored by its controller)."""
        self.write_document = _nowhere
        self.record_event = _nowhere

    # -- the one way a step changes status -------------------------------------------------

    def set_status(self, node: Node, status: str, **changes: Any) -> None:
        """Move ``node`` to ``status`` (with ``changes`` to its run state): stored, then told."""
        with self.lock:
            previous = node.run.status
            for key, value in changes.items():
                setattr(node.run, key, value)
            node.run.status = status
            if status in STEP_FINISHED and node.run.job_ended is None:
                node.run.job_ended = time.time()
            event = PipelineEvent(STEP_STATUS, node.spec.name, status, previous, node.state())
            self.write_document(self.document())
            self.record_event(event)
        self._tell(event)
        callback = node.spec.status_change_callback
        if callback is not None:
            try:
                callback(self.pipeline, node, previous)
            except Exception:
                log.exception("status change callback of step %s raised", node.spec.name)
        self.on_change()

    def set_progress(
        self, node: Node, progress: dict[str, Any], *, store_now: bool = False
    ) -> None:
        """Record live progress of ``node`` (``cell``/``cells``, a wait message)."""
        with self.lock:
            node.run.progress = dict(progress)
            event = PipelineEvent(STEP_PROGRESS, node.spec.name, node.run.status, None, progress)
            now = time.time()
            if store_now or now - self._last_progress_write >= PROGRESS_INTERVAL:
                self._last_progress_write = now
                self.write_document(self.document())
        self._tell(event)

    def set_pipeline_status(self, status: str) -> None:
        """Move the pipeline to ``status``: stored, then told."""
        with self.lock:
            previous, self.status = self.status, status
            event = PipelineEvent(PIPELINE_STATUS, None, status, previous)
            self.write_document(self.document())
            self.record_event(event)
        self._tell(event)

    def push(self, write: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        """Store the run document now (with ``write``, or as the run stores it) and tell
        the listeners the whole state, though nothing changed."""
        with self.lock:
            document = self.document()
            (write or self.write_document)(document)
            event = PipelineEvent(PIPELINE_STATE, None, self.status, self.status, document)
        self._tell(event)
        self.on_change()

    def _tell(self, event: PipelineEvent) -> None:
        self.broadcaster.emit(event)

    # -- following a run recorded elsewhere ------------------------------------------------

    def apply(self, event: PipelineEvent) -> None:
        """Take an event a controller elsewhere stored, and tell the listeners here.

        Its ``previous`` becomes the status this side last saw, so that the listeners here
        hear an unbroken chain even if they joined late.
        """
        node: Node | None = None
        with self.lock:
            if event.kind == PIPELINE_STATUS:
                previous: str | None = self.status
                self.status = event.status
            else:
                node = self.nodes.get(event.step or "")
                if node is None:
                    return
                previous = node.run.status if event.kind == STEP_STATUS else None
                if event.kind == STEP_STATUS:
                    _load_state(node, event.payload)
                    node.run.status = event.status
                else:
                    node.run.progress = dict(event.payload)
            if event.kind != STEP_PROGRESS and previous == event.status:
                return  # seen already (a snapshot was taken meanwhile)
            seen = PipelineEvent(
                event.kind, event.step, event.status, previous, event.payload, event.timestamp
            )
        self._tell(seen)
        if node is not None and event.kind == STEP_STATUS:
            self.on_change()

    def catch_up(self, document: Mapping[str, Any]) -> None:
        """Tell the listeners of every difference between this side and ``document`` (the
        final state of a run followed from elsewhere), as events."""
        for name, saved in (document.get("nodes") or {}).items():
            node = self.nodes.get(name)
            status = saved.get("status")
            if node is not None and status and status != node.run.status:
                self.apply(PipelineEvent(STEP_STATUS, name, status, None, dict(saved)))
        status = document.get("status")
        if status and status != self.status:
            self.apply(PipelineEvent(PIPELINE_STATUS, None, status))
        with self.lock:
            self.started, self.ended = document.get("started"), document.get("ended")

    def load(self, document: Mapping[str, Any]) -> None:
        """Take the steps' state from a stored run document (no events: a snapshot)."""
        with self.lock:
            for name, saved in (document.get("nodes") or {}).items():
                node = self.nodes.get(name)
                if node is not None:
                    _load_state(node, saved)
            self.started, self.ended = document.get("started"), document.get("ended")

    # -- the stored document ---------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The run as JSON-able data (what is stored with its Task)."""
        with self.lock:
            return {
                "name": self.spec.name,
                "project": self.spec.project,
                "version": self.spec.version,
                "status": self.status,
                "started": self.started,
                "ended": self.ended,
                "order": list(self.nodes),
                "nodes": {name: node.state() for name, node in self.nodes.items()},
                **({CONTROLLER_KEY: self.controller} if self.controller else {}),
                **({"time_limit": self.spec.time_limit} if self.spec.time_limit else {}),
            }


def _load_state(node: Node, saved: Mapping[str, Any]) -> None:
    run = node.run
    run.status = saved.get("status", run.status)
    run.executed = saved.get("executed", run.executed)
    run.error = saved.get("error", run.error)
    run.job_started = saved.get("started", run.job_started)
    run.job_ended = saved.get("ended", run.job_ended)
    run.retries = saved.get("retries", run.retries)
    run.progress = dict(saved.get("progress") or {})
    run.warnings = list(saved.get("warnings") or [])
    if saved.get("resolved"):
        run.resolved = dict(saved["resolved"])


def _nowhere(value: Any) -> None:
    return None


def _no_change() -> None:
    return None

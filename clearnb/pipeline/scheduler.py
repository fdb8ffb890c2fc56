"""The run loop: which steps are ready, which are skipped, how many run at once.

:class:`Scheduler` offers every pending step whose parents have finished to a pool of at
most ``max_workers`` threads, skips the steps below a failure (unless the failed parent
lets them go on), stops offering steps once the run is being stopped, and, while steps may
still be added (the decorator's pipelines grow as their function runs), waits for them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from clearnb.pipeline import graph
from clearnb.pipeline.node import Node
from clearnb.pipeline.step import StepExecution
from clearnb.pipeline.transitions import RunState
from clearnb.status import ABORTED, FAILED, PENDING, SKIPPED, STEP_FINISHED, SUCCEEDED

log = logging.getLogger(__name__)

WAKE_INTERVAL = 0.5
"""Seconds between two looks at the run when nothing happened (an abort, a lease)."""


class Scheduler:
    """Runs the ready steps of one run until none is left (and no more may come)."""

    def __init__(
        self,
        state: RunState,
        execution: StepExecution,
        max_workers: int,
        *,
        abort_on_failure: bool,
        on_tick: Callable[[], None],
    ) -> None:
        self.state = state
        self.execution = execution
        self.max_workers = max(1, max_workers)
        self.abort_on_failure = abort_on_failure
        self.on_tick = on_tick
        """Called at every turn of the loop (the controller's lease)."""
        self.wake: queue.Queue[str] = queue.Queue()
        self.stop_reason: str | None = None
        self._accepting = threading.Event()

    # -- steps added while the run goes on -------------------------------------------------

    def accept_steps(self, accepting: bool) -> None:
        """While True, the run waits for more steps instead of ending when idle."""
        if accepting:
            self._accepting.set()
        else:
            self._accepting.clear()
        self.wake.put("")

    @property
    def accepting(self) -> bool:
        """True while steps may still be added to the running pipeline."""
        return self._accepting.is_set()

    def offer(self, name: str) -> None:
        """A step was added: look at it."""
        self.wake.put(name)

    # -- stopping --------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Stop the run: no step starts any more, running ones are aborted."""
        self.stop_reason = reason
        for handle in list(self.execution.handles.values()):
            handle.abort(reason)
        self.wake.put("")

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Run every step that can run; returns when none is left."""
        futures: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="step") as workers:
            while True:
                self.on_tick()
                for node in self.ready(futures):
                    futures[node.spec.name] = workers.submit(self._run_step, node)
                if all(future.done() for future in futures.values()):
                    if self.ready(futures):
                        continue
                    if not self.accepting:
                        break
                try:
                    self.wake.get(timeout=WAKE_INTERVAL)
                except queue.Empty:
                    continue

    def _run_step(self, node: Node) -> None:
        try:
            self.execution.run(node)
        finally:
            step = node.spec
            if node.run.status == FAILED and not step.continue_on_fail and self.abort_on_failure:
                self.abort(f"step {step.name!r} failed and abort_on_failure is set")
            self.wake.put(step.name)

    def ready(self, started: Mapping[str, Future[None]]) -> list[Node]:
        """Pending steps whose parents all finished; marks skipped those below a failure."""
        nodes = self.state.nodes
        found: list[Node] = []
        for name in graph.topological_order(self.state.spec.edges()):
            node = nodes.get(name)
            if node is None or node.run.status != PENDING or name in started:
                continue
            parents = [nodes[p] for p in node.spec.parents if p in nodes]
            if any(p.run.status not in STEP_FINISHED for p in parents):
                continue
            blocked = blocking_parent(parents)
            if self.stop_reason is not None or blocked is not None:
                reason = (
                    f"skipped: {self.stop_reason}"
                    if self.stop_reason is not None
                    else f"skipped because step {blocked!r} did not complete"
                )
                self.state.set_status(node, SKIPPED, error={"reason": reason})
                continue
            found.append(node)
        return found


def blocking_parent(parents: Iterable[Node]) -> str | None:
    """The first parent whose end keeps its children from running, or None."""
    for parent in parents:
        status, step = parent.run.status, parent.spec
        if status in SUCCEEDED:
            continue
        if status == FAILED and not step.skip_children_on_fail:
            continue
        if status == ABORTED and not step.skip_children_on_abort:
            continue
        return step.name
    return None


def final_status(nodes: Iterable[Node], stopped: bool) -> str:
    """``aborted`` if stopped, ``failed`` if a failure was not allowed, else ``completed``."""
    from clearnb.status import COMPLETED

    if stopped:
        return ABORTED
    for node in nodes:
        if node.run.status == FAILED and not node.spec.continue_on_fail:
            return FAILED
        if node.run.status == ABORTED and not node.spec.continue_on_abort:
            return FAILED
    return COMPLETED

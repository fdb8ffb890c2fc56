"""One local run of a pipeline, from opening its Task to closing it.

:class:`RunEngine` owns the run's lifecycle the way papermill's engine owns a notebook's:
open the run's Task and record it running, take earlier results when resuming, run the
scheduler on a background thread (kernels started while the first steps resolve), and
always settle the steps, close the Task, release the kernels and draw the final picture,
whatever happened. Debug runs (:meth:`RunEngine.running_here`) record plain calls made in
this process through the same transitions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import ClearnbError, PipelineError
from clearnb.executors.base import Executor
from clearnb.executors.choice import ExecutorChoice
from clearnb.executors.local import LocalExecutor
from clearnb.pipeline import validate
from clearnb.pipeline.node import Node, StepJob
from clearnb.pipeline.persistence import RunRecorder
from clearnb.pipeline.picture import PictureLoop, PictureRenderer
from clearnb.pipeline.resolve import Resolver
from clearnb.pipeline.scheduler import Scheduler, final_status
from clearnb.pipeline.sources import Sources, storable
from clearnb.pipeline.spec import PipelineSpec, StepSpec
from clearnb.pipeline.step import StepExecution
from clearnb.pipeline.transitions import RunState
from clearnb.pipeline.waiting import RunWaiter
from clearnb.processes import controller_identity
from clearnb.status import (
    ABORTED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    STEP_FINISHED,
    UNSUCCESSFUL,
)
from clearnb.store.records import TaskRecord
from clearnb.task import Task

if TYPE_CHECKING:
    from clearnb.executors.dask import DaskCluster

log = logging.getLogger(__name__)


class RunEngine:
    """Runs a pipeline here: the run's Task, its scheduler and executors, its end."""

    def __init__(
        self,
        spec: PipelineSpec,
        state: RunState,
        recorder: RunRecorder,
        backend: Backend,
        config: Config,
        sources: Sources,
        queue_of: Callable[[StepSpec], str | None],
    ) -> None:
        self.spec = spec
        self.state = state
        self.recorder = recorder
        self.backend = backend
        self.config = config
        self.sources = sources
        self.queue_of = queue_of
        self.thread: threading.Thread | None = None
        self.scheduler: Scheduler | None = None
        self.cleanup: threading.Thread | None = None
        self.renderer: PictureRenderer | None = None
        self.kernels_started = False
        self.stopped_by_user = False
        self.stop_reason: str | None = None
        self.timed_out = False
        """True once the run took longer than the pipeline's time limit (it then fails)."""
        self._picture: PictureLoop | None = None
        self._local: LocalExecutor | None = None
        self._dask: DaskCluster | None = None
        self._waiter = RunWaiter(spec.name, self.abort)

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard of the Dask cluster the run's steps go to (None: not on Dask)."""
        return self._dask.dashboard_link if self._dask is not None else None

    @property
    def running(self) -> bool:
        """True while the run's thread works."""
        return self.thread is not None and self.thread.is_alive()

    def elapsed(self) -> float:
        """Seconds since the run started (0 before)."""
        if self.state.started is None:
            return 0.0
        return (self.state.ended or time.time()) - self.state.started

    # -- the run -------------------------------------------------------------------------

    def begin(self) -> None:
        """Open the run's Task and record it running (before any step changes)."""
        self.stop_reason = None
        self.stopped_by_user = False
        self.timed_out = False
        state = self.state
        state.started, state.ended = time.time(), None
        state.controller = controller_identity()
        recorder = self.recorder
        recorder.open(self.spec.parameter_sections(storable), state.started)
        state.write_document = recorder.write
        state.record_event = recorder.record_event
        task_id = recorder.ensure_task().id
        self.renderer = PictureRenderer(task_id, {**os.environ, **self.config.environ()})
        self._picture = PictureLoop(self.renderer, self.elapsed)
        state.on_change = self._picture.want
        state.set_pipeline_status(RUNNING)

    def launch(
        self,
        *,
        name: str,
        target_project: str | None,
        force: bool,
        retry_default: Any,
        pre: Callable[..., Any] | None,
        post: Callable[..., Any] | None,
        accept_steps: bool,
        tag_steps: bool = False,
        executor: ExecutorChoice | None = None,
    ) -> None:
        """Start the run's thread (after :meth:`begin`); outside IPython the process waits
        for the run before it exits, as ClearML's ``start()`` does in a script. Steps run
        where ``executor`` says (None: here, and on agents for steps with a queue)."""
        scheduler = self._make_scheduler(
            target_project=target_project,
            force=force,
            retry_default=retry_default,
            pre=pre,
            post=post,
            tag_steps=tag_steps,
            executor=executor,
        )
        scheduler.accept_steps(accept_steps)
        self._waiter.started()
        self.thread = threading.Thread(
            target=self._run, args=(scheduler,), name=f"pipeline {name}", daemon=True
        )
        self.thread.start()

    def _make_scheduler(
        self,
        *,
        target_project: str | None,
        force: bool,
        retry_default: Any,
        pre: Callable[..., Any] | None,
        post: Callable[..., Any] | None,
        tag_steps: bool,
        executor: ExecutorChoice | None,
    ) -> Scheduler:
        local = LocalExecutor(self.config, min(self.spec.max_workers, max(1, len(self.spec.steps))))
        self._local = local
        self._dask = None
        if executor is not None and executor.is_dask:
            from clearnb.executors.dask import DaskCluster

            self._dask = DaskCluster(executor, self.backend)
        dask = self._dask
        self.kernels_started = False
        queues: dict[str, Executor] = {}
        resources: dict[str | None, Executor] = {}

        def executor_for(step: StepSpec) -> Executor:
            from clearnb.executors.queue import QueueExecutor

            name = self.queue_of(step)
            if dask is not None:  # a queue names the worker resource the step needs
                if name not in resources:
                    resources[name] = dask.executor(name)
                return resources[name]
            if name is None:
                self.kernels_started = True
                return local
            if name not in queues:
                queues[name] = QueueExecutor(self.backend, name)
            return queues[name]

        execution = StepExecution(
            state=self.state,
            backend=self.backend,
            sources=self.sources,
            resolver=Resolver(
                self.spec.parameters,
                lambda name: self.state.nodes[name].run.executed,
                self.backend,
            ),
            executor_for=executor_for,
            queue_of=self.queue_of,
            pipeline_task=self.recorder.ensure_task,
            target_project=target_project,
            stop_reason=lambda: self.stop_reason,
            force=force,
            retry_default=retry_default,
            pre_callback=pre,
            post_callback=post,
            tag_steps=tag_steps,
        )
        self.scheduler = Scheduler(
            self.state,
            execution,
            self.spec.max_workers,
            abort_on_failure=self.spec.abort_on_failure,
            on_tick=self._tick,
        )
        return self.scheduler

    def _needs_kernels(self, force: bool) -> bool:
        if self._dask is not None:
            return False  # the workers hold the kernels
        here = [
            node
            for node in self.state.nodes.values()
            if node.run.status == PENDING and self.queue_of(node.spec) is None
        ]
        return bool(here) and (force or any(not n.spec.cache_executed_step for n in here))

    def _run(self, scheduler: Scheduler) -> None:
        assert self._picture is not None and self._local is not None
        self._picture.start()
        local, dask = self._local, self._dask
        status = FAILED
        try:
            if self._needs_kernels(scheduler.execution.force):
                self.kernels_started = True
                local.warm()  # kernels start now, while the first steps resolve
            if dask is not None:
                self._connect(dask)
            elif "executor" in self.recorder.runtime:  # an earlier run's cluster is not this one's
                self.recorder.keep_runtime("executor", {"kind": "local", "executor": "local"})
            scheduler.run()
            status = final_status(self.state.nodes.values(), self.stopped_by_user)
            if self.timed_out:
                status = FAILED
        except BaseException as exc:  # the controller itself broke: say so, never hang
            log.exception("pipeline %s crashed", self.spec.name)
            for node in self.state.nodes.values():
                if node.run.status not in STEP_FINISHED:
                    reason = {"reason": f"the pipeline controller failed: {exc}"}
                    self.state.set_status(node, ABORTED, error=reason)
        finally:
            # kernels are released in the background; stop() waits for them
            self.cleanup = threading.Thread(
                target=_close_all, args=(local, dask), name="pipeline cleanup"
            )
            self.cleanup.start()
            try:
                self.end(status)
            finally:
                self._waiter.ended()

    def _connect(self, dask: DaskCluster) -> None:
        """Reach the cluster before the first step (its workers start their kernels) and
        record it with the run's Task; a cluster that cannot be used fails the steps."""
        try:
            dask.warm()
        except ClearnbError as exc:
            log.warning("pipeline %s: %s", self.spec.name, exc)
        self.recorder.keep_runtime("executor", dask.facts())

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the run's thread; True if it ended.

        Ctrl-C aborts the run, waits for it to settle, then raises ``KeyboardInterrupt``
        (a second Ctrl-C exits a script at once).
        """
        thread = self.thread
        if thread is None:
            return True
        if self._waiter.wait(timeout):
            thread.join()  # its last statement has run: this returns at once
        return not thread.is_alive()

    def end(self, status: str) -> None:
        """Record the run's end: its status, the final picture, the closed Task."""
        state = self.state
        state.ended = time.time()
        error = None
        if status != COMPLETED:
            bad = [n.spec.name for n in state.nodes.values() if n.run.status in UNSUCCESSFUL]
            error = {"reason": f"steps that did not complete: {', '.join(bad) or '-'}"}
            if self.stopped_by_user and self.stop_reason:
                error = {"reason": f"stopped: {self.stop_reason}"}
            elif self.timed_out and self.stop_reason:
                error = {"reason": self.stop_reason}
        state.set_pipeline_status(status)
        self.recorder.close(status, state.ended, error)
        if self._picture is not None:
            self._picture.finish()

    def update_plot(self) -> None:
        """Store the run's state and redraw its DAG picture now; the listeners hear of it.

        Before a run (or after it) the state is stored with the pipeline's Task all the
        same, so that its picture shows the steps waiting (or as the run left them).
        """
        if self.running:
            self.state.push()
        else:
            task = self.recorder.ensure_task()
            self.state.push(self.recorder.write)
            if self.renderer is None or self.renderer.task_id != task.id:
                self.renderer = PictureRenderer(task.id, {**os.environ, **self.config.environ()})
        if self.renderer is not None:
            self.renderer.request()

    def _tick(self) -> None:
        """At every turn of the run loop: the controller's lease, and the time limit."""
        reason = self.recorder.keep_lease()
        if reason is not None and self.stop_reason is None:
            log.warning("pipeline %s stops: %s", self.spec.name, reason)
            self.abort(reason)
        limit = self.spec.time_limit
        if limit and self.stop_reason is None and self.elapsed() > limit:
            reason = (
                f"the pipeline ran longer than its time limit of {limit / 60:g} minutes "
                "(set_pipeline_execution_time_limit)"
            )
            log.warning("pipeline %s stops: %s", self.spec.name, reason)
            self.timed_out = True
            self.stop_reason = reason
            if self.scheduler is not None:
                self.scheduler.abort(reason)

    def abort(self, reason: str) -> None:
        """Stop the run without waiting; it ends ``aborted``."""
        self.stopped_by_user = True
        self.stop_reason = reason
        if self.scheduler is not None:
            self.scheduler.abort(reason)

    def add_live_step(self, step: StepSpec, earlier: TaskRecord | None) -> Node:
        """Add ``step`` to the running pipeline while it accepts steps; ``earlier`` is a
        completed run of it to take instead of running it."""
        scheduler = self.scheduler
        if scheduler is None or not scheduler.accepting:
            raise PipelineError("steps are added to a running pipeline only while it accepts them")
        problems = validate.new_step_problems(self.spec, step, self.sources, self.queue_of)
        if problems:
            raise PipelineError.collect(problems, "problem")
        validate.warn_undeclared(self.spec, step, self.sources)
        with self.state.lock:
            self.spec.add(step)
            self.state.sync()
            node = self.state.nodes[step.name]
        if earlier is not None:
            self.take_earlier(node, earlier)
        else:
            self.state.write_document(self.state.document())
        scheduler.offer(step.name)
        return node

    # -- resuming ------------------------------------------------------------------------

    def resume_from(self, resume: bool | str, only: set[str] | None = None) -> None:
        """Take completed steps from an earlier run; with ``only``, run just those steps
        (forced) and skip the others that have no earlier result."""
        record = self.recorder.earlier_run(resume, required=True)
        assert record is not None
        self.recorder.claim_resume(record)
        done = self.recorder.completed_steps(record)
        for name, node in self.state.nodes.items():
            if only is not None and name in only:
                node.run.force = True
            elif name in done:
                self.take_earlier(node, done[name])
        if only is not None:
            for name, node in self.state.nodes.items():
                if name not in only and node.run.status == PENDING:
                    reason = {"reason": "not selected for this run, and no earlier result"}
                    self.state.set_status(node, SKIPPED, error=reason)

    def take_earlier(self, node: Node, record: TaskRecord) -> None:
        """Take ``record`` (a completed run of the step) as the step's result."""
        self.state.set_status(
            node,
            COMPLETED,
            executed=record.id,
            job=StepJob(Task.from_record(record, self.backend)),
            job_started=record.started,
            job_ended=record.completed,
            resolved={},
            progress={"resumed": True},
        )

    # -- debug runs: components called in this process -----------------------------------

    @contextlib.contextmanager
    def running_here(self) -> Iterator[None]:
        """A run whose steps are plain calls made here (:meth:`call_step`); it ends with
        the block, ``failed`` if the block raised."""
        self.recorder.start_run()
        self.state.reset()
        self.begin()
        status = FAILED
        try:
            yield
            status = final_status(self.state.nodes.values(), False)
        finally:
            self.end(status)

    def call_step(self, step: StepSpec, call: Callable[[], Any]) -> Any:
        """Record ``step`` and run it as ``call()`` here, now (inside :meth:`running_here`)."""
        with self.state.lock:
            self.spec.add(step)
            self.state.sync()
            node = self.state.nodes[step.name]
        self.state.set_status(node, RUNNING, job_started=time.time())
        try:
            result = call()
        except Exception as exc:
            self.state.set_status(node, FAILED, error={"reason": f"{type(exc).__name__}: {exc}"})
            raise
        self.state.set_status(node, COMPLETED)
        return result


def _close_all(local: LocalExecutor, dask: DaskCluster | None) -> None:
    """Release the run's kernels and its Dask connection."""
    try:
        local.close()
    finally:
        if dask is not None:
            dask.close()

"""One step of a run: resolve -> callbacks -> cache -> executor -> retries -> monitor.

:class:`StepExecution` runs a ready step to its end on a worker thread of the scheduler.
Every status change goes through :meth:`RunState.set_status`; whatever happens, the step
ends in a final status with the reason in its ``error``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clearnb import events as run_events
from clearnb.backend import Backend
from clearnb.errors import ClearnbError
from clearnb.events import RunEvent
from clearnb.execution.runner import RunHandle
from clearnb.executors.base import Executor, StepRequest
from clearnb.pipeline import functions, validate
from clearnb.pipeline.configuration import CONFIGURATION_KEY, DICTIONARY, TEXT
from clearnb.pipeline.node import Node, StepJob
from clearnb.pipeline.resolve import Resolver
from clearnb.pipeline.sources import Sources, missing_template
from clearnb.pipeline.spec import StepSpec
from clearnb.pipeline.transitions import RunState
from clearnb.status import ABORTED, CACHED, COMPLETED, FAILED, QUEUED, RUNNING, SKIPPED
from clearnb.store.records import ScalarRecord, TaskModelRecord
from clearnb.task import Task

log = logging.getLogger(__name__)
CACHE_CANDIDATES = 5
"""How many earlier runs with the same cache key are checked for one that is intact."""


def configuration_of(step: StepSpec) -> dict[str, Any]:
    """The runtime facts that give a step's Task its ``configuration_overrides``: each a
    configuration object (a dict, else text) as ``Task.connect_configuration`` keeps it."""
    if not step.configuration_overrides:
        return {}
    objects = {
        name: {
            "value": value if isinstance(value, Mapping | list) else str(value),
            "type": DICTIONARY if isinstance(value, Mapping | list) else TEXT,
            "description": None,
        }
        for name, value in step.configuration_overrides.items()
    }
    return {CONFIGURATION_KEY: objects}


@dataclass
class StepExecution:
    """What running a step needs from its run; :meth:`run` runs one ready step."""

    state: RunState
    backend: Backend
    sources: Sources
    resolver: Resolver
    executor_for: Callable[[StepSpec], Executor]
    queue_of: Callable[[StepSpec], str | None]
    pipeline_task: Callable[[], Task]
    """The pipeline's own Task (its id is every step's parent)."""
    target_project: str | None
    """The project of every step's Task; None: a template's own, else the pipeline's."""
    stop_reason: Callable[[], str | None]
    """Why the run is being stopped, or None while it goes on."""
    force: bool = False
    retry_default: int | Callable[..., bool] | None = None
    pre_callback: Callable[..., Any] | None = None
    post_callback: Callable[..., Any] | None = None
    tag_steps: bool = False
    """Tag every step's Task ``pipe: <pipeline task id>`` (ClearML's add_pipeline_tags)."""
    handles: dict[str, RunHandle] = field(default_factory=dict)
    """The handle of each running step, to abort it."""

    @property
    def pipeline(self) -> Any:
        """What callbacks receive as their first argument."""
        return self.state.pipeline

    def run(self, node: Node) -> None:
        """Run ``node`` to a final status; an unexpected error fails it with the reason."""
        try:
            self._run(node)
        except BaseException as exc:
            log.exception("step %s could not run", node.spec.name)
            self.state.set_status(
                node,
                FAILED,
                error={"reason": f"the step could not run: {type(exc).__name__}: {exc}"},
                job_ended=time.time(),
            )
        finally:
            self.handles.pop(node.spec.name, None)

    def _run(self, node: Node) -> None:
        step = node.spec
        try:
            resolved = self.resolver.resolve(step, self._containers(step))
        except ClearnbError as exc:
            reason = f"its parameters could not be resolved: {exc}"
            self.state.set_status(node, FAILED, error={"reason": reason})
            return
        node.run.resolved = resolved
        if not (step.is_function or step.notebook):
            template = self.sources.template_of(step)
            node.run.template_id = template.id if template else None
        node.run.warnings = validate.parameter_warnings(self.state.spec, step, self.sources)
        for callback in (step.pre_execute_callback, self.pre_callback):
            if callback is not None and callback(self.pipeline, node, resolved) is False:
                self.state.set_status(
                    node,
                    SKIPPED,
                    skip_job=True,
                    error={"reason": "skipped by its pre-execute callback"},
                )
                self.skip_below(node, f"skipped because step {step.name!r} was skipped")
                return
        if step.base_task_factory is not None:  # the template is made now, for this run
            made = step.base_task_factory(node)
            node.run.template_id = made if isinstance(made, str) else made.id
            step = dataclasses.replace(step, base_task_id=node.run.template_id)
        notebook, overrides, code_hash = self.sources.materialize(
            step, node.run.resolved, self._stash, self.state.spec.serialization
        )
        key = self.resolver.cache_key(step, node.run.resolved, code_hash)
        if step.cache_executed_step and not (self.force or node.run.force):
            hit = self._intact_cache_hit(step, key)
            if hit is not None:
                self.adopt(node, hit, CACHED, overrides=overrides)
                self._after_success(node)
                return
        while True:
            stopping = self.stop_reason()
            if stopping is not None:
                self.state.set_status(node, ABORTED, error={"reason": f"aborted: {stopping}"})
                return
            task = self._attempt(node, notebook, overrides, key)
            if task.status == "completed":
                self.state.set_status(node, COMPLETED)
                self._after_success(node)
                return
            status = ABORTED if task.status == "aborted" else FAILED
            if status == FAILED and self._should_retry(node):
                node.run.retries += 1
                log.info("retrying step %s (retry %d)", step.name, node.run.retries)
                continue
            self.state.set_status(node, status)
            self._monitor(node)  # what a failed step reported is the pipeline's to see too
            self._call_post(node)
            return

    def _intact_cache_hit(self, step: StepSpec, key: str) -> str | None:
        """The newest completed run with cache key ``key`` whose artifacts are all there and
        unaltered, or None (then the step runs): a run whose files were lost is no result."""
        store = self.backend.store
        for hit in store.find_tasks(cache_key=key, status="completed", limit=CACHE_CANDIDATES):
            problems = [
                problem
                for record in store.get_artifacts(hit.id).values()
                if (problem := self.backend.artifacts.problem_of(record)) is not None
            ]
            if not problems:
                return hit.id
            log.warning(
                "step %s: the cached run %s cannot be reused (%s); running the step",
                step.name,
                hit.id,
                problems[0],
            )
        return None

    def _attempt(self, node: Node, notebook: str, overrides: dict[str, Any], key: str) -> Task:
        """One run of the step on its executor; the node holds its Task afterwards."""
        step = node.spec
        handle = RunHandle()
        self.handles[step.name] = handle
        self.state.set_status(node, QUEUED, progress={}, job_started=time.time(), job_ended=None)
        template = node.run.template_id
        queue_name = self.queue_of(step)
        request = StepRequest(
            notebook=None if template else notebook,
            overrides=overrides,
            template=template,
            project_name=self.target_project or self._home_project(template),
            task_name=step.name,
            time_limit=step.timeout,
            memory_limit=step.memory_limit,
            parent=self.pipeline_task().id,
            tags=[*step.tags, f"pipe: {self.pipeline_task().id}"] if self.tag_steps else step.tags,
            runtime={"pipeline_step": step.name, **configuration_of(step)},
            cache_key=key,
            on_event=functools.partial(self._on_run_event, node),
            handle=handle,
            strict=self.state.spec.strict,
            on_unserved=(
                functools.partial(self._on_unserved, node, queue_name) if queue_name else None
            ),
        )
        task = self.executor_for(step).execute(request)
        node.run.executed = task.id
        node.run.job = StepJob(task, overrides)
        node.run.job_ended = time.time()
        node.run.error = task.error
        return task

    def _home_project(self, template: str | None) -> str:
        """Where a step's Task goes without a target project: its template's project, or
        the pipeline's."""
        if template is not None:
            with contextlib.suppress(ClearnbError):
                return self.backend.store.get_task(template).project
        return self.state.spec.project

    def _on_run_event(self, node: Node, event: RunEvent) -> None:
        if event.kind == run_events.TASK_STARTED:
            self.state.set_status(node, RUNNING, executed=event.task_id, progress={})
        elif event.kind == run_events.CELL_STARTED:
            progress = {"cell": event.payload["index"], "cells": event.payload["count"]}
            self.state.set_progress(node, progress)

    def _on_unserved(self, node: Node, queue_name: str, message: str) -> None:
        from clearnb.executors.queue import QueueWarning

        self.state.set_progress(node, {"waiting": message, "queue": queue_name}, store_now=True)
        warnings.warn(f"step {node.spec.name!r}: {message}", QueueWarning, stacklevel=2)

    def _should_retry(self, node: Node) -> bool:
        step = node.spec
        policy = step.retry_on_failure if step.retry_on_failure is not None else self.retry_default
        if policy is None or self.stop_reason() is not None:
            return False
        if callable(policy):
            try:
                return bool(policy(self.pipeline, node, node.run.retries))
            except Exception:  # as in ClearML: a retry callback that raises means no retry
                log.exception("the retry_on_failure callback of step %s raised", step.name)
                return False
        return node.run.retries < int(policy)

    def _after_success(self, node: Node) -> None:
        self._monitor(node)
        self._call_post(node)

    def _call_post(self, node: Node) -> None:
        for callback in (node.spec.post_execute_callback, self.post_callback):
            if callback is not None:
                try:
                    callback(self.pipeline, node)
                except Exception:
                    log.exception("post-execute callback of step %s raised", node.spec.name)

    def adopt(
        self,
        node: Node,
        task_id: str,
        status: str,
        overrides: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> None:
        """Take the run ``task_id`` (a cache hit, an earlier run's result) as the step's;
        ``overrides`` are those the step would have run with."""
        task = Task.from_record(self.backend.store.get_task(task_id), self.backend)
        self.state.set_status(
            node,
            status,
            executed=task_id,
            job=StepJob(task, overrides),
            job_started=task.record.started,
            job_ended=task.record.completed,
            **changes,
        )

    def skip_below(self, node: Node, reason: str) -> None:
        """Skip every pending step below ``node``, with ``reason``."""
        from clearnb.pipeline import graph
        from clearnb.status import PENDING

        for name in graph.descendants(self.state.spec.edges(), node.spec.name):
            below = self.state.nodes.get(name)
            if below is not None and below.run.status == PENDING:
                self.state.set_status(below, SKIPPED, error={"reason": reason})

    def _containers(self, step: StepSpec) -> set[str]:
        """The overrides of ``step`` whose declared parameter is a list or a dict."""
        if step.is_function or missing_template(step):
            return set()
        try:
            _, declared, _ = self.sources.declared(step)
        except ClearnbError:
            return set()
        return {
            key for key in step.parameters if declared.type_of(key) in ("list", "tuple", "dict")
        }

    def _stash(self, step: str, key: str, value: Any) -> dict[str, Any]:
        """Store a function step's argument that cannot travel as JSON with the pipeline."""
        pipeline_task = self.pipeline_task()
        name = f"{step}.{key}"
        serialize = self.state.spec.serialization.serialize
        pipeline_task.upload_artifact(name, value, serialization_function=serialize)
        return functions.artifact_input(pipeline_task.id, name)

    def _monitor(self, node: Node) -> None:
        """Copy the artifacts, scalars and output models the step monitors to the pipeline's
        Task (a model is linked there under its new name, not copied)."""
        step, executed = node.spec, node.run.executed
        if executed is None or not (
            step.monitor_artifacts or step.monitor_metrics or step.monitor_models
        ):
            return
        store = self.backend.store
        target = self.pipeline_task().id
        for item in step.monitor_artifacts:
            source, name = (item, item) if isinstance(item, str) else tuple(item)
            try:
                record = store.get_artifact(executed, source)
            except ClearnbError:
                log.warning("step %s has no artifact %r to monitor", step.name, source)
                continue
            record.task_id = target
            record.name = name
            store.put_artifact(record)
        rows = []
        for item in step.monitor_metrics:
            (title, series), (new_title, new_series) = (
                (item, item) if isinstance(item[0], str) else item
            )
            for row in store.get_scalars(executed, title=title):
                if row.series == series:
                    rows.append(
                        ScalarRecord(target, new_title, new_series, row.iteration, row.value)
                    )
        if rows:
            store.add_scalars(rows)
        made = {link.name: link.model_id for link in store.get_task_models(executed, "output")}
        for item in step.monitor_models:
            source, name = (item, item) if isinstance(item, str) else tuple(item)
            if source not in made:
                log.warning("step %s has no output model %r to monitor", step.name, source)
                continue
            store.set_task_model(TaskModelRecord(target, "output", name, made[source]))

"""PipelineController: a DAG of notebook (and function) steps, run as ClearML runs it.

Names and arguments follow ClearML's ``PipelineController`` so that a ClearML pipeline
script runs with its imports changed. This class is a facade: the definition is a
:class:`~clearnb.pipeline.spec.PipelineSpec`, checked by :mod:`~clearnb.pipeline.validate`,
written by :mod:`~clearnb.pipeline.serialize`; a run is a
:class:`~clearnb.pipeline.scheduler.Scheduler` of
:class:`~clearnb.pipeline.step.StepExecution` on executors, recorded by a
:class:`~clearnb.pipeline.persistence.RunRecorder`, every change going through
:class:`~clearnb.pipeline.transitions.RunState`. The run goes on in a background thread.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearnb import compat
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import PipelineError
from clearnb.events import Broadcaster, Listener
from clearnb.execution.limits import parse_count
from clearnb.executors.choice import executor_choice, executor_from_env
from clearnb.pipeline import drafts, graph, outcome, serialize, validate, views
from clearnb.pipeline.configuration import CONFIGURATION_KEY, ConnectedConfigurations
from clearnb.pipeline.definition import DefinitionMethods
from clearnb.pipeline.engine import RunEngine
from clearnb.pipeline.node import Node as StepNode
from clearnb.pipeline.persistence import RunRecorder, spec_of_run
from clearnb.pipeline.remote import RemoteRun
from clearnb.pipeline.sources import Sources
from clearnb.pipeline.spec import (
    NOTEBOOK,
    OPTIONS_BY_NAME,
    PIPELINE_SECTION,
    UNUSED_WHY,
    PipelineSpec,
    Serialization,
    StepSpec,
    build_step,
    unused_pipeline_arguments,
)
from clearnb.pipeline.stored import StoredMethods
from clearnb.pipeline.transitions import RunState
from clearnb.status import (
    ABORTED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    STEP_FINISHED,
    TASK_FINAL,
    UNSUCCESSFUL,
)
from clearnb.task import Task

if TYPE_CHECKING:
    from clearnb.logger import Logger
    from clearnb.store import Store, TaskRecord

log = logging.getLogger(__name__)

__all__ = ["PIPELINE_SECTION", "PipelineController"]


class PipelineController(DefinitionMethods, StoredMethods):
    """A pipeline of steps; ``add_step``/``add_function_step``, then ``start``/``wait``/``stop``."""

    Node = StepNode  # ClearML's name for a step of the DAG

    def __init__(
        self,
        name: str,
        project: str,
        version: str | None = None,
        pool_frequency: float = 0.2,
        add_pipeline_tags: bool = False,
        target_project: str | bool | None = True,
        auto_version_bump: bool | None = None,
        abort_on_failure: bool = False,
        add_run_number: bool = True,
        retry_on_failure: int | Callable[[Any, StepNode, int], bool] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        always_create_from_code: bool = True,
        artifact_serialization_function: Callable[[Any], bytes | bytearray] | None = None,
        artifact_deserialization_function: Callable[[bytes], Any] | None = None,
        output_uri: str | bool | None = None,
        skip_global_imports: bool = False,
        working_dir: str | None = None,
        enable_local_imports: bool = True,
        default_execution_queue: str | None = None,
        max_workers: int | None = None,
        config: Config | None = None,
        strict: bool = False,
        executor: Any = None,
    ) -> None:
        """Create the pipeline (its Task is created on first use). ``max_workers`` caps the
        steps run at once (default: the machine's cores). ``executor`` is where steps run:
        ``"local"``, ``"dask"``, ``"dask://HOST:PORT"``, a ``distributed.Client`` or a Dask
        cluster (default: ``CLEARNB_EXECUTOR``, else local). ``add_run_number`` names the
        Task ``name #N`` when N-1 runs of the pipeline are in the project; the
        ``artifact_*_function`` pair stores and reads function steps' values. Container,
        repository and the other arguments that do nothing here are recorded with every
        run's Task and named in one CompatibilityWarning. ``strict`` refuses an override of
        a parameter a step does not declare (by default it is set and warned about)."""
        given = {k: v for k, v in locals().items() if k != "self"}
        self.spec = PipelineSpec(
            name=name,
            project=project,
            version=version,
            abort_on_failure=abort_on_failure,
            default_execution_queue=default_execution_queue,
            strict=strict,
            serialization=Serialization(
                artifact_serialization_function, artifact_deserialization_function
            ),
        )
        if max_workers is not None:
            self.spec.max_workers = parse_count(max_workers, "max_workers", minimum=1)
        self.spec.executor = executor_choice(executor) or executor_from_env()
        self.add_pipeline_tags = add_pipeline_tags
        named = target_project if isinstance(target_project, str) and target_project else None
        self.target_project = project if target_project is True else named
        """The project of the steps' Tasks (True: the pipeline's; None or False: a
        template's own, else the pipeline's)."""
        self.retry_on_failure = OPTIONS_BY_NAME["retry_on_failure"].convert(retry_on_failure)
        self.config = config or Config.from_env()
        self.recorded: dict[str, Any] = {}
        """ClearML arguments that do nothing here, as recorded with every run's Task."""
        self._backend = Backend.for_config(self.config)
        self._broadcaster = Broadcaster()
        self._state = RunState(self.spec, self._broadcaster)
        self._state.pipeline = self
        self._recorder = RunRecorder(
            self._backend, project, name, ["pipeline"] if add_pipeline_tags else []
        )
        self._sources = Sources(self._backend.store, self.config.home / "functions")
        self._lock = threading.RLock()
        self._engine = RunEngine(
            self.spec,
            self._state,
            self._recorder,
            self._backend,
            self.config,
            self._sources,
            self._queue_of,
        )
        self._remote: RemoteRun | None = None
        self._steps_locally = False
        self._force_next = False
        """Set for a pipeline an agent took from a queue with ``force`` (re-run cached steps)."""
        self._widget: Any = None
        self._configurations = ConnectedConfigurations(self.config.home / "configuration")
        self._recorder.numbered = add_run_number
        unused = unused_pipeline_arguments(given)
        self.record_unused(unused)
        compat.warn_unused("PipelineController", unused, UNUSED_WHY)

    def record_unused(self, arguments: Mapping[str, Any]) -> None:
        """Record ClearML ``arguments`` that do nothing here with every run's Task (its
        runtime's ``unused_arguments``); the caller names them in a warning."""
        if arguments:
            self.recorded.update(arguments)
            self._recorder.keep_runtime(compat.UNUSED_KEY, self.recorded)

    @property
    def tags(self) -> list[str]:
        """The tags of the pipeline's Task."""
        return self.task.get_tags()

    def add_tags(self, tags: str | Sequence[str]) -> None:
        """Tag the pipeline's Task, and the Task of every later run."""
        added = [tags] if isinstance(tags, str) else list(tags)
        self._recorder.tags = list(dict.fromkeys([*self._recorder.tags, *added]))
        self.task.add_tags(added)

    def use_own_task(self) -> None:
        """Record runs in a Task of their own even inside a notebook clearnb runs (whose
        Task becomes the parent): several pipelines launched from one notebook."""
        self._recorder.own_task = True

    # -- the definition (the rest is DefinitionMethods') -------------------------------

    def add_step_spec(self, step: StepSpec) -> bool:
        """Add ``step`` (as ``add_step`` builds it); False if its name is taken."""
        with self._lock:
            if self.is_running():
                raise PipelineError(
                    f"cannot add step {step.name!r} while the pipeline runs; wait() for it first"
                )
            runs_here = step.queue is None and self.spec.default_execution_queue is None
            self._sources.check_template(step, runs_here=runs_here)
            added = self.spec.add(step)
            self._state.sync_definition()
            return added

    def add_live_step(self, step: StepSpec, earlier: TaskRecord | None = None) -> StepNode:
        """Add ``step`` to the running pipeline (the decorator's DAG grows as its function
        runs); ``earlier`` is a completed run of it to take instead of running it."""
        return self._engine.add_live_step(step, earlier)

    def check_step(self, name: str) -> list[str]:
        """The problems of step ``name`` (an empty list if it can run)."""
        return validate.check_step(self.spec, name, self._sources, self._queue_of)

    def replace_step(self, name: str, /, **step: Any) -> None:
        """Replace step ``name`` by a notebook step made of ``step`` (``add_step``'s
        keywords), keeping its place; refused, and nothing changed, if it has problems."""
        if self.is_running():
            raise PipelineError("cannot edit a step while the pipeline runs")
        new = build_step(NOTEBOOK, step)
        with self._lock:
            before = copy.deepcopy(self.spec.steps)
            self.spec.replace(name, new)
            problems = self.check_step(new.name)
            if problems:
                self.spec.steps = before
                raise PipelineError.collect(problems, "problem")
            self._state.sync_definition()

    def remove_step(self, name: str) -> None:
        """Remove a step (and it from its children's parents); not while running."""
        with self._lock:
            if self.is_running():
                raise PipelineError("cannot remove a step while the pipeline runs")
            self.spec.remove(name)
            self._state.sync_definition()

    def replace_definition(self, other: PipelineController) -> None:
        """Take the steps and parameters of ``other`` (a pipeline loaded from a file)."""
        if self.is_running():
            raise PipelineError("cannot load a pipeline while this one runs")
        with self._lock:
            self.spec.take(other.spec)
            self._recorder.project, self._recorder.name = self.spec.project, self.spec.name
            self._state.sync_definition()

    # -- facts ---------------------------------------------------------------------------

    def get_pipeline_dag(self) -> dict[str, StepNode]:
        """The steps by name (each a Node with its ``status`` and ``executed``)."""
        return dict(self._state.nodes)

    def get_processed_nodes(self) -> list[StepNode]:
        """Steps that finished (completed, cached, failed, aborted or skipped)."""
        return [n for n in self._state.nodes.values() if n.run.status in STEP_FINISHED]

    def get_running_nodes(self) -> list[StepNode]:
        """Steps running (or queued to run) now."""
        return [n for n in self._state.nodes.values() if n.run.status in (QUEUED, RUNNING)]

    def is_running(self) -> bool:
        """True while the run's thread works (or, sent to a queue, until its Task ends)."""
        if self._remote is not None:
            return self._remote.poll().status not in TASK_FINAL
        return self._engine.running

    def is_successful(self, fail_on_step_fail: bool = True, fail_condition: str = "all") -> bool:
        """True if the run ended well: ``fail_condition`` ``"all"`` counts a failed or an
        aborted run as a failure, ``"failed"`` only a failed one, ``"aborted"`` only an
        aborted one; ``fail_on_step_fail`` judges the steps that way too (a failure the
        pipeline allows, a skip or a cache hit never counts). False while it runs."""
        return outcome.successful(
            self.status, self._state.nodes.values(), fail_on_step_fail, fail_condition
        )

    @property
    def status(self) -> str:
        """``pending``, ``queued``, ``running``, ``completed``, ``failed`` or ``aborted``."""
        return self._state.status

    def elapsed(self) -> float:
        """Seconds since the run started (0 before)."""
        return self._engine.elapsed()

    @property
    def id(self) -> str:
        """Id of the pipeline's Task."""
        return self.task.id

    @property
    def task(self) -> Task:
        """The pipeline's own Task (created on first use)."""
        return self._recorder.ensure_task()

    @property
    def store(self) -> Store:
        """The metadata store the pipeline records its runs in."""
        return self._backend.store

    @property
    def engine(self) -> RunEngine:
        """What runs the pipeline here (the decorator's debug mode calls steps through it)."""
        return self._engine

    @property
    def kernels_started(self) -> bool:
        """True if the last run started kernels in this process (a fully cached run, or
        one whose steps all ran on agents, starts none)."""
        return self._engine.kernels_started

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard of the Dask cluster the last run's steps went to, if any."""
        return self._engine.dashboard_link

    @property
    def listeners(self) -> list[Listener]:
        """The listeners of the pipeline's events, in the order they were added."""
        return self._broadcaster.listeners

    def connect_configuration(
        self,
        configuration: Mapping[str, Any] | list[Any] | str | os.PathLike[str],
        name: str | None = None,
        description: str | None = None,
    ) -> Any:
        """Store a configuration object (a dict, a list, or a file's text) as ``name``
        (``General`` by default) with the pipeline's Task and every later run's.

        Returns ``configuration``; a Task that held an object of that name before (a draft
        edited, a pipeline taken from a queue) overrides it: a dict or list changes in
        place, a file comes back as the path of a copy of the stored text.
        """
        value = self._configurations.connect(
            self.task.reload().runtime, configuration, name, description
        )
        self._recorder.keep_runtime(CONFIGURATION_KEY, self._configurations.entries)
        return value

    def upload_artifact(
        self,
        name: str,
        artifact_object: Any,
        metadata: Mapping[str, Any] | None = None,
        delete_after_upload: bool = False,
        auto_pickle: bool = True,
        preview: Any = None,
        wait_on_upload: bool = False,
        serialization_function: Callable[[Any], bytes | bytearray] | None = None,
    ) -> bool:
        """Store an artifact with the pipeline's Task (as the bytes
        ``serialization_function`` makes, if given). With ``auto_pickle=False`` a value
        only pickle could store is refused, as in ClearML; the upload is always done when
        this returns (``wait_on_upload``)."""
        return self.task.upload_artifact(
            name,
            artifact_object,
            metadata=metadata,
            delete_after_upload=delete_after_upload,
            auto_pickle=auto_pickle,
            preview=preview,
            wait_on_upload=wait_on_upload,
            serialization_function=serialization_function,
        )

    def get_logger(self) -> Logger:
        """The logger of the pipeline's Task."""
        return self.task.get_logger()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` at every status or progress change of the run."""
        self._broadcaster.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._broadcaster.remove(listener)

    def state(self) -> dict[str, Any]:
        """The pipeline as JSON-able data (what is stored with its Task)."""
        return self._state.document()

    # -- validation ----------------------------------------------------------------------

    def validate(self) -> None:
        """Raise one :class:`PipelineError` listing every problem found before running."""
        validate.validate(self.spec, self._sources, self._queue_of)

    def _queue_of(self, step: StepSpec) -> str | None:
        """The queue a step is sent to, or ``None`` to run it here."""
        if self._steps_locally:
            return None
        return step.queue or self.spec.default_execution_queue

    # -- running -------------------------------------------------------------------------

    def start(
        self,
        queue: str | None = None,
        step_task_created_callback: Callable[..., Any] | None = None,
        step_task_completed_callback: Callable[..., Any] | None = None,
        wait: bool = False,
        force: bool = False,
        resume: bool | str = False,
        steps: Sequence[str] | None = None,
        *,
        accept_steps: bool = False,
        steps_locally: bool = False,
    ) -> bool:
        """Validate, then run the pipeline in a background thread (``wait``: until it ends).

        Outside IPython the process waits for the run before it exits (ClearML's script
        behaviour); Ctrl-C during that wait or :meth:`wait` aborts the run cleanly.

        ``queue`` sends the controller itself to that queue, for an agent serving it to run;
        :meth:`wait` then follows it. Steps go to their ``execution_queue`` (or the default)
        wherever the controller runs, unless ``steps_locally`` keeps them here.
        ``step_task_created_callback(pipeline, node, parameters)`` runs before every step
        (False skips it and what is below it), ``step_task_completed_callback(pipeline,
        node)`` after. ``force`` re-runs cached steps; ``resume`` (True: this pipeline's
        newest run, or a run's task id) keeps the steps that completed there; ``steps`` runs
        only these (cache ignored), the rest taken from the last run. ``accept_steps`` keeps
        the run open for :meth:`add_live_step` until :meth:`close_steps`.
        """
        if self.is_running():
            raise PipelineError("the pipeline is already running; wait() for it first")
        self._steps_locally = steps_locally
        self.validate()
        self._remote = None
        self._state.reset()
        if queue is not None:  # an agent serving the queue runs the controller
            callbacks = (step_task_created_callback, step_task_completed_callback)
            tags = ["pipeline"] if self.add_pipeline_tags else []
            self._recorder.runs += 1
            self._remote = RemoteRun.send(
                self._backend, self.spec, self._state, self._recorder, queue, force, callbacks, tags
            )
            if wait:
                self.wait()
            return True
        if steps is not None:
            unknown = [name for name in steps if name not in self.spec.steps]
            if unknown:
                raise PipelineError(f"no step named {', '.join(map(repr, unknown))}")
        self._recorder.start_run()
        engine = self._engine
        engine.begin()
        if steps is not None:
            engine.resume_from(resume or True, only=set(steps))
        elif resume:
            engine.resume_from(resume)
        engine.launch(
            name=self.name,
            target_project=self.target_project,
            force=force or self._force_next,
            retry_default=self.retry_on_failure,
            pre=step_task_created_callback,
            post=step_task_completed_callback,
            accept_steps=accept_steps,
            tag_steps=self.add_pipeline_tags,
            executor=self.spec.executor,  # steps_locally keeps steps from agents, not Dask
        )
        if wait:
            self.wait()
        return True

    def create_draft(self) -> None:
        """Store the pipeline as a draft controller Task (status ``created``) without
        running it: :meth:`enqueue` (or ``clearnb task enqueue ID --queue Q``) sends it to
        an agent later, and :meth:`get` opens it again. :attr:`id` is the draft's."""
        self.validate()
        tags = ["pipeline"] if self.add_pipeline_tags else []
        record = drafts.controller_record(
            self.spec, force=False, callbacks=(), tags=tags, runtime=self._recorder.runtime
        )
        self._recorder.store_draft(record)

    @classmethod
    def enqueue(
        cls,
        pipeline_controller: PipelineController | str,
        queue_name: str | None = None,
        queue_id: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Put a stored pipeline (an id, or a controller: made a draft first if it is not
        stored yet) in a queue; an agent serving it runs the controller. ``force`` sends
        again one that ended."""
        if isinstance(pipeline_controller, PipelineController):
            held = pipeline_controller.store.get_task(pipeline_controller.id)
            if drafts.definition_of(held) is None:
                pipeline_controller.create_draft()
            target: Task | str = pipeline_controller.task
        else:
            target = pipeline_controller
        return Task.enqueue(target, queue_name=queue_name, queue_id=queue_id, force=force)

    def abort(self, reason: str = "the pipeline was stopped") -> None:
        """Stop the run without waiting: no step starts any more, running ones are aborted,
        and the run ends ``aborted``. A run sent to a queue is asked to stop by its agent."""
        self._engine.abort(reason)
        if self._remote is not None:
            self._backend.store.request_abort(self._remote.task_id, reason)

    def close_steps(self) -> None:
        """No more steps will be added: the run ends once its steps have (the decorator's)."""
        if self._engine.scheduler is not None:
            self._engine.scheduler.accept_steps(False)

    def run_step(self, name: str, wait: bool = False) -> bool:
        """Run only step ``name`` again, its inputs taken from the last run."""
        return self.start(steps=[name], wait=wait)

    def run_from_step(self, name: str, wait: bool = False) -> bool:
        """Run step ``name`` and every step below it again; the rest comes from the last run."""
        if name not in self.spec.steps:
            raise PipelineError(f"no step named {name!r}")
        below = graph.descendants(self.spec.edges(), name)
        return self.start(steps=[name, *below], wait=wait)

    def retry_failed(self, wait: bool = False) -> bool:
        """Run again the steps of the last run that failed, were aborted or skipped."""
        return self.start(resume=True, wait=wait)

    def start_locally(self, run_pipeline_steps_locally: bool = False) -> None:
        """Run the pipeline logic here and wait for it.

        Steps go to their queues, unless ``run_pipeline_steps_locally`` keeps every step on
        this machine too (a pipeline whose executor is Dask still runs them there).
        """
        self.start(wait=True, steps_locally=run_pipeline_steps_locally)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (``timeout`` in minutes, as ClearML); True if it ended."""
        if self._remote is not None:
            seconds = None if timeout is None else timeout * 60
            return self._remote.follow(seconds).status in TASK_FINAL
        if self._engine.thread is None:
            return True
        ended = self._engine.join(None if timeout is None else timeout * 60)
        if ended:
            self._show_final_plot()
        return ended

    def stop(
        self, timeout: float | None = None, mark_failed: bool = False, mark_aborted: bool = False
    ) -> None:
        """Abort running steps (if any), wait for the run to end and release its kernels.

        ``timeout`` is in minutes, as ClearML's. Inside a notebook run by clearnb, a
        pipeline that did not succeed makes this raise, so the controller notebook's own
        run fails with the reason.
        """
        if self.is_running():
            self.abort("the pipeline was stopped")
            self.wait(timeout)
        if self._engine.cleanup is not None:
            self._engine.cleanup.join(None if timeout is None else timeout * 60)
        if self._engine.renderer is not None:  # the stored picture shows how the run ended
            self._engine.renderer.close()
        task = self._recorder.task
        if mark_failed and task is not None:
            task.mark_failed(status_reason="marked failed by stop()")
        elif mark_aborted and task is not None:
            task.mark_stopped(status_message="marked aborted by stop()")
        if self._recorder.attached and self.status in (FAILED, ABORTED):
            failed = [
                n.spec.name for n in self._state.nodes.values() if n.run.status in UNSUCCESSFUL
            ]
            raise PipelineError(
                f"pipeline {self.name!r} {self.status}: steps {', '.join(failed) or '-'} "
                f"did not complete; see `clearnb pipeline show {self.id}`",
                pipeline_id=self.id,
                steps=failed,
            )

    def update_execution_plot(self) -> None:
        """Store the run's state and redraw the stored DAG picture now, and tell the
        listeners (the widget redraws); a run on an agent is read from the store first."""
        if self._remote is not None:
            self._remote.poll()
            self._state.push(lambda document: None)  # the agent's controller stores it
            return
        self._engine.update_plot()

    def wait_for_picture(self, timeout: float = 30.0) -> bool:
        """Wait until the stored DAG picture shows the last change; True if it does."""
        renderer = self._engine.renderer
        return renderer is not None and renderer.wait(timeout)

    # -- resuming ------------------------------------------------------------------------

    def earlier_results(self, resume: bool | str) -> dict[str, TaskRecord]:
        """The completed steps' Tasks of an earlier run (newest, or ``resume`` as an id)."""
        return self._recorder.earlier_results(resume)

    # -- files and code ------------------------------------------------------------------

    def to_dict(self, portable: bool = False) -> dict[str, Any]:
        """The pipeline's definition as plain data (what :meth:`save` writes).

        ``portable`` also carries the source of function steps, so that another process
        (an agent) can run them without importing the module that defined them.
        """
        return serialize.to_dict(self.spec, portable=portable)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the pipeline's definition to a JSON file; :meth:`from_file` reads it back."""
        return serialize.save(self.spec, path)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> PipelineController:
        """A pipeline read from a file written by :meth:`save` (or by the widget's builder)."""
        return cls.from_definition(serialize.read_file(path), **options)

    @classmethod
    def from_definition(
        cls, data: Mapping[str, Any], task: str | None = None, **options: Any
    ) -> PipelineController:
        """A pipeline built from :meth:`to_dict` data; ``task`` adopts an existing
        controller Task (the one an agent took from a queue) instead of creating one."""
        pipe = cls(name=data["name"], project=data["project"], **options)
        loaded = serialize.from_dict(data, pipe.config.home / "functions")
        pipe.spec.take(loaded)
        pipe.spec.abort_on_failure = loaded.abort_on_failure
        pipe.spec.default_execution_queue = loaded.default_execution_queue
        pipe.spec.max_workers = loaded.max_workers
        pipe.spec.strict = loaded.strict
        pipe.spec.time_limit = loaded.time_limit
        pipe.spec.executor = loaded.executor or pipe.spec.executor
        pipe._state.sync()
        if task is not None:
            pipe._recorder.adopt(task)
            if data.get("force"):
                pipe._force_next = True
        return pipe

    def to_code(self) -> str:
        """Python code that builds this pipeline (to paste into a notebook)."""
        return serialize.to_code(self.spec)

    @classmethod
    def from_run(cls, task_id: str, config: Config | None = None) -> PipelineController:
        """A past run of a pipeline, opened by its task id (to view it, or to run it again).

        Notebook steps come back as steps that can run again; function steps only show.
        """
        backend = Backend.for_config(config or Config.from_env())
        spec, document, record = spec_of_run(backend.store, task_id)
        pipe = cls(name=spec.name, project=spec.project, version=spec.version, config=config)
        for key, value in record.parameters.get(PIPELINE_SECTION, {}).items():
            pipe.add_parameter(key, value)
        pipe.spec.steps = spec.steps
        pipe._state.sync()
        pipe._state.load(document)
        pipe._state.status = document.get("status", PENDING)
        pipe._recorder.adopt(record.id)
        pipe._recorder.runs = 1
        return pipe

    # -- views ---------------------------------------------------------------------------

    def widget(self) -> Any:
        """The controller widget (ipywidgets): run, watch and inspect the pipeline here."""
        if self._widget is None:
            from clearnb.plugins import view

            self._widget = view("widget")(self)
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any] | None:
        """The widget where widgets render, with the DAG picture for viewers that cannot."""
        return views.mimebundle(self, self._repr_png_(), include, exclude)

    def __repr__(self) -> str:
        return f"<PipelineController {self.project}/{self.name} [{self.status}]>"

    def _repr_png_(self) -> bytes | None:
        """The DAG as a PNG, so that ``pipe`` as a cell's last line shows it."""
        version = f" v{self.version}" if self.version else ""
        return views.png(self.state(), f"{self.project} / {self.name}{version} — {self.status}")

    def _show_final_plot(self) -> None:
        """In a notebook, display the DAG picture of the finished run."""
        task = self._recorder.task
        if task is not None:
            views.show_picture(task, self._engine.renderer)

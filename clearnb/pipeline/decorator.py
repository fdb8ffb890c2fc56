"""PipelineDecorator: pipelines from plain Python functions, as ClearML writes them.

``@PipelineDecorator.component`` marks a step; ``@PipelineDecorator.pipeline`` marks the
function whose calls of components make the DAG. Inside a running pipeline, calling a
component returns at once with a placeholder per return value (:class:`LazyValue`);
components whose inputs are ready run at the same time; using a value (printing it,
arithmetic, ``if``) waits for it; passing a placeholder to another component makes that
component a child without waiting. Underneath is the same
:class:`~clearnb.pipeline.controller.PipelineController`: every component is a function
step run as a generated notebook (``run_locally()``, the default), or, after
``debug_pipeline()``, a plain call in this process.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from clearnb import compat
from clearnb.errors import PipelineError
from clearnb.execution.limits import parse_memory_limit, parse_seconds
from clearnb.executors.choice import executor_choice
from clearnb.pipeline.controller import PipelineController
from clearnb.pipeline.functions import COMPONENT_MARKER, innermost
from clearnb.pipeline.lazy import LazyValue, plain_value, resolved
from clearnb.pipeline.multi import LaunchedPipelines
from clearnb.pipeline.spec import (
    FUNCTION,
    UNUSED_WHY,
    StepSpec,
    build_step,
    component_options,
    unused_pipeline_arguments,
    unused_step_options,
)
from clearnb.status import CACHED, COMPLETED
from clearnb.status import STEP_FINISHED as FINISHED

if TYPE_CHECKING:
    from clearnb.logger import Logger

F = TypeVar("F", bound=Callable[..., Any])

QUEUES = "queues"
"""Components with an execution queue go to it (agents run them); the rest run here."""
LOCAL = "local"
DEBUG = "debug"
DEFAULT_SECTION = "Args"


@dataclass(frozen=True)
class DecoratorSettings:
    """How decorated pipelines run in this process, set whole by each mode call."""

    mode: str = QUEUES
    """``queues`` (components with a queue go to it), ``local`` or ``debug``."""
    force: bool = False
    resume: bool | str = False
    default_queue: str | None = None


_ACTIVE = threading.local()
"""The decorated pipeline running in each thread (set for the duration of its function)."""


@dataclass
class ComponentSpec:
    """What ``@PipelineDecorator.component(...)`` said about one function."""

    function: Callable[..., Any]
    return_values: list[str]
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    """The component's keywords as given (``cache``, ``execution_queue``, ...)."""

    def step(self, name: str, function_kwargs: Mapping[str, Any]) -> StepSpec:
        """The function step one call of the component makes."""
        declared = component_options()
        arguments = {
            declared[key].name: value
            for key, value in self.options.items()
            if key in declared and value is not None
        }
        arguments.update(
            name=name,
            function=self.function,
            function_kwargs=dict(function_kwargs),
            function_return=list(self.return_values),
        )
        return build_step(FUNCTION, arguments)


class _PipelineRun:
    """One run of a decorated pipeline function: its controller and its values."""

    def __init__(self, controller: PipelineController, mode: str) -> None:
        self.controller = controller
        self.mode = mode
        self.changed = threading.Condition()
        self.values: dict[tuple[str, str], Any] = {}
        self.counts: dict[str, int] = {}
        self.earlier: dict[str, Any] = {}
        """Completed steps of the run being resumed, by name."""
        controller.add_listener(self._notify)

    def _notify(self, event: Any) -> None:
        with self.changed:
            self.changed.notify_all()

    def step_name(self, base: str) -> str:
        count = self.counts.get(base, 0)
        self.counts[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def call(self, spec: ComponentSpec, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        name = self.step_name(spec.name)
        bound = inspect.signature(innermost(spec.function)).bind_partial(*args, **kwargs)
        arguments = dict(bound.arguments)
        if self.mode == DEBUG:
            return self._call_now(spec, name, arguments)
        function_kwargs = {
            key: value.reference if isinstance(value, LazyValue) else resolved(value)
            for key, value in arguments.items()
        }
        step = spec.step(name, function_kwargs)
        if step.queue is None:
            step.queue = self.controller.default_execution_queue
        self.controller.add_live_step(step, earlier=self.earlier.get(name))
        return self._placeholders(name, spec.return_values)

    def _placeholders(self, step: str, names: Sequence[str]) -> Any:
        if not names:
            return LazyValue(self, step, "")
        values = tuple(LazyValue(self, step, name) for name in names)
        return values[0] if len(values) == 1 else values

    def _call_now(self, spec: ComponentSpec, name: str, arguments: dict[str, Any]) -> Any:
        """Debug mode: run the function here, now, recording it as a step of the run."""
        small = {k: v for k, v in arguments.items() if _is_small(v)}
        step = StepSpec(
            name=name,
            function=spec.function,
            function_kwargs=small,
            function_return=list(spec.return_values),
        )
        values = {k: plain_value(v) for k, v in arguments.items()}
        try:
            result = self.controller.engine.call_step(step, lambda: spec.function(**values))
        except Exception:
            if not spec.options.get("continue_on_fail"):
                raise
            return self._placeholders_of(spec, None)
        return self._placeholders_of(spec, result)

    @staticmethod
    def _placeholders_of(spec: ComponentSpec, result: Any) -> Any:
        if len(spec.return_values) > 1 and isinstance(result, tuple | list):
            return tuple(result)
        return result

    def value(self, step: str, name: str) -> Any:
        """The value ``name`` returned by ``step`` (waits until the step has run)."""
        key = (step, name)
        if key in self.values:
            return self.values[key]
        node = self.controller.get_pipeline_dag()[step]
        with self.changed:
            while node.status not in FINISHED:
                self.changed.wait(timeout=0.5)
        if node.status not in (COMPLETED, CACHED):
            if node.continue_on_fail:
                return None
            reason = (node.error or {}).get("reason", node.status)
            raise PipelineError(
                f"the value {name or 'returned'!r} of step {step!r} is not available: the step "
                f"{node.status} (task {node.executed or '-'}): {reason}",
                step=step,
                task_id=node.executed,
            )
        if not name:
            value = None
        else:
            from clearnb.task import Task

            artifact = Task.get_task(task_id=node.executed).artifacts[name]
            deserialize = self.controller.spec.serialization.deserialize
            value = artifact.get(deserialization_function=deserialize)
        self.values[key] = value
        return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _is_small(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class PipelineDecorator:
    """Decorators that turn functions into a pipeline (ClearML's ``PipelineDecorator``)."""

    settings: ClassVar[DecoratorSettings] = DecoratorSettings()
    """How decorated pipelines run in this process (ClearML's mode is process-wide too);
    each of :meth:`run_locally`, :meth:`debug_pipeline` and
    :meth:`set_default_execution_queue` replaces it whole, so no earlier choice lingers."""
    launched: ClassVar[LaunchedPipelines] = LaunchedPipelines()
    """The pipelines launched in the background (``multi_instance_support="parallel"``)
    until :meth:`wait_for_multi_pipelines` waits for them (and forgets them)."""

    @classmethod
    def component(
        cls,
        _func: F | None = None,
        *,
        return_values: str | Sequence[str] | None = ("return_object",),
        name: str | None = None,
        cache: bool = False,
        packages: str | Sequence[str] | None = None,
        parents: Sequence[str] | None = None,
        execution_queue: str | None = None,
        continue_on_fail: bool = False,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        task_type: str | None = None,
        auto_connect_frameworks: Any = None,
        auto_connect_arg_parser: Any = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        helper_functions: Sequence[Callable[..., Any]] | None = None,
        monitor_metrics: list[Any] | None = None,
        monitor_artifacts: list[Any] | None = None,
        monitor_models: list[Any] | None = None,
        retry_on_failure: int | Callable[..., bool] | None = None,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        status_change_callback: Callable[..., Any] | None = None,
        tags: str | Sequence[str] | None = None,
        output_uri: str | bool | None = None,
        draft: bool = False,
        working_dir: str | None = None,
        continue_behaviour: Mapping[str, bool] | None = None,
        time_limit: float | None = None,
        memory_limit: float | str | None = None,
    ) -> Any:
        """Mark a function as a pipeline step. Outside a pipeline it is a plain function.

        ``docker``, ``repo`` and the other arguments that do nothing here are recorded
        with the step and named in one CompatibilityWarning. ``time_limit`` (seconds) and
        ``memory_limit`` (bytes, or a size like ``"2GB"``) bound each run of the step, as
        in ``add_step``.
        """
        returns = [return_values] if isinstance(return_values, str) else list(return_values or [])
        declared = component_options()
        options = {
            key: value
            for key, value in locals().items()
            if key in declared and key != "return_values"
        }
        options["memory_limit"] = parse_memory_limit(memory_limit)
        options["time_limit"] = parse_seconds(time_limit)
        given = {declared[key].name: value for key, value in options.items()}
        compat.warn_unused(
            "PipelineDecorator.component", unused_step_options(FUNCTION, given), UNUSED_WHY
        )

        def decorate(function: F) -> F:
            spec = ComponentSpec(function, returns, name or innermost(function).__name__, options)

            @functools.wraps(function)
            def component_call(*args: Any, **kwargs: Any) -> Any:
                run: _PipelineRun | None = getattr(_ACTIVE, "run", None)
                if run is None:
                    return function(*args, **kwargs)
                return run.call(spec, args, kwargs)

            setattr(component_call, COMPONENT_MARKER, spec)
            return component_call  # type: ignore[return-value]

        return decorate(_func) if _func is not None else decorate

    @classmethod
    def pipeline(
        cls,
        _func: F | None = None,
        *,
        name: str,
        project: str,
        version: str | None = None,
        return_value: str | None = None,
        default_queue: str | None = None,
        pool_frequency: float = 0.2,
        add_pipeline_tags: bool = False,
        target_project: str | None = None,
        abort_on_failure: bool = False,
        pipeline_execution_queue: str | None = "services",
        multi_instance_support: bool | str = False,
        add_run_number: bool = True,
        args_map: Mapping[str, Sequence[str]] | None = None,
        start_controller_locally: bool = False,
        retry_on_failure: int | Callable[..., bool] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        artifact_serialization_function: Callable[[Any], bytes | bytearray] | None = None,
        artifact_deserialization_function: Callable[[bytes], Any] | None = None,
        output_uri: str | bool | None = None,
        skip_global_imports: bool = False,
        working_dir: str | None = None,
        enable_local_imports: bool = True,
        auto_version_bump: bool | None = None,
        max_workers: int | None = None,
        executor: Any = None,
    ) -> Any:
        """Mark the function whose component calls make the pipeline.

        Calling it runs the pipeline (mode set by :meth:`run_locally` or
        :meth:`debug_pipeline`) and returns the function's result. Its arguments are the
        pipeline's parameters, stored by section as ``args_map`` says (``Args`` otherwise).
        With ``multi_instance_support`` each call runs on a thread of its own, in a Task of
        its own: ``True`` returns its result (None if it failed), ``"parallel"`` returns
        None at once and :meth:`wait_for_multi_pipelines` gives the results. Arguments
        that do nothing here (``docker``, ``repo``, ...) are recorded with every run's Task
        and named in one CompatibilityWarning. ``executor`` is where the components run, as
        for :class:`PipelineController` (``"dask://HOST:PORT"``, a Dask client, ...).
        """
        sections = {arg: section for section, args in (args_map or {}).items() for arg in args}
        chosen = executor_choice(executor)  # a bad value is refused here, not at the call
        unused = unused_pipeline_arguments(locals())
        if not start_controller_locally:  # the controller always runs here
            unused.update(
                compat.unused_arguments(
                    {"pipeline_execution_queue": pipeline_execution_queue},
                    {"pipeline_execution_queue": "services"},
                )
            )
        compat.warn_unused("PipelineDecorator.pipeline", unused, UNUSED_WHY)

        def decorate(function: F) -> F:
            def run_pipeline(
                settings: DecoratorSettings, own_task: bool, *args: Any, **kwargs: Any
            ) -> Any:
                controller = PipelineController(
                    name=name,
                    project=project,
                    version=version,
                    add_pipeline_tags=add_pipeline_tags,
                    target_project=target_project or True,
                    abort_on_failure=abort_on_failure,
                    add_run_number=add_run_number,
                    retry_on_failure=retry_on_failure,
                    artifact_serialization_function=artifact_serialization_function,
                    artifact_deserialization_function=artifact_deserialization_function,
                    default_execution_queue=default_queue or settings.default_queue,
                    max_workers=max_workers,
                    executor=chosen,
                )
                controller.record_unused(unused)
                if own_task:
                    controller.use_own_task()
                bound = inspect.signature(function).bind(*args, **kwargs)
                bound.apply_defaults()
                for key, value in bound.arguments.items():
                    controller.add_parameter(key, value, section=sections.get(key, DEFAULT_SECTION))
                return cls._run(controller, function, bound, return_value, settings)

            @functools.wraps(function)
            def pipeline_call(*args: Any, **kwargs: Any) -> Any:
                settings = cls.settings
                if not multi_instance_support or settings.mode == DEBUG:
                    return run_pipeline(settings, False, *args, **kwargs)
                call = functools.partial(run_pipeline, settings, True, *args, **kwargs)
                if multi_instance_support == "parallel":
                    cls.launched.launch(name, call)
                    return None
                return cls.launched.run(name, call)

            return pipeline_call  # type: ignore[return-value]

        return decorate(_func) if _func is not None else decorate

    @classmethod
    def wait_for_multi_pipelines(cls) -> list[Any]:
        """Wait for every pipeline launched with ``multi_instance_support="parallel"`` so
        far; their results in launch order (as in ClearML, a failed one has none: it is
        named in a warning)."""
        return cls.launched.wait()

    @classmethod
    def _run(
        cls,
        controller: PipelineController,
        function: Callable[..., Any],
        bound: inspect.BoundArguments,
        return_value: str | None,
        settings: DecoratorSettings,
    ) -> Any:
        run = _PipelineRun(controller, settings.mode)
        previous = getattr(_ACTIVE, "run", None)
        _ACTIVE.run = run
        _ACTIVE.controller = controller
        try:
            if settings.mode == DEBUG:
                with controller.engine.running_here():
                    result = function(*bound.args, **bound.kwargs)
                    if return_value:
                        cls._store_result(controller, return_value, result)
                return result
            if settings.resume:
                run.earlier = controller.earlier_results(settings.resume)
            controller.start(
                force=settings.force, accept_steps=True, steps_locally=settings.mode == LOCAL
            )
            try:
                result = plain_value(function(*bound.args, **bound.kwargs))
            finally:
                controller.close_steps()
                controller.wait()
            if return_value:
                cls._store_result(controller, return_value, result)
            return result
        finally:
            _ACTIVE.run = previous
            if previous is None:
                _ACTIVE.controller = None

    @staticmethod
    def _store_result(controller: PipelineController, name: str, result: Any) -> None:
        """Store the pipeline function's result with the pipeline's Task (as its own
        serialization function makes it, if it has one: ClearML stores it so)."""
        serialize = controller.spec.serialization.serialize
        controller.upload_artifact(name, result, serialization_function=serialize)

    @classmethod
    def run_locally(cls, force: bool = False, resume: bool | str = False) -> None:
        """Run every component as its own Task on this machine (a notebook in a kernel).

        ``force`` runs cached components again; ``resume`` (True: the newest run of the
        pipeline, or a pipeline task id) takes the components that completed there.
        """
        cls.settings = dataclasses.replace(cls.settings, mode=LOCAL, force=force, resume=resume)

    @classmethod
    def debug_pipeline(cls) -> None:
        """Run components as plain function calls in this process (for a debugger)."""
        cls.settings = dataclasses.replace(cls.settings, mode=DEBUG, force=False, resume=False)

    @classmethod
    def set_default_execution_queue(cls, default_execution_queue: str | None) -> None:
        """Queue for components that name none; agents serving it run them
        (``clearnb agent --queue NAME``), unless :meth:`run_locally` keeps them here."""
        cls.settings = dataclasses.replace(cls.settings, default_queue=default_execution_queue)

    @classmethod
    def get_current_pipeline(cls) -> PipelineController | None:
        """The controller of the pipeline running in this thread, if any."""
        return getattr(_ACTIVE, "controller", None)

    @classmethod
    def _require_pipeline(cls) -> PipelineController:
        controller = cls.get_current_pipeline()
        if controller is None:
            raise PipelineError(
                "no pipeline is running here; call this inside a @PipelineDecorator.pipeline "
                "function"
            )
        return controller

    @classmethod
    def upload_artifact(
        cls,
        name: str,
        artifact_object: Any,
        metadata: Mapping[str, Any] | None = None,
        delete_after_upload: bool = False,
        auto_pickle: bool = True,
        preview: Any = None,
        wait_on_upload: bool = False,
        serialization_function: Callable[[Any], bytes | bytearray] | None = None,
    ) -> bool:
        """Store an artifact with the running pipeline's Task."""
        return cls._require_pipeline().upload_artifact(
            name,
            artifact_object,
            metadata=metadata,
            delete_after_upload=delete_after_upload,
            auto_pickle=auto_pickle,
            preview=preview,
            wait_on_upload=wait_on_upload,
            serialization_function=serialization_function,
        )

    @classmethod
    def upload_model(cls, model_name: str, model_local_path: str) -> bool:
        """Store a model file (or folder) with the running pipeline's Task."""
        return cls._require_pipeline().upload_artifact(model_name, model_local_path)

    @classmethod
    def get_logger(cls) -> Logger:
        """The logger of the running pipeline's Task."""
        return cls._require_pipeline().get_logger()

"""ClearML's definition API of a pipeline: its parameters and steps, over the definition.

:class:`DefinitionMethods` holds what ``PipelineController`` offers to define a pipeline
(``add_parameter``, ``add_step``, ``add_function_step``, its default queue and time limit),
each a thin layer over :class:`~clearnb.pipeline.spec.PipelineSpec`. The controller adds
the run; the step options themselves are declared once in :mod:`clearnb.pipeline.spec`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clearnb import compat
from clearnb.execution.limits import parse_seconds
from clearnb.pipeline.node import Node as StepNode
from clearnb.pipeline.spec import (
    FUNCTION,
    NOTEBOOK,
    PIPELINE_SECTION,
    UNUSED_WHY,
    PipelineSpec,
    StepSpec,
    build_step,
    unused_step_options,
)


class DefinitionMethods:
    """The definition half of ``PipelineController``: parameters, steps, options."""

    spec: PipelineSpec

    def add_step_spec(self, step: StepSpec) -> bool:
        """Add ``step`` (as ``add_step`` builds it); False if its name is taken."""
        raise NotImplementedError

    def record_unused(self, arguments: Mapping[str, Any]) -> None:
        """Record ClearML ``arguments`` that do nothing here with every run's Task."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self.spec.name

    @property
    def project(self) -> str:
        """The pipeline's project."""
        return self.spec.project

    @property
    def version(self) -> str | None:
        """The pipeline's version."""
        return self.spec.version

    @property
    def abort_on_failure(self) -> bool:
        """True if a failed step (that does not continue) aborts the whole run."""
        return self.spec.abort_on_failure

    @property
    def default_execution_queue(self) -> str | None:
        """The queue of steps that name none."""
        return self.spec.default_execution_queue

    @property
    def max_workers(self) -> int:
        """At most this many steps run at once."""
        return self.spec.max_workers

    def add_parameter(
        self,
        name: str,
        default: Any = None,
        description: str | None = None,
        param_type: str | None = None,
        section: str | None = None,
    ) -> None:
        """Add a pipeline argument, referenced in steps as ``${pipeline.<name>}``; its value
        is stored in ``section`` of the pipeline Task's parameters (``Args`` by default).
        ``param_type`` is recorded (and named in a CompatibilityWarning): a value keeps
        its own type here."""
        self.spec.add_parameter(name, default, description)
        if section and section != PIPELINE_SECTION:
            self.spec.sections[name] = section
        if param_type is not None:
            self.record_unused({f"param_type:{name}": compat.recordable(param_type)})
            compat.warn_unused(
                "add_parameter",
                {"param_type": param_type},
                "a pipeline argument keeps the type of its value (stored as JSON)",
            )

    def get_parameters(self) -> dict[str, Any]:
        """The pipeline's arguments and their values."""
        return dict(self.spec.parameters)

    def set_default_execution_queue(self, default_execution_queue: str | None) -> None:
        """Queue for steps that name none; agents serving it run them."""
        self.spec.default_execution_queue = default_execution_queue

    def set_pipeline_execution_time_limit(self, max_execution_minutes: float | None) -> None:
        """Stop the run once it has taken ``max_execution_minutes`` (None or 0: no limit):
        its running steps are aborted with that reason, the rest skipped, and it fails."""
        minutes = parse_seconds(max_execution_minutes or None, "max_execution_minutes", "minutes")
        self.spec.time_limit = minutes * 60.0 if minutes else None

    def add_step(
        self,
        name: str,
        base_task_id: str | None = None,
        parents: Sequence[str] | None = None,
        parameter_override: Mapping[str, Any] | None = None,
        configuration_overrides: Mapping[str, Any] | None = None,
        task_overrides: Mapping[str, Any] | None = None,
        execution_queue: str | None = None,
        monitor_metrics: list[Any] | None = None,
        monitor_artifacts: list[Any] | None = None,
        monitor_models: list[Any] | None = None,
        time_limit: float | None = None,
        base_task_project: str | None = None,
        base_task_name: str | None = None,
        clone_base_task: bool = True,
        continue_on_fail: bool = False,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        cache_executed_step: bool = False,
        base_task_factory: Callable[[StepNode], Any] | None = None,
        retry_on_failure: int | Callable[[Any, StepNode, int], bool] | None = None,
        status_change_callback: Callable[..., Any] | None = None,
        recursively_parse_parameters: bool = False,
        output_uri: str | bool | None = None,
        continue_behaviour: Mapping[str, bool] | None = None,
        notebook: str | os.PathLike[str] | None = None,
        memory_limit: float | str | None = None,
    ) -> bool:
        """Add a notebook step: from a template (``base_task_id``, or ``base_task_project``
        + ``base_task_name``) or straight from a file (``notebook=``).

        ``parameter_override`` maps ``"Section/name"`` to values, which may reference
        other steps (``${stage_data.artifacts.dataset.url}``); a referenced step becomes a
        parent. ``time_limit`` is in seconds; ``memory_limit`` (bytes, or a size like
        ``"500MB"``) bounds what the step's kernel and its processes hold together (over it,
        the attempt fails). ``base_task_factory(node)`` returns the template Task when the
        step is to run; ``configuration_overrides`` become the configuration objects of the
        step's Task. Options that do nothing here (``task_overrides``, ``clone_base_task``,
        ...) are recorded and named in one CompatibilityWarning. Problems are reported by
        :meth:`start`, all together.
        """
        given = {k: v for k, v in locals().items() if k != "self"}
        step = build_step(NOTEBOOK, given)
        compat.warn_unused("add_step", unused_step_options(NOTEBOOK, given), UNUSED_WHY)
        return self.add_step_spec(step)

    def add_function_step(
        self,
        name: str,
        function: Callable[..., Any],
        function_kwargs: Mapping[str, Any] | None = None,
        function_return: Sequence[str] | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: str | None = None,
        auto_connect_frameworks: Any = None,
        auto_connect_arg_parser: Any = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        helper_functions: Sequence[Callable[..., Any]] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        parents: Sequence[str] | None = None,
        execution_queue: str | None = None,
        monitor_metrics: list[Any] | None = None,
        monitor_artifacts: list[Any] | None = None,
        monitor_models: list[Any] | None = None,
        time_limit: float | None = None,
        continue_on_fail: bool = False,
        pre_execute_callback: Callable[..., Any] | None = None,
        post_execute_callback: Callable[..., Any] | None = None,
        cache_executed_step: bool = False,
        retry_on_failure: int | Callable[[Any, StepNode, int], bool] | None = None,
        status_change_callback: Callable[..., Any] | None = None,
        tags: str | Sequence[str] | None = None,
        output_uri: str | bool | None = None,
        draft: bool = False,
        working_dir: str | None = None,
        continue_behaviour: Mapping[str, bool] | None = None,
        memory_limit: float | str | None = None,
    ) -> bool:
        """Add a Python function as a step; it runs as a generated notebook.

        ``function_kwargs`` values may be literals or references
        (``"${step_one.data_frame}"`` passes that step's return value); the return
        value(s) are stored as artifacts named by ``function_return`` (as the bytes of the
        pipeline's ``artifact_serialization_function``, if it has one). ``time_limit`` and
        ``memory_limit`` are those of :meth:`add_step`; options that do nothing here
        (``docker``, ``repo``, ``task_type``, ...) are recorded and named in one
        CompatibilityWarning.
        """
        given = {k: v for k, v in locals().items() if k != "self"}
        step = build_step(FUNCTION, given)
        compat.warn_unused("add_function_step", unused_step_options(FUNCTION, given), UNUSED_WHY)
        return self.add_step_spec(step)

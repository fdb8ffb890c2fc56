"""PipelineController: a DAG of notebook (and function) steps, run as ClearML runs it.

Names and arguments follow ClearML's ``PipelineController`` so that a ClearML pipeline
script runs with its imports changed. The run goes on in a background thread; each step
is a Task run by a :class:`~clearnb.execution.runner.NotebookRunner` whose kernels are
started while the step's parents still run. The pipeline itself is a Task (type
``controller``): its parameters, the DAG with every step's status, its artifacts, and a
picture of the DAG stored as the artifact ``pipeline_dag``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearnb.artifacts.storage import validate_artifact_name
from clearnb.backend import Backend
from clearnb.config import TASK_ID_ENV, Config
from clearnb.errors import (
    ArtifactNotFoundError,
    ClearnbError,
    MissingDependencyError,
    PipelineError,
    TaskNotFoundError,
)
from clearnb.execution import events as run_events
from clearnb.execution.events import RunEvent
from clearnb.execution.limits import parse_memory_limit
from clearnb.execution.notebooks import check_kernel, code_fingerprint, load_notebook
from clearnb.execution.parameters import GENERAL, NotebookParameters, split_key
from clearnb.execution.runner import NotebookRunner, RunHandle
from clearnb.pipeline import cache, functions, graph, references
from clearnb.pipeline.events import (
    PIPELINE_STATUS,
    STEP_PROGRESS,
    STEP_STATUS,
    Listener,
    PipelineEvent,
)
from clearnb.pipeline.graph import Node, StepJob
from clearnb.pipeline.picture import DAG_ARTIFACT, PictureRenderer
from clearnb.pipeline.references import Reference
from clearnb.status import (
    ABORTED,
    CACHED,
    COMPLETED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
)
from clearnb.status import STEP_FINISHED as FINISHED
from clearnb.store import pipelines
from clearnb.store.queues import CONTROLLER_WORKER_PREFIX
from clearnb.store.records import FINAL_STATUSES as FINAL_TASK_STATUSES
from clearnb.store.records import TaskRecord
from clearnb.task import Task

if TYPE_CHECKING:
    from clearnb.logger import Logger

log = logging.getLogger(__name__)

PIPELINE_SECTION = "Args"
"""Section of the pipeline Task's parameters that holds the pipeline arguments."""
PLOT_INTERVAL = 1.0
"""Least seconds between two redraws of the stored DAG picture during a run."""
FIRST_PICTURE_AFTER = 3.0
"""Runs shorter than this get only their final picture."""
PROGRESS_INTERVAL = 0.5
"""Seconds between two writes of step progress to the store (status changes: at once)."""
CONTROLLER_LEASE = 60.0
"""Seconds a running controller's lease on its Task lasts without renewal: a controller
killed on any machine is seen as gone once it expires."""
CONTROLLER_RENEW = 2.0
"""Seconds between two renewals of the controller's lease (and looks for an abort request)."""


class PipelineController:
    """A pipeline of steps; ``add_step``/``add_function_step``, then ``start``/``wait``/``stop``."""

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
        retry_on_failure: int | Callable[[Any, Node, int], bool] | None = None,
        docker: str | None = None,
        docker_args: str | None = None,
        docker_bash_setup_script: str | None = None,
        packages: str | Sequence[str] | None = None,
        repo: str | None = None,
        repo_branch: str | None = None,
        repo_commit: str | None = None,
        always_create_from_code: bool = True,
        artifact_serialization_function: Callable[[Any], bytes] | None = None,
        artifact_deserialization_function: Callable[[bytes], Any] | None = None,
        output_uri: str | bool | None = None,
        skip_global_imports: bool = False,
        working_dir: str | None = None,
        enable_local_imports: bool = True,
        default_execution_queue: str | None = None,
        max_workers: int | None = None,
        config: Config | None = None,
    ) -> None:
        """Create the pipeline (and its Task). ``max_workers`` caps the steps run at once
        (default: the machine's cores); container and repository arguments are recorded
        for queued execution."""
        self.name = name
        self.project = project
        self.version = version
        self.abort_on_failure = abort_on_failure
        self.add_pipeline_tags = add_pipeline_tags
        if isinstance(target_project, str) and target_project:
            self.target_project = target_project
        else:
            self.target_project = project
        self.retry_on_failure = retry_on_failure
        self.default_execution_queue = default_execution_queue
        self.max_workers = max(1, max_workers or os.cpu_count() or 1)
        self.config = config or Config.from_env()
        self.recorded = {
            "docker": docker,
            "docker_args": docker_args,
            "docker_bash_setup_script": docker_bash_setup_script,
            "packages": list(packages) if isinstance(packages, list | tuple) else packages,
            "repo": repo,
            "repo_branch": repo_branch,
            "repo_commit": repo_commit,
            "working_dir": working_dir,
            "output_uri": output_uri,
        }
        self._backend = Backend.for_config(self.config)
        self._nodes: dict[str, Node] = {}
        self._duplicates: list[str] = []
        self._parameters: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop_requested: str | None = None
        self._handles: dict[str, RunHandle] = {}
        self._status = PENDING
        self._started: float | None = None
        self._ended: float | None = None
        self._last_progress_write = 0.0
        self._force = False
        self._attached = False
        self._task: Task | None = None
        self._pre_callback: Callable[..., Any] | None = None
        self._post_callback: Callable[..., Any] | None = None
        self._plot_wanted = threading.Event()
        self._running = False
        self._user_stopped = False
        self._runner: NotebookRunner | None = None
        self._renderer: PictureRenderer | None = None
        self._wake: queue.Queue[str] = queue.Queue()
        self._runs = 0
        self._widget: Any = None
        self._run_over = threading.Event()
        self._cleanup: threading.Thread | None = None
        self._accepting = False
        """True while steps may still be added to the running pipeline (the decorator's)."""
        self._sections: dict[str, str] = {}
        """Section of each pipeline parameter other than ``Args`` (the decorator's args_map)."""
        self._steps_locally = False
        """True while ``start_locally(run_pipeline_steps_locally=True)`` ignores step queues."""
        self._remote = False
        """True when the last run was sent to a queue (``start(queue=...)``)."""
        self._lease_holder: str | None = None
        """Who holds the lease on the pipeline's Task for this run ("" if not this run)."""
        self._lease_due = 0.0
        self._controller: dict[str, Any] | None = None
        """The process running the current run (host, pid), stored with its state."""

    # -- building ----------------------------------------------------------------------------

    def add_parameter(
        self,
        name: str,
        default: Any = None,
        description: str | None = None,
        param_type: str | None = None,
    ) -> None:
        """Add a pipeline argument, referenced in steps as ``${pipeline.<name>}``."""
        self._parameters[name] = default
        if description:
            self._descriptions[name] = description

    def get_parameters(self) -> dict[str, Any]:
        """The pipeline's arguments and their values."""
        return dict(self._parameters)

    def set_default_execution_queue(self, default_execution_queue: str | None) -> None:
        """Queue for steps that name none (recorded; steps run on this machine)."""
        self.default_execution_queue = default_execution_queue

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
        base_task_factory: Callable[[Node], Any] | None = None,
        retry_on_failure: int | Callable[[Any, Node, int], bool] | None = None,
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
        the attempt fails). Problems are reported by :meth:`start`, all together.
        """
        node = Node(
            name=name,
            parents=list(parents or []),
            base_task_id=base_task_id,
            base_task_project=base_task_project,
            base_task_name=base_task_name,
            notebook=str(Path(notebook).expanduser().absolute()) if notebook else None,
            parameters=dict(parameter_override or {}),
            queue=execution_queue,
            timeout=time_limit,
            memory_limit=parse_memory_limit(memory_limit),
            cache_executed_step=cache_executed_step,
            retry_on_failure=retry_on_failure,
            pre_execute_callback=pre_execute_callback,
            post_execute_callback=post_execute_callback,
            status_change_callback=status_change_callback,
            monitor_metrics=list(monitor_metrics or []),
            monitor_artifacts=list(monitor_artifacts or []),
            monitor_models=list(monitor_models or []),
            recorded={
                "configuration_overrides": dict(configuration_overrides or {}),
                "task_overrides": dict(task_overrides or {}),
                "clone_base_task": clone_base_task,
                "base_task_factory": bool(base_task_factory),
                "output_uri": output_uri,
                "recursively_parse_parameters": recursively_parse_parameters,
            },
        )
        self._apply_continue(node, continue_on_fail, continue_behaviour)
        return self._add(node)

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
        retry_on_failure: int | Callable[[Any, Node, int], bool] | None = None,
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
        value(s) are stored as artifacts named by ``function_return``. ``time_limit`` and
        ``memory_limit`` are those of :meth:`add_step`.
        """
        node = Node(
            name=name,
            parents=list(parents or []),
            function=function,
            function_kwargs=dict(function_kwargs or {}),
            function_return=list(function_return or []),
            helper_functions=list(helper_functions or []),
            queue=execution_queue,
            timeout=time_limit,
            memory_limit=parse_memory_limit(memory_limit),
            cache_executed_step=cache_executed_step,
            retry_on_failure=retry_on_failure,
            pre_execute_callback=pre_execute_callback,
            post_execute_callback=post_execute_callback,
            status_change_callback=status_change_callback,
            monitor_metrics=list(monitor_metrics or []),
            monitor_artifacts=list(monitor_artifacts or []),
            monitor_models=list(monitor_models or []),
            task_type=task_type,
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            packages=[packages] if isinstance(packages, str) else list(packages or []) or None,
            recorded={
                "project_name": project_name,
                "task_name": task_name,
                "repo": repo,
                "repo_branch": repo_branch,
                "repo_commit": repo_commit,
                "docker": docker,
                "docker_args": docker_args,
                "docker_bash_setup_script": docker_bash_setup_script,
                "output_uri": output_uri,
                "working_dir": working_dir,
                "draft": draft,
            },
        )
        self._apply_continue(node, continue_on_fail, continue_behaviour)
        return self._add(node)

    @staticmethod
    def _apply_continue(
        node: Node, continue_on_fail: bool, behaviour: Mapping[str, bool] | None
    ) -> None:
        behaviour = dict(behaviour or {})
        node.continue_on_fail = bool(behaviour.get("continue_on_fail", continue_on_fail))
        node.continue_on_abort = bool(behaviour.get("continue_on_abort", False))
        node.skip_children_on_fail = bool(
            behaviour.get("skip_children_on_fail", not node.continue_on_fail)
        )
        node.skip_children_on_abort = bool(
            behaviour.get("skip_children_on_abort", not node.continue_on_abort)
        )

    def _add_live(self, node: Node) -> None:
        """Add a step to the running pipeline (the decorator's lazily built DAG)."""
        problems = self._node_problems(node)
        for parent in node.parents:
            if parent not in self._nodes:
                problems.append(f"step {node.name!r} has an unknown parent {parent!r}")
        if problems:
            raise PipelineError.collect(problems, "problem")
        with self._lock:
            for ref in self._references_of(node):
                if ref.step != "pipeline" and ref.step not in node.parents:
                    node.parents.append(ref.step)
            self._nodes[node.name] = node
        self._persist()
        self._wake.put(node.name)

    def _add(self, node: Node) -> bool:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise PipelineError(
                    f"cannot add step {node.name!r} while the pipeline runs; wait() for it first"
                )
            if node.name in self._nodes:
                self._duplicates.append(node.name)
                return False
            for ref in self._references_of(node):
                if ref.step != "pipeline" and ref.step not in node.parents:
                    node.parents.append(ref.step)
            self._nodes[node.name] = node
        return True

    @staticmethod
    def _references_of(node: Node) -> list[Reference]:
        found: list[Reference] = []
        for value in [*node.parameters.values(), *node.function_kwargs.values()]:
            try:
                found.extend(references.find(value))
            except ClearnbError:
                continue  # reported by validate()
        return found

    # -- facts -------------------------------------------------------------------------------

    def get_pipeline_dag(self) -> dict[str, Node]:
        """The steps by name (each a :class:`Node` with ``status`` and ``executed``)."""
        return dict(self._nodes)

    def get_processed_nodes(self) -> list[Node]:
        """Steps that finished (completed, cached, failed, aborted or skipped)."""
        return [n for n in self._nodes.values() if n.status in FINISHED]

    def get_running_nodes(self) -> list[Node]:
        """Steps running (or queued to run) now."""
        return [n for n in self._nodes.values() if n.status in (QUEUED, RUNNING)]

    def is_running(self) -> bool:
        """True while the run's thread works (or, sent to a queue, until its Task ends)."""
        if self._remote:
            return self._sync_remote() not in FINAL_TASK_STATUSES
        return self._thread is not None and self._thread.is_alive()

    def is_successful(self, fail_on_step_fail: bool = True, fail_condition: str = "all") -> bool:
        """True if the pipeline finished and every failure in it was allowed."""
        return self._status == COMPLETED

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``completed``, ``failed`` or ``aborted``."""
        return self._status

    def elapsed(self) -> float:
        """Seconds since the run started (0 before)."""
        if self._started is None:
            return 0.0
        return (self._ended or time.time()) - self._started

    @property
    def id(self) -> str:
        """Id of the pipeline's Task."""
        return self.task.id

    @property
    def task(self) -> Task:
        """The pipeline's own Task (created on first use)."""
        if self._task is None:
            self._task = self._make_task()
        return self._task

    def upload_artifact(
        self,
        name: str,
        artifact_object: Any,
        metadata: Mapping[str, Any] | None = None,
        delete_after_upload: bool = False,
        auto_pickle: bool = True,
        preview: Any = None,
        wait_on_upload: bool = False,
    ) -> bool:
        """Store an artifact with the pipeline's Task."""
        return self.task.upload_artifact(
            name,
            artifact_object,
            metadata=metadata,
            preview=preview,
            delete_after_upload=delete_after_upload,
        )

    def get_logger(self) -> Logger:
        """The logger of the pipeline's Task."""
        return self.task.get_logger()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` at every status or progress change of the run."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- validation --------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise one :class:`PipelineError` listing every problem found before running."""
        problems = graph.structure_problems(self._nodes.values(), self._duplicates)
        for node in self._nodes.values():
            problems.extend(self._node_problems(node))
        if problems:
            raise PipelineError.collect(problems, "problem")

    def _node_problems(self, node: Node) -> list[str]:
        problems: list[str] = []
        refs: list[Reference] = []
        for key, value in [*node.parameters.items(), *node.function_kwargs.items()]:
            try:
                refs.extend(references.find(value))
            except ClearnbError as exc:
                problems.append(f"step {node.name!r}, {key}: {exc}")
        for ref in refs:
            problems.extend(self._reference_problems(node, ref))
        if node.is_function:
            assert node.function is not None
            try:
                unbound = functions.unbound_names(node.function, node.helper_functions)
            except ClearnbError as exc:
                problems.append(f"step {node.name!r}: {exc}")
                return problems
            if unbound:
                names = ", ".join(repr(n) for n in unbound)
                problems.append(
                    f"step {node.name!r} ({node.function.__name__}) uses {names}, which it "
                    "neither imports nor receives: import inside the function, pass it as an "
                    "argument, or list the function in helper_functions"
                )
            for returned in node.function_return:
                try:
                    validate_artifact_name(returned)
                except ClearnbError as exc:
                    problems.append(
                        f"step {node.name!r}: function_return names the artifact each value is "
                        f"stored as, and {exc}"
                    )
            return problems
        if not (node.notebook or node.base_task_id or node.base_task_name):
            problems.append(
                f"step {node.name!r} names no notebook: pass notebook='path.ipynb', "
                "base_task_id=..., or base_task_project=... and base_task_name=..."
            )
            return problems
        try:
            path = self._notebook_of(node)
            nb = load_notebook(path)
        except ClearnbError as exc:
            problems.append(f"step {node.name!r}: {exc}")
            return problems
        if self._queue_of(node) is None:  # a queued step's kernel is the agent's business
            try:
                check_kernel(nb, f"step {node.name!r} ({Path(path).name})")
            except ClearnbError as exc:
                problems.append(str(exc))
        template = self._template_of(node)
        declared = NotebookParameters.of(nb, template.parameters if template else None)
        plain = {k: v for k, v in node.parameters.items() if not _has_reference(v)}
        referenced = {k: v for k, v in node.parameters.items() if _has_reference(v)}
        try:
            declared.resolve(plain, f"step {node.name!r} ({Path(path).name})")
        except ClearnbError as exc:
            problems.extend(exc.fields.get("problems", [str(exc)]))
        for key in referenced:
            section, pname = split_key(key)
            known = declared.sections.get(section)
            if known is not None and pname not in known:
                listed = ", ".join(sorted(known)) or "(none)"
                problems.append(
                    f"step {node.name!r} ({Path(path).name}) does not declare a parameter "
                    f"{key!r}; it declares: {listed}"
                )
        return problems

    def _reference_problems(self, node: Node, ref: Reference) -> list[str]:
        if ref.step == "pipeline":
            if ref.name not in self._parameters:
                known = ", ".join(self._parameters) or "(none)"
                return [
                    f"step {node.name!r} references {ref.text}, but the pipeline has no "
                    f"parameter {ref.name!r} (add_parameter); it has: {known}"
                ]
            return []
        if ref.step not in self._nodes:
            known = ", ".join(self._nodes) or "(none)"
            return [
                f"step {node.name!r} references {ref.text}, but there is no step "
                f"{ref.step!r}; the steps are: {known}"
            ]
        other = self._nodes[ref.step]
        if ref.kind == "return":
            if not other.is_function:
                return [
                    f"step {node.name!r} references {ref.text}: {ref.step!r} is a notebook "
                    "step; use ${" + ref.step + ".artifacts.<name>.url} or ${" + ref.step + ".id}"
                ]
            if ref.name not in other.function_return:
                returns = ", ".join(other.function_return) or "(none)"
                return [
                    f"step {node.name!r} references {ref.text}, but {ref.step!r} returns: "
                    f"{returns}; reference one of those, or add {ref.name!r} to its "
                    "function_return"
                ]
        if ref.kind == "artifact":
            try:
                validate_artifact_name(ref.name)
            except ClearnbError as exc:
                return [f"step {node.name!r} references {ref.text}, which no step can store: {exc}"]
        if ref.kind == "step_parameter":
            return self._step_parameter_problems(node, ref, other)
        return []

    def _step_parameter_problems(self, node: Node, ref: Reference, other: Node) -> list[str]:
        """A ``${step.parameters.Section/name}`` naming what ``other`` does not declare."""
        section, name = split_key(ref.name)
        if other.is_function:
            assert other.function is not None
            sections = {functions.KWARGS_SECTION: set(_signature_defaults(other.function))}
            sections[functions.KWARGS_SECTION] |= set(other.function_kwargs)
            label = f"{other.function.__name__}()"
        else:
            try:
                path = self._notebook_of(other)
                template = self._template_of(other)
                declared = NotebookParameters.of(
                    load_notebook(path), template.parameters if template else None
                )
            except ClearnbError:
                return []  # the other step's own problems say why
            sections = {key: set(found) for key, found in declared.sections.items() if found}
            label = Path(path).name
        known = sections.get(section)
        if known is None and section != GENERAL:
            return []  # a section a notebook may connect at run time
        if known is not None and name in known:
            return []
        listed = ", ".join(
            f"{key}/{found}" for key in sorted(sections) for found in sorted(sections[key])
        )
        return [
            f"step {node.name!r} references {ref.text}, but step {ref.step!r} ({label}) has no "
            f"parameter {section}/{name}; its parameters are: {listed or '(none)'}"
        ]

    def _template_of(self, node: Node) -> TaskRecord | None:
        store = self._backend.store
        if node.base_task_id:
            return store.get_task(node.base_task_id)
        if node.base_task_name or node.base_task_project:
            found = store.find_tasks(
                project=node.base_task_project, name=node.base_task_name, limit=20
            )
            for record in found:
                if record.notebook and record.task_type != "controller":
                    return record
            raise TaskNotFoundError(
                f"no template {node.base_task_project}/{node.base_task_name}: run the step "
                "notebook once in Jupyter (Task.init registers it), register it with "
                "Task.create(project_name=..., task_name=..., notebook=...), or pass "
                "notebook='path.ipynb' to add_step"
            )
        return None

    def _notebook_of(self, node: Node) -> str:
        if node.notebook:
            return node.notebook
        template = self._template_of(node)
        if template is None or not template.notebook:
            raise PipelineError(f"the template of step {node.name!r} has no notebook")
        return template.notebook

    # -- running -----------------------------------------------------------------------------

    def start(
        self,
        queue: str | None = None,
        step_task_created_callback: Callable[..., Any] | None = None,
        step_task_completed_callback: Callable[..., Any] | None = None,
        wait: bool = False,
        force: bool = False,
        resume: bool | str = False,
        steps: Sequence[str] | None = None,
    ) -> bool:
        """Validate, then run the pipeline in a background thread.

        With ``queue``, the pipeline (its controller) is sent to that queue instead and an
        agent serving it runs it (``clearnb agent --queue services``); :meth:`wait` then
        follows it through the store. Steps go to their ``execution_queue`` (or the
        default one) wherever the controller runs; steps without one run with it.
        ``step_task_created_callback(pipeline, node, parameters)`` runs before every step
        (False skips it and everything below it); ``step_task_completed_callback(pipeline,
        node)`` after. ``force`` re-runs cached steps. ``resume`` (True: the newest run of
        this pipeline; or a pipeline task id) keeps the steps that completed in that run
        and runs only the others. ``steps`` runs just these steps (cache ignored), taking
        every other step's results from the last run. With ``wait`` it returns when the run
        is over.
        """
        if self.is_running():
            raise PipelineError("the pipeline is already running; wait() for it first")
        if queue is not None:
            return self._enqueue_run(
                queue,
                wait=wait,
                callbacks=(step_task_created_callback, step_task_completed_callback),
                force=force,
            )
        self.validate()
        self._remote = False
        self._pre_callback = step_task_created_callback
        self._post_callback = step_task_completed_callback
        self._force = force
        self._stop_requested = None
        self._user_stopped = False
        self._running = True
        self._run_over.clear()
        for node in self._nodes.values():
            node.reset()
        if steps is not None:
            unknown = [name for name in steps if name not in self._nodes]
            if unknown:
                raise PipelineError(f"no step named {', '.join(map(repr, unknown))}")
            self._resume_from(resume or True, keep_only_outside=set(steps))
        elif resume:
            self._resume_from(resume)
        if self._runs and self._task is not None:  # every run after the first is its own Task
            previous = self._task
            self._task = self._new_task(parent=previous.id)
            self._attached = False
        self._runs += 1
        self._status = RUNNING
        self._started, self._ended = time.time(), None
        self._controller = pipelines.controller_identity()
        self._open_task()
        self._renderer = PictureRenderer(self.id, {**os.environ, **self.config.environ()})
        self._emit(PipelineEvent(PIPELINE_STATUS, None, RUNNING, PENDING))
        self._persist()
        self._thread = threading.Thread(target=self._run, name=f"pipeline {self.name}", daemon=True)
        self._thread.start()
        if wait:
            self.wait()
        return True

    def run_step(self, name: str, wait: bool = False) -> bool:
        """Run only step ``name`` again, its inputs taken from the last run."""
        return self.start(steps=[name], wait=wait)

    def run_from_step(self, name: str, wait: bool = False) -> bool:
        """Run step ``name`` and every step below it again; the rest comes from the last run."""
        if name not in self._nodes:
            raise PipelineError(f"no step named {name!r}")
        return self.start(steps=[name, *graph.descendants(self._nodes, name)], wait=wait)

    def retry_failed(self, wait: bool = False) -> bool:
        """Run again the steps of the last run that failed, were aborted or skipped."""
        return self.start(resume=True, wait=wait)

    def start_locally(self, run_pipeline_steps_locally: bool = False) -> None:
        """Run the pipeline logic here and wait for it.

        Steps go to their queues, unless ``run_pipeline_steps_locally`` keeps every step on
        this machine too.
        """
        self._steps_locally = run_pipeline_steps_locally
        try:
            self.start(wait=True)
        finally:
            self._steps_locally = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (``timeout`` in minutes, as ClearML); True if it ended."""
        if self._remote:
            from clearnb.executors.queue import follow

            seconds = None if timeout is None else timeout * 60
            record = follow(self._backend, self.id, timeout=seconds, interval=0.2)
            self._sync_remote(record)
            return record.status in FINAL_TASK_STATUSES
        thread = self._thread
        if thread is None:
            return True
        thread.join(None if timeout is None else timeout * 60)
        ended = not thread.is_alive()
        if ended:
            self._show_final_plot()
        return ended

    def stop(
        self, timeout: float | None = None, mark_failed: bool = False, mark_aborted: bool = False
    ) -> None:
        """Abort running steps (if any), wait for the run to end and release its kernels.

        Inside a notebook run by clearnb, a pipeline that did not succeed makes this
        raise, so the controller notebook's own run fails with the reason.
        """
        if self.is_running():
            self._user_stopped = True
            self._abort_all("the pipeline was stopped")
            if self._remote:  # the agent running the controller stops its steps
                self._backend.store.request_abort(self.id, "the pipeline was stopped")
            self.wait(timeout)
        if self._cleanup is not None:
            self._cleanup.join(None if timeout is None else timeout * 60)
        if mark_failed and self._task is not None:
            self._task.mark_failed(status_reason="marked failed by stop()")
        elif mark_aborted and self._task is not None:
            self._task.mark_stopped(status_message="marked aborted by stop()")
        if self._attached and self._status in (FAILED, ABORTED):
            failed = [n.name for n in self._nodes.values() if n.status in (FAILED, ABORTED)]
            raise PipelineError(
                f"pipeline {self.name!r} {self._status}: steps {', '.join(failed) or '-'} "
                f"did not complete; see `clearnb pipeline show {self.id}`",
                pipeline_id=self.id,
                steps=failed,
            )

    def _enqueue_run(
        self,
        queue_name: str,
        *,
        wait: bool,
        callbacks: Sequence[Callable[..., Any] | None],
        force: bool,
    ) -> bool:
        """Send the pipeline to ``queue_name`` as a controller Task an agent runs."""
        from clearnb.executors.queue import enqueue

        self.validate()
        local = [
            n.name
            for n in self._nodes.values()
            if n.pre_execute_callback or n.post_execute_callback or n.status_change_callback
        ]
        if any(callbacks) or local:
            raise PipelineError(
                "callbacks run in the process that defines them and cannot travel to an "
                f"agent (steps with callbacks: {', '.join(local) or '-'}); drop them, or run "
                "the pipeline here with start() without a queue"
            )
        definition = self.to_dict(portable=True)
        definition["force"] = force
        sections: dict[str, dict[str, Any]] = {}
        for key, value in self._parameters.items():
            section = self._sections.get(key, PIPELINE_SECTION)
            sections.setdefault(section, {})[key] = _plain(value)
        record = TaskRecord(
            project=self.project,
            name=self.name,
            task_type="controller",
            parameters=sections,
            tags=["pipeline"] if self.add_pipeline_tags else [],
            runtime={"definition": definition},
        )
        self._backend.store.create_task(record)
        self._task = Task(enqueue(self._backend, record.id, queue_name), self._backend)
        self._remote = True
        self._runs += 1
        self._status = QUEUED
        for node in self._nodes.values():
            node.reset()
        if wait:
            self.wait()
        return True

    def _sync_remote(self, record: TaskRecord | None = None) -> str:
        """Take the state of a run sent to a queue from its Task; returns the Task's status."""
        record = record or self._backend.store.get_task(self.id)
        state = pipelines.run_document(record) or {}
        with self._lock:
            for name, saved in (state.get("nodes") or {}).items():
                node = self._nodes.get(name)
                if node is None:
                    continue
                node.status = saved.get("status", node.status)
                node.executed = saved.get("executed")
                node.error = saved.get("error")
                node.job_started, node.job_ended = saved.get("started"), saved.get("ended")
                node.progress = dict(saved.get("progress") or {})
                if node.executed and node.status in (COMPLETED, CACHED, FAILED, ABORTED):
                    with contextlib.suppress(TaskNotFoundError):
                        node.job = StepJob(
                            Task(self._backend.store.get_task(node.executed), self._backend)
                        )
            self._status = {
                "queued": QUEUED,
                "created": PENDING,
                "running": RUNNING,
            }.get(record.status, state.get("status") or record.status)
            self._started, self._ended = state.get("started"), state.get("ended")
        return record.status

    def _queue_of(self, node: Node) -> str | None:
        """The queue a step is sent to, or ``None`` to run it here."""
        if self._steps_locally:
            return None
        return node.queue or self.default_execution_queue

    def _on_unserved(self, node: Node, queue_name: str, message: str) -> None:
        import warnings

        from clearnb.executors.queue import QueueWarning

        node.progress = {"waiting": message, "queue": queue_name}
        self._emit(PipelineEvent(STEP_PROGRESS, node.name, node.status, None, node.progress))
        self._persist()
        warnings.warn(f"step {node.name!r}: {message}", QueueWarning, stacklevel=2)

    def _abort_all(self, reason: str) -> None:
        self._stop_requested = reason
        for handle in list(self._handles.values()):
            handle.abort(reason)

    # -- the run (background thread) ---------------------------------------------------------

    def _runner_for_steps(self) -> NotebookRunner:
        """The runner of this run, started on first need (a fully cached run starts none)."""
        with self._lock:
            if self._runner is None:
                kernels = min(self.max_workers, max(1, len(self._nodes)))
                self._runner = NotebookRunner(self.config, pool_size=kernels).start()
            return self._runner

    def _run(self) -> None:
        done = self._wake
        futures: dict[str, Future[None]] = {}
        plotter = threading.Thread(target=self._plot_loop, name="pipeline plot", daemon=True)
        plotter.start()
        try:
            here = [n for n in self._nodes.values() if self._queue_of(n) is None]
            if any(n.status == PENDING for n in here) and (
                self._force or any(not n.cache_executed_step for n in here if n.status == PENDING)
            ):
                self._runner_for_steps()  # kernels start now, while the first steps resolve
            with ThreadPoolExecutor(self.max_workers, thread_name_prefix="step") as workers:
                while True:
                    self._keep_lease()
                    for node in self._ready_nodes(futures):
                        futures[node.name] = workers.submit(self._run_step, node, done)
                    if all(future.done() for future in futures.values()):
                        if self._ready_nodes(futures):
                            continue
                        if not self._accepting:
                            break
                    try:
                        done.get(timeout=0.5)
                    except queue.Empty:
                        continue
            self._status = self._final_status()
        except BaseException as exc:  # the controller itself broke: say so, never hang
            log.exception("pipeline %s crashed", self.name)
            self._status = FAILED
            for node in self._nodes.values():
                if node.status not in FINISHED:
                    node.error = {"reason": f"the pipeline controller failed: {exc}"}
                    self._set_status(node, ABORTED)
        finally:
            runner, self._runner = self._runner, None
            if runner is not None:  # kernels are released in the background; stop() waits
                self._cleanup = threading.Thread(target=runner.close, name="pipeline cleanup")
                self._cleanup.start()
            self._ended = time.time()
            self._persist()
            self._running = False
            self._run_over.set()
            self._plot_wanted.set()
            plotter.join()
            self._close_task()
            if self._renderer is not None:
                self._renderer.request()
            self._emit(PipelineEvent(PIPELINE_STATUS, None, self._status, RUNNING))

    def _ready_nodes(self, started: Mapping[str, Future[None]]) -> list[Node]:
        """Pending steps whose parents all finished; marks skipped those below a failure."""
        ready: list[Node] = []
        for name in graph.topological_order(self._nodes):
            node = self._nodes[name]
            if node.status != PENDING or name in started:
                continue
            parents = [self._nodes[p] for p in node.parents]
            if any(p.status not in FINISHED for p in parents):
                continue
            blocked = self._blocking_parent(parents)
            if self._stop_requested is not None or blocked is not None:
                reason = (
                    f"skipped: {self._stop_requested}"
                    if self._stop_requested is not None
                    else f"skipped because step {blocked!r} did not complete"
                )
                node.error = {"reason": reason}
                self._set_status(node, SKIPPED)
                continue
            ready.append(node)
        return ready

    @staticmethod
    def _blocking_parent(parents: Iterable[Node]) -> str | None:
        for parent in parents:
            if parent.status in SUCCEEDED:
                continue
            if parent.status == FAILED and not parent.skip_children_on_fail:
                continue
            if parent.status == ABORTED and not parent.skip_children_on_abort:
                continue
            return parent.name
        return None

    def _run_step(self, node: Node, done: queue.Queue[str]) -> None:
        try:
            self._execute_step(node)
        except BaseException as exc:
            log.exception("step %s could not run", node.name)
            node.error = {"reason": f"the step could not run: {type(exc).__name__}: {exc}"}
            node.job_ended = time.time()
            self._set_status(node, FAILED)
        finally:
            self._handles.pop(node.name, None)
            if node.status == FAILED and not node.continue_on_fail and self.abort_on_failure:
                self._abort_all(f"step {node.name!r} failed and abort_on_failure is set")
            done.put(node.name)

    def _execute_step(self, node: Node) -> None:
        try:
            resolved = self._resolve(node)
        except ClearnbError as exc:
            node.error = {"reason": f"its parameters could not be resolved: {exc}"}
            self._set_status(node, FAILED)
            return
        node.resolved = resolved
        for callback in (node.pre_execute_callback, self._pre_callback):
            if callback is not None and callback(self, node, resolved) is False:
                node.skip_job = True
                node.error = {"reason": "skipped by its pre-execute callback"}
                self._set_status(node, SKIPPED)
                self._skip_below(node, f"skipped because step {node.name!r} was skipped")
                return
        notebook, overrides, code_hash = self._materialize(node, node.resolved)
        key = cache.cache_key(code_hash, self._key_parameters(node), self._content_of)
        if node.cache_executed_step and not (self._force or node.force):
            hits = self._backend.store.find_tasks(cache_key=key, status="completed", limit=1)
            if hits:
                self._adopt(node, hits[0].id, CACHED)
                self._after_success(node)
                return
        while True:
            if self._stop_requested is not None:
                node.error = {"reason": f"aborted: {self._stop_requested}"}
                self._set_status(node, ABORTED)
                return
            handle = RunHandle()
            self._handles[node.name] = handle
            node.progress = {}
            self._set_status(node, QUEUED)
            node.job_started, node.job_ended = time.time(), None
            template = None if node.is_function or node.notebook else self._template_of(node)
            step_queue = self._queue_of(node)
            run: dict[str, Any] = {
                "task": template.id if template else None,
                "project_name": self.target_project,
                "task_name": node.name,
                "time_limit": node.timeout,
                "memory_limit": node.memory_limit,
                "parent": self.id,
                "tags": node.tags,
                "on_event": functools.partial(self._on_run_event, node),
                "handle": handle,
                "runtime": {"pipeline_step": node.name},
                "cache_key": key,
            }
            source = None if template else notebook
            if step_queue is None:
                task = self._runner_for_steps().execute(source, overrides, **run)
            else:
                from clearnb.executors.queue import QueueExecutor

                task = QueueExecutor(self._backend, step_queue).execute(
                    source,
                    overrides,
                    on_unserved=functools.partial(self._on_unserved, node, step_queue),
                    **run,
                )
            node.executed = task.id
            node.job = StepJob(task)
            node.job_ended = time.time()
            node.error = task.error
            if task.status == "completed":
                self._set_status(node, COMPLETED)
                self._after_success(node)
                return
            status = ABORTED if task.status == "aborted" else FAILED
            if status == FAILED and self._should_retry(node):
                node.retries += 1
                log.info("retrying step %s (retry %d)", node.name, node.retries)
                continue
            self._set_status(node, status)
            self._call_post(node)
            return

    def _should_retry(self, node: Node) -> bool:
        policy = (
            node.retry_on_failure if node.retry_on_failure is not None else (self.retry_on_failure)
        )
        if policy is None or self._stop_requested is not None:
            return False
        if callable(policy):
            return bool(policy(self, node, node.retries))
        return node.retries < int(policy)

    def _after_success(self, node: Node) -> None:
        self._monitor(node)
        self._call_post(node)

    def _call_post(self, node: Node) -> None:
        for callback in (node.post_execute_callback, self._post_callback):
            if callback is not None:
                try:
                    callback(self, node)
                except Exception:
                    log.exception("post-execute callback of step %s raised", node.name)

    def _adopt(self, node: Node, task_id: str, status: str) -> None:
        from clearnb.task import Task

        task = Task(self._backend.store.get_task(task_id), self._backend)
        node.executed = task_id
        node.job = StepJob(task)
        node.job_started = task.record.started
        node.job_ended = task.record.completed
        self._set_status(node, status)

    def _skip_below(self, node: Node, reason: str) -> None:
        for name in graph.descendants(self._nodes, node.name):
            below = self._nodes[name]
            if below.status == PENDING:
                below.error = {"reason": reason}
                self._set_status(below, SKIPPED)

    # -- references, generated notebooks, cache ----------------------------------------------

    def _resolve(self, node: Node) -> dict[str, Any]:
        values = node.function_kwargs if node.is_function else node.parameters
        resolved: dict[str, Any] = {}
        for key, value in values.items():
            resolved[key] = references.substitute(
                value, functools.partial(self._lookup, for_function=node.is_function)
            )
        return resolved

    def _lookup(self, ref: Reference, for_function: bool) -> Any:
        if ref.step == "pipeline":
            return self._parameters[ref.name]
        other = self._nodes[ref.step]
        if other.executed is None:
            raise PipelineError(f"{ref.text}: step {ref.step!r} has no run to read from")
        if ref.kind == "id":
            return other.executed
        store = self._backend.store
        if ref.kind == "step_parameter":
            section, name = split_key(ref.name)
            values = store.get_task(other.executed).parameters.get(section, {})
            if name not in values:
                raise PipelineError(
                    f"{ref.text}: step {ref.step!r} ran without a parameter {ref.name!r}"
                )
            return values[name]
        try:
            artifact = store.get_artifact(other.executed, ref.name)
        except ArtifactNotFoundError as exc:
            stored = ", ".join(repr(n) for n in exc.fields.get("available", [])) or "none"
            raise PipelineError(
                f"{ref.text}: step {ref.step!r} stored no artifact {ref.name!r} (it stored: "
                f"{stored}). Store it in that step with task.upload_artifact({ref.name!r}, "
                "value), or reference one of those it stores",
                step=ref.step,
                artifact=ref.name,
            ) from None
        if ref.kind == "return":
            if for_function:
                return functions.artifact_input(other.executed, ref.name)
            self._backend.artifacts.verify(artifact)
            return artifact.url
        if ref.field == "url":  # the step reads the file itself: it must be the one written
            self._backend.artifacts.verify(artifact)
        return getattr(artifact, ref.field)

    def _key_parameters(self, node: Node) -> dict[str, Any]:
        """Parameters for the cache key: references as written (replaced by content), other
        values as the step receives them (a pre-execute callback may have changed them)."""
        written = node.function_kwargs if node.is_function else node.parameters
        return {
            key: written[key] if key in written and _has_reference(written[key]) else value
            for key, value in node.resolved.items()
        }

    def _content_of(self, ref: Reference) -> Any:
        """What a reference stands for, by content (for cache keys)."""
        if ref.step == "pipeline":
            return self._parameters.get(ref.name)
        other = self._nodes[ref.step]
        if other.executed is None:
            return None
        store = self._backend.store
        if ref.kind == "id":
            hashes = {
                name: a.hash
                for name, a in store.get_artifacts(other.executed).items()
                if name != "notebook" and not a.metadata.get("figure")
            }
            return "artifacts:" + cache.artifacts_digest(hashes)
        if ref.kind == "step_parameter":
            return self._lookup(ref, False)
        return "artifact:" + store.get_artifact(other.executed, ref.name).hash

    def _materialize(
        self, node: Node, resolved: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any], str]:
        """The notebook to run, its overrides, and the hash of its code."""
        if not node.is_function:
            path = self._notebook_of(node)
            return path, dict(resolved), code_fingerprint(load_notebook(path))
        assert node.function is not None
        kwargs: dict[str, Any] = {}
        for key, value in resolved.items():
            kwargs[key] = value if _jsonable(value) else self._stash(node, key, value)
        defaults = _signature_defaults(node.function)
        given = {key: None for key in kwargs}  # any type: the run's values come as overrides
        nb = functions.build_notebook(
            node.name,
            node.function,
            {**defaults, **given},
            node.function_return,
            node.helper_functions,
        )
        written = functions.write_notebook(nb, self.config.home / "functions")
        overrides = {f"{functions.KWARGS_SECTION}/{k}": v for k, v in kwargs.items()}
        return str(written), overrides, code_fingerprint(nb)

    def _stash(self, node: Node, key: str, value: Any) -> dict[str, Any]:
        name = f"{node.name}.{key}"
        self.task.upload_artifact(name, value)
        return functions.artifact_input(self.id, name)

    # -- state, events, the pipeline's Task --------------------------------------------------

    def _set_status(self, node: Node, status: str) -> None:
        with self._lock:
            previous = node.status
            node.status = status
            if status in FINISHED and node.job_ended is None:
                node.job_ended = time.time()
        self._persist()
        self._emit(PipelineEvent(STEP_STATUS, node.name, status, previous, node.state()))
        if node.status_change_callback is not None:
            try:
                node.status_change_callback(self, node, previous)
            except Exception:
                log.exception("status change callback of step %s raised", node.name)
        self._plot_wanted.set()

    def _on_run_event(self, node: Node, event: RunEvent) -> None:
        if event.kind == run_events.TASK_STARTED:
            node.executed = event.task_id
            node.progress = {}
            self._set_status(node, RUNNING)
        elif event.kind == run_events.CELL_STARTED:
            node.progress = {"cell": event.payload["index"], "cells": event.payload["count"]}
            self._emit(PipelineEvent(STEP_PROGRESS, node.name, node.status, None, node.progress))
            now = time.time()
            if now - self._last_progress_write >= PROGRESS_INTERVAL:
                self._last_progress_write = now
                self._persist()

    def _emit(self, event: PipelineEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("pipeline listener raised")

    def state(self) -> dict[str, Any]:
        """The pipeline as JSON-able data (what is stored with its Task)."""
        with self._lock:
            return {
                "name": self.name,
                "project": self.project,
                "version": self.version,
                "status": self._status,
                "started": self._started,
                "ended": self._ended,
                "order": list(self._nodes),
                "nodes": {name: node.state() for name, node in self._nodes.items()},
                **({pipelines.CONTROLLER_KEY: self._controller} if self._controller else {}),
            }

    def _persist(self) -> None:
        if self._task is None:
            return
        try:
            store = self._backend.store
            with self._lock:
                pipelines.write_run(store, self._task.id, self.state())
        except Exception:
            log.warning("could not store the state of pipeline %s", self.name, exc_info=True)

    def _make_task(self) -> Task:
        from clearnb.task import Task

        attached = os.environ.get(TASK_ID_ENV)
        if attached:
            try:
                task = Task.init()
                self._attached = True
                return task
            except TaskNotFoundError:
                pass
        return self._new_task()

    def _new_task(self, parent: str | None = None) -> Task:
        from clearnb.task import Task

        record = TaskRecord(
            project=self.project,
            name=self.name,
            task_type="controller",
            status="created",
            parent=parent,
            tags=["pipeline"] if self.add_pipeline_tags else [],
        )
        return Task(self._backend.store.create_task(record), self._backend)

    def _open_task(self) -> None:
        task = self.task
        store = self._backend.store
        sections: dict[str, dict[str, Any]] = {}
        for key, value in self._parameters.items():
            section = self._sections.get(key, PIPELINE_SECTION)
            sections.setdefault(section, {})[key] = _plain(value)
        fields: dict[str, Any] = {
            "task_type": "controller",
            "parameters": {**store.get_task(task.id).parameters, **sections},
        }
        if self._attached:  # the notebook's own run becomes the pipeline's Task
            fields.update(project=self.project, name=self.name)
        else:
            fields.update(status="running", started=self._started, completed=None, error=None)
        store.update_task(task.id, **fields)
        task.reload()

    def _keep_lease(self) -> None:
        """Hold (and renew) a lease on the pipeline's Task while the run goes on here.

        Anyone reading the store then sees a controller killed on any machine as gone once
        its lease expires; and an abort asked for in the store (``clearnb task abort``)
        reaches this run. A Task already leased (by the agent running this controller) or
        attached to a notebook's run is left to its holder.
        """
        now = time.monotonic()
        if self._task is None or self._attached or now < self._lease_due:
            return
        self._lease_due = now + CONTROLLER_RENEW
        store = self._backend.store
        try:
            if self._lease_holder is None:
                if store.get_task(self.id).worker is not None:
                    self._lease_holder = ""
                    return
                self._lease_holder = (
                    f"{CONTROLLER_WORKER_PREFIX}{socket.gethostname()}:{os.getpid()}"
                )
                store.update_task(
                    self.id,
                    worker=self._lease_holder,
                    lease_expires=time.time() + CONTROLLER_LEASE,
                )
                return
            if not self._lease_holder:
                return
            answer = store.renew_leases(self._lease_holder, [self.id], CONTROLLER_LEASE)
            reason = answer.get(self.id)
            if reason is not None and self._stop_requested is None:
                log.warning("pipeline %s stops: %s", self.name, reason)
                self._user_stopped = True
                self._abort_all(reason)
        except ClearnbError:
            log.warning("could not renew the lease of pipeline %s", self.name, exc_info=True)

    def _close_task(self) -> None:
        if self._task is None or self._attached:
            return
        error = None
        if self._status != COMPLETED:
            bad = [n.name for n in self._nodes.values() if n.status in (FAILED, ABORTED)]
            error = {"reason": f"steps that did not complete: {', '.join(bad) or '-'}"}
            if self._user_stopped and self._stop_requested:
                error = {"reason": f"stopped: {self._stop_requested}"}
        status = {COMPLETED: "completed", ABORTED: "aborted"}.get(self._status, "failed")
        released: dict[str, Any] = {}
        if self._lease_holder:
            released = {"worker": None, "lease_expires": None, "abort_requested": None}
        self._lease_holder, self._lease_due = None, 0.0
        self._backend.store.update_task(
            self._task.id, status=status, completed=self._ended, error=error, **released
        )
        self._task.reload()

    def _final_status(self) -> str:
        """``aborted`` if stopped, ``failed`` if a failure was not allowed, else ``completed``."""
        if self._user_stopped:
            return ABORTED
        for node in self._nodes.values():
            if node.status == FAILED and not node.continue_on_fail:
                return FAILED
            if node.status == ABORTED and not node.continue_on_abort:
                return FAILED
        return COMPLETED

    def _monitor(self, node: Node) -> None:
        if not (node.monitor_artifacts or node.monitor_metrics) or node.executed is None:
            return
        store = self._backend.store
        for item in node.monitor_artifacts:
            source, target = (item, item) if isinstance(item, str) else tuple(item)
            try:
                record = store.get_artifact(node.executed, source)
            except ClearnbError:
                log.warning("step %s has no artifact %r to monitor", node.name, source)
                continue
            record.task_id = self.id
            record.name = target
            store.put_artifact(record)
        if node.monitor_metrics:
            from clearnb.store.records import ScalarRecord

            rows = []
            for item in node.monitor_metrics:
                (title, series), (new_title, new_series) = (
                    (item, item) if isinstance(item[0], str) else item
                )
                for row in store.get_scalars(node.executed, title=title):
                    if row.series == series:
                        rows.append(
                            ScalarRecord(self.id, new_title, new_series, row.iteration, row.value)
                        )
            if rows:
                store.add_scalars(rows)

    def _earlier_results(self, resume: bool | str) -> dict[str, TaskRecord]:
        """The completed steps' tasks of an earlier run (newest, or ``resume`` as an id)."""
        store = self._backend.store
        if isinstance(resume, str):
            record = store.get_task(resume)
        else:
            found = pipelines.find_runs(
                store,
                project=self.project,
                name=self.name,
                exclude=self._task.id if self._task is not None else None,
            )
            if not found:
                return {}
            record = found[0]
        if pipelines.recover(store, record.id):  # its controller died: settle it first
            record = store.get_task(record.id)
        results: dict[str, TaskRecord] = {}
        for name, state in ((pipelines.run_document(record) or {}).get("nodes") or {}).items():
            if state.get("status") in SUCCEEDED and state.get("executed"):
                with contextlib.suppress(TaskNotFoundError):
                    done = store.get_task(state["executed"])
                    if done.status == "completed":
                        results[name] = done
        return results

    def _resume_from(self, resume: bool | str, keep_only_outside: set[str] | None = None) -> None:
        """Take completed steps from an earlier run; with ``keep_only_outside``, run just
        those steps (forced) and skip the others that have no earlier result."""
        store = self._backend.store
        if isinstance(resume, str):
            record = store.get_task(resume)
        else:
            found = pipelines.find_runs(store, project=self.project, name=self.name)
            if not found:
                raise PipelineError(
                    f"no earlier run of pipeline {self.name!r} in project {self.project!r} "
                    "to resume; start it without resume"
                )
            record = found[0]
        if pipelines.recover(store, record.id):  # its controller died: settle it first
            record = store.get_task(record.id)
        earlier = (pipelines.run_document(record) or {}).get("nodes", {})
        for name, state in earlier.items():
            node = self._nodes.get(name)
            if keep_only_outside is not None and name in keep_only_outside:
                continue
            if node is not None and state.get("status") in SUCCEEDED and state.get("executed"):
                try:
                    done = store.get_task(state["executed"])
                except TaskNotFoundError:
                    continue
                if done.status == "completed":
                    self._adopt_quietly(node, done)
        if keep_only_outside is not None:
            for name, node in self._nodes.items():
                if name in keep_only_outside:
                    node.force = True
                elif node.status == PENDING:
                    node.status = SKIPPED
                    node.error = {"reason": "not selected for this run, and no earlier result"}

    def _adopt_quietly(self, node: Node, record: TaskRecord) -> None:
        from clearnb.task import Task

        node.status = COMPLETED
        node.executed = record.id
        node.job = StepJob(Task(record, self._backend))
        node.job_started, node.job_ended = record.started, record.completed
        node.resolved = {}
        node.progress = {"resumed": True}

    # -- pictures ----------------------------------------------------------------------------

    def _plot_loop(self) -> None:
        """While running, redraw the stored DAG picture after status changes (coalesced);
        short runs only get the final picture."""
        while self._running:
            self._plot_wanted.wait(timeout=0.5)
            if not self._running:
                return
            if self._renderer is None:
                continue
            self._renderer.poll()
            early = FIRST_PICTURE_AFTER - self.elapsed()
            if early > 0:
                self._run_over.wait(early)
            elif self._plot_wanted.is_set():
                self._plot_wanted.clear()
                self._renderer.request()
                self._run_over.wait(PLOT_INTERVAL)

    def _title(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"{self.project} / {self.name}{version} — {self._status}"

    def _show_final_plot(self) -> None:
        """In a notebook, display the DAG picture of the finished run."""
        try:
            from IPython import get_ipython

            if get_ipython() is None:
                return
            from IPython.display import Image, display

            if self._task is None:
                return
            if self._renderer is not None:
                self._renderer.wait()
            artifact = self._task.artifacts.get(DAG_ARTIFACT)
            if artifact is not None:
                display(Image(filename=artifact.get_local_copy()))  # type: ignore[no-untyped-call]
        except Exception:
            log.debug("could not display the pipeline picture", exc_info=True)

    # -- files and code ------------------------------------------------------------------

    def to_dict(self, portable: bool = False) -> dict[str, Any]:
        """The pipeline's definition as plain data (what :meth:`save` writes).

        ``portable`` also carries the source of function steps, so that another process
        (an agent) can run them without importing the module that defined them.
        """
        steps = []
        for node in self._nodes.values():
            if node.is_function:
                function = node.function
                assert function is not None
                entry: dict[str, Any] = {
                    "name": node.name,
                    "function": f"{function.__module__}:{function.__qualname__}",
                    "function_kwargs": node.function_kwargs,
                    "function_return": node.function_return,
                    "parents": node.parents,
                }
                for key, field in (
                    ("cache_executed_step", node.cache_executed_step),
                    ("time_limit", node.timeout),
                    ("memory_limit", node.memory_limit),
                    ("execution_queue", node.queue),
                ):
                    if field:
                        entry[key] = field
                if isinstance(node.retry_on_failure, int):
                    entry["retry_on_failure"] = node.retry_on_failure
                if portable:
                    entry["function_source"] = functions.portable_source(
                        function, node.helper_functions
                    )
                steps.append(entry)
                continue
            step: dict[str, Any] = {"name": node.name}
            for key in ("notebook", "base_task_id", "base_task_project", "base_task_name"):
                if getattr(node, key):
                    step[key] = getattr(node, key)
            if node.parents:
                step["parents"] = list(node.parents)
            if node.parameters:
                step["parameter_override"] = dict(node.parameters)
            for key, field in (
                ("cache_executed_step", node.cache_executed_step),
                ("continue_on_fail", node.continue_on_fail),
                ("time_limit", node.timeout),
                ("memory_limit", node.memory_limit),
                ("execution_queue", node.queue),
            ):
                if field:
                    step[key] = field
            if isinstance(node.retry_on_failure, int):
                step["retry_on_failure"] = node.retry_on_failure
            steps.append(step)
        return {
            "clearnb_pipeline": 1,
            "name": self.name,
            "project": self.project,
            "version": self.version,
            "parameters": dict(self._parameters),
            "descriptions": dict(self._descriptions),
            "abort_on_failure": self.abort_on_failure,
            "default_execution_queue": self.default_execution_queue,
            "max_workers": self.max_workers,
            "steps": steps,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the pipeline's definition to a JSON file; :meth:`from_file` reads it back."""
        import json

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        temporary.replace(target)
        return target

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> PipelineController:
        """A pipeline read from a file written by :meth:`save` (or by the widget's builder)."""
        import json

        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PipelineError(f"no pipeline file at {source}") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise PipelineError(
                f"{source} is not a pipeline file (not JSON: {exc}); write one with pipe.save()"
            ) from exc
        if not isinstance(data, dict) or "clearnb_pipeline" not in data:
            held = f"JSON {type(data).__name__}" if not isinstance(data, dict) else "JSON object"
            raise PipelineError(
                f"{source} is not a clearnb pipeline file (a {held} without "
                "'clearnb_pipeline': 1 in it); write one with pipe.save()"
            )
        if data["clearnb_pipeline"] != 1:
            raise PipelineError(
                f"{source} is a clearnb pipeline file of format {data['clearnb_pipeline']!r}, "
                "which this clearnb does not read (it reads format 1); upgrade clearnb, or "
                "write the file again with pipe.save()"
            )
        problems = _definition_problems(data)
        if problems:
            lines = "\n".join(f"  - {problem}" for problem in problems)
            plural = "s" if len(problems) != 1 else ""
            raise PipelineError(
                f"{source} is not a valid pipeline file ({len(problems)} problem{plural}):\n"
                f"{lines}\nFix the file, or write it again with pipe.save().",
                problems=problems,
            )
        return cls.from_definition(data, **options)

    @classmethod
    def from_definition(
        cls, data: Mapping[str, Any], task: str | None = None, **options: Any
    ) -> PipelineController:
        """A pipeline built from :meth:`to_dict` data; ``task`` adopts an existing
        controller Task (the one an agent took from a queue) instead of creating one."""
        import importlib

        pipe = cls(
            name=data["name"],
            project=data["project"],
            version=data.get("version"),
            abort_on_failure=bool(data.get("abort_on_failure", False)),
            default_execution_queue=data.get("default_execution_queue"),
            max_workers=data.get("max_workers"),
            **options,
        )
        descriptions = data.get("descriptions") or {}
        for key, value in (data.get("parameters") or {}).items():
            pipe.add_parameter(key, value, descriptions.get(key))
        for step in data.get("steps") or []:
            step = dict(step)
            if "function" in step:
                module, _, qualname = step.pop("function").partition(":")
                portable = step.pop("function_source", None)
                if portable is not None:
                    function, helpers = functions.load_portable(
                        portable, pipe.config.home / "functions"
                    )
                    step["helper_functions"] = helpers
                else:
                    try:
                        found: Any = importlib.import_module(module)
                        for part in qualname.split("."):
                            found = getattr(found, part)
                    except (ImportError, AttributeError, ValueError) as exc:
                        raise PipelineError(
                            f"step {step.get('name')!r}: the function {module}:{qualname} cannot "
                            f"be loaded ({type(exc).__name__}: {exc}); make its module "
                            "importable here (run from its folder or install it), or save the "
                            "pipeline with its code (to_dict(portable=True))"
                        ) from exc
                    function = found
                pipe.add_function_step(function=function, **step)
            else:
                pipe.add_step(**step)
        if task is not None:
            pipe._task = Task(pipe._backend.store.get_task(task), pipe._backend)
            if data.get("force"):
                pipe._force = True
        return pipe

    def to_code(self) -> str:
        """Python code that builds this pipeline (to paste into a notebook)."""
        lines = [
            "from clearnb import PipelineController",
            "",
            f"pipe = PipelineController(name={self.name!r}, project={self.project!r}"
            + (f", version={self.version!r}" if self.version else "")
            + (", abort_on_failure=True" if self.abort_on_failure else "")
            + ")",
        ]
        for key, value in self._parameters.items():
            description = self._descriptions.get(key)
            lines.append(
                f"pipe.add_parameter({key!r}, {value!r}"
                + (f", {description!r}" if description else "")
                + ")"
            )
        for step in self.to_dict()["steps"]:
            if "function" in step:
                lines.append(f"# {step['name']}: function step {step['function']}")
                continue
            arguments = ", ".join(f"{key}={value!r}" for key, value in step.items())
            lines.append(f"pipe.add_step({arguments})")
        lines += ["pipe.start()", "pipe.wait()", "pipe.stop()"]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_run(cls, task_id: str, config: Config | None = None) -> PipelineController:
        """A past run of a pipeline, opened by its task id (to view it, or to run it again).

        Notebook steps come back as steps that can run again; function steps only show.
        """
        backend = Backend.for_config(config or Config.from_env())
        pipelines.recover(backend.store, task_id)  # a run whose controller died is settled
        record = backend.store.get_task(task_id)
        state = pipelines.run_document(record)
        if not state:
            raise PipelineError(
                f"task {task_id} is not a pipeline run (it has no pipeline state); list the "
                "runs with `clearnb pipeline ls`"
            )
        pipe = cls(
            name=state["name"],
            project=state["project"],
            version=state.get("version"),
            config=config,
        )
        for key, value in record.parameters.get(PIPELINE_SECTION, {}).items():
            pipe.add_parameter(key, value)
        for name in state.get("order") or list(state["nodes"]):
            saved = state["nodes"][name]
            notebook = saved.get("source") if saved.get("kind") == "notebook" else None
            if saved.get("executed"):
                with contextlib.suppress(TaskNotFoundError):
                    notebook = backend.store.get_task(saved["executed"]).notebook or notebook
            node = Node(
                name=name,
                parents=list(saved.get("parents") or []),
                notebook=notebook if notebook and Path(notebook).exists() else None,
                parameters=dict(saved.get("parameters") or {}),
                cache_executed_step=bool(saved.get("cache")),
            )
            node.status = saved.get("status", PENDING)
            node.executed = saved.get("executed")
            node.job_started, node.job_ended = saved.get("started"), saved.get("ended")
            node.error = saved.get("error")
            node.resolved = dict(saved.get("resolved") or {})
            pipe._nodes[name] = node
        pipe._task = Task(record, backend)
        pipe._status = state.get("status", PENDING)
        pipe._started, pipe._ended = state.get("started"), state.get("ended")
        pipe._runs = 1
        return pipe

    def _add_checked(self, **step: Any) -> bool:
        """Add a notebook step now, refusing it at once if it has problems (the builder's)."""
        if step["name"] in self._nodes:
            return False
        self.add_step(**step)
        node = self._nodes[step["name"]]
        problems = self._node_problems(node)
        problems += [
            f"step {node.name!r} has an unknown parent {parent!r}"
            for parent in node.parents
            if parent not in self._nodes
        ]
        if problems:
            del self._nodes[node.name]
            raise PipelineError.collect(problems, "problem")
        return True

    def _replace_step(self, name: str, step: dict[str, Any]) -> None:
        """Replace step ``name`` by ``step`` (the builder's edit), keeping its place."""
        if self.is_running():
            raise PipelineError("cannot edit a step while the pipeline runs")
        order = list(self._nodes)
        old = self._nodes.pop(name)
        try:
            if not self._add_checked(**step):
                raise PipelineError(f"a step named {step['name']!r} exists already")
        except BaseException:
            self._nodes[name] = old
            self._nodes = {key: self._nodes[key] for key in order if key in self._nodes}
            raise
        new = step["name"]
        position = order.index(name)
        order[position] = new
        self._nodes = {key: self._nodes[key] for key in order if key in self._nodes}
        if new != name:
            for node in self._nodes.values():
                node.parents = [new if p == name else p for p in node.parents]

    def _replace_definition(self, other: PipelineController) -> None:
        """Take the steps and parameters of ``other`` (loading a file into the widget)."""
        if self.is_running():
            raise PipelineError("cannot load a pipeline while this one runs")
        self.name, self.project, self.version = other.name, other.project, other.version
        self._nodes = dict(other._nodes)
        self._parameters = dict(other._parameters)
        self._descriptions = dict(other._descriptions)
        self._duplicates = list(other._duplicates)

    def remove_step(self, name: str) -> None:
        """Remove a step (and it from its children's parents); not while running."""
        with self._lock:
            if self.is_running():
                raise PipelineError("cannot remove a step while the pipeline runs")
            if name not in self._nodes:
                raise PipelineError(f"no step named {name!r}")
            del self._nodes[name]
            for node in self._nodes.values():
                if name in node.parents:
                    node.parents.remove(name)

    def widget(self) -> Any:
        """The controller widget (ipywidgets): run, watch and inspect the pipeline here."""
        if self._widget is None:
            try:
                from clearnb.widgets.controller import PipelineWidget
            except ImportError as exc:
                raise MissingDependencyError(
                    "the controller widget needs ipywidgets and anywidget: "
                    "pip install 'clearnb[widgets]'"
                ) from exc
            self._widget = PipelineWidget(self)
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any] | None:
        """The widget where widgets render, with the DAG picture for viewers that cannot."""
        bundle: dict[str, Any] = {"text/plain": repr(self)}
        png = self._repr_png_()
        if png is not None:
            import base64

            bundle["image/png"] = base64.b64encode(png).decode("ascii")
        try:
            view = self.widget()._repr_mimebundle_(include=include, exclude=exclude)
        except Exception:  # no widgets here: the picture stands in
            return bundle
        if isinstance(view, tuple):
            view = view[0]
        bundle.update(view or {})
        return bundle

    def __repr__(self) -> str:
        return f"<PipelineController {self.project}/{self.name} [{self._status}]>"

    def _repr_png_(self) -> bytes | None:
        """The DAG as a PNG, so that ``pipe`` as a cell's last line shows it."""
        try:
            from clearnb.plot import figure_png, plot_pipeline

            state = self.state()
            return figure_png(plot_pipeline(state["nodes"], state["order"], title=self._title()))
        except Exception:
            return None


PipelineController.Node = Node  # type: ignore[attr-defined]  # ClearML's name for a step


_FILE_KEYS = frozenset(
    {
        "clearnb_pipeline",
        "name",
        "project",
        "version",
        "parameters",
        "descriptions",
        "abort_on_failure",
        "default_execution_queue",
        "max_workers",
        "steps",
        "force",
    }
)
_CODE_ONLY_ARGUMENTS = frozenset(
    {
        "self",
        "function",
        "helper_functions",
        "pre_execute_callback",
        "post_execute_callback",
        "status_change_callback",
        "base_task_factory",
    }
)


def _step_keys(method: Callable[..., Any], *extra: str) -> set[str]:
    import inspect

    return (set(inspect.signature(method).parameters) - _CODE_ONLY_ARGUMENTS) | set(extra)


def _definition_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the contents of a pipeline file (an empty list if nothing)."""
    problems: list[str] = []
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        problems.append(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"a pipeline file has: {', '.join(sorted(_FILE_KEYS))}"
        )
    for key in ("name", "project"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(f"{key!r} is missing or not a non-empty string")
    for key in ("parameters", "descriptions"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            problems.append(f"{key!r} must be an object ({{\"name\": value}})")
    steps = data.get("steps")
    if not isinstance(steps, list):
        problems.append(
            "'steps' is missing; add \"steps\": [...] with one object per step"
            if steps is None
            else f"'steps' must be a list of step objects, not a {type(steps).__name__}"
        )
        return problems
    notebook_keys = _step_keys(PipelineController.add_step)
    function_keys = _step_keys(
        PipelineController.add_function_step, "function", "function_source"
    )
    for number, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            problems.append(f"step #{number} is a {type(step).__name__}, not an object")
            continue
        name = step.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"step #{number} has no 'name' (a non-empty string)")
            label = f"step #{number}"
        else:
            label = f"step {name!r}"
        allowed = function_keys if "function" in step else notebook_keys
        extra = sorted(set(step) - allowed)
        if extra:
            problems.append(
                f"{label} has unknown key{'s' if len(extra) > 1 else ''} "
                f"{', '.join(map(repr, extra))}; a step may have: {', '.join(sorted(allowed))}"
            )
        shapes: tuple[tuple[str, type, str], ...] = (
            ("parents", list, "a list of step names"),
            ("parameter_override", dict, 'an object ({"Section/name": value})'),
            ("function_kwargs", dict, 'an object ({"argument": value})'),
            ("function_return", list, "a list of names"),
            ("function", str, "'module:function'"),
        )
        for key, kind, shown in shapes:
            if key in step and not isinstance(step[key], kind):
                problems.append(f"{label}: {key!r} must be {shown}")
        for key in ("parents", "function_return"):
            if isinstance(step.get(key), list) and not all(isinstance(v, str) for v in step[key]):
                problems.append(f"{label}: {key!r} must hold only strings")
    return problems


def _has_reference(value: Any) -> bool:
    try:
        return bool(references.find(value))
    except ClearnbError:
        return True


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _plain(value: Any) -> Any:
    return value if _jsonable(value) else repr(value)


def _signature_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    import inspect

    defaults: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = parameter.default
        defaults[name] = (
            None if default is inspect.Parameter.empty or not _jsonable(default) else default
        )
    return defaults

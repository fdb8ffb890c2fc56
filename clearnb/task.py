"""The Task API, as ClearML spells it, for step notebooks and for controllers.

Inside a notebook run by clearnb, ``Task.init()`` attaches to the run's task (its id is in
the kernel's environment); run interactively in Jupyter it records a new task and
registers the notebook as a template under its project and name. Which task is this
process's is :mod:`clearnb.current`'s; preparing, queueing and following a task is
:mod:`clearnb.dispatch`'s; the logger is :mod:`clearnb.logger`'s. Parts of ``Task`` live in
their own modules: status changes in :mod:`clearnb.taskstatus`, configuration objects in
:mod:`clearnb.taskconfig`, ClearML's task filters in :mod:`clearnb.taskquery`; its models
are :mod:`clearnb.model`'s.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from clearnb import arguments, compat, connected, current, dispatch, initargs, taskquery, taskstatus
from clearnb.artifacts import Artifact
from clearnb.artifacts.storage import check_user_artifact_name
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.connected import ConnectedSections
from clearnb.current import CURRENT
from clearnb.dispatch import ExecutedRemotely
from clearnb.errors import ClearnbError, ParameterError, TaskNotFoundError
from clearnb.frameworks import install as bind_frameworks
from clearnb.logger import Logger
from clearnb.model import InputModel, OutputModel
from clearnb.notebook.files import code_fingerprint, load_notebook
from clearnb.notebook.parameters import (
    GENERAL,
    DeclaredParameter,
    NotebookParameters,
    coerce,
    split_key,
)
from clearnb.store.records import TaskRecord
from clearnb.taskconfig import ConfigurationObjects
from clearnb.taskmetrics import ReportedMetrics
from clearnb.taskmodels import TaskModels
from clearnb.taskstatus import StatusChanges, TaskStatusEnum
from clearnb.tasktypes import TaskTypes

__all__ = ["Artifact", "ExecutedRemotely", "Task", "TaskStatusEnum", "TaskTypes"]

log = logging.getLogger(__name__)

M = TypeVar("M")


class Task(ConfigurationObjects, StatusChanges, ReportedMetrics):
    """One run of a notebook or function, or a draft/template of one."""

    TaskStatusEnum = TaskStatusEnum
    TaskTypes = TaskTypes

    def __init__(self, record: TaskRecord, backend: Backend) -> None:
        self._record = record
        self._backend = backend
        self._logger: Logger | None = None
        self._connected = ConnectedSections()
        super().__init__()

    @classmethod
    def from_record(cls, record: TaskRecord, backend: Backend) -> Task:
        """The Task of a stored ``record`` of ``backend``'s store (nothing is read or written).

        Code that has a task's record at hand (a runner, an executor) wraps it with this.
        """
        return cls(record, backend)

    # -- finding and creating tasks ---------------------------------------------------------

    @classmethod
    def init(
        cls,
        project_name: str | None = None,
        task_name: str | None = None,
        task_type: str = "notebook",
        tags: Sequence[str] | None = None,
        reuse_last_task_id: bool | str = True,
        continue_last_task: bool | str | int = False,
        output_uri: str | bool | None = None,
        auto_connect_arg_parser: bool | Mapping[str, bool] = True,
        auto_connect_frameworks: bool | Mapping[str, Any] = True,
        auto_resource_monitoring: bool | Mapping[str, Any] = True,
        auto_connect_streams: bool | Mapping[str, bool] = True,
        notebook: str | os.PathLike[str] | None = None,
        deferred_init: bool = False,
    ) -> Task:
        """The task of this run: attach to it when clearnb runs the notebook, else record one.

        Run interactively, the notebook (found from the kernel's environment, or given as
        ``notebook=``) is registered as a template under ``project_name``/``task_name``;
        so is a script run with ``python script.py``. ``auto_connect_arg_parser`` records
        argparse arguments in section ``Args`` (see :mod:`clearnb.arguments`).
        Outside a run every call records a new task (``reuse_last_task_id=False`` is what
        happens anyway). Models that ML frameworks save are the task's output models unless
        ``auto_connect_frameworks`` says otherwise (:mod:`clearnb.frameworks`). ``output_uri``,
        ``auto_resource_monitoring``, ``auto_connect_streams``, ``deferred_init``, a task id as
        ``reuse_last_task_id`` and ``continue_last_task`` have no effect here: given
        away from their defaults they are recorded in the task's runtime
        (``unused_arguments``) and named in a :class:`~clearnb.errors.CompatibilityWarning`.
        """
        unused = initargs.unused_init_arguments(
            reuse_last_task_id=reuse_last_task_id,
            continue_last_task=continue_last_task,
            output_uri=output_uri,
            auto_connect_frameworks=auto_connect_frameworks,
            auto_resource_monitoring=auto_resource_monitoring,
            auto_connect_streams=auto_connect_streams,
            deferred_init=deferred_init,
        )
        with CURRENT.lock:
            backend = Backend.for_config(Config.from_env())
            attached = current.attached_task_id()
            if attached:
                existing = CURRENT.task
                if existing is not None and existing.id == attached:
                    return _with_unused(existing, unused)
                record = backend.store.get_task(attached)
                names = current.init_names(record, project_name, task_name)
                if names:  # started without names (clearnb task run nb.ipynb): Task.init's
                    record = backend.store.update_task(attached, **names)
                task = cls(record, backend)
                early = CURRENT.logger  # Logger.current_logger() came first: keep its buffer
                if early is not None and early.task_id == attached:
                    task._logger = early
                CURRENT.task, CURRENT.logger = task, None
                current.watch_cells(task.flush)
                arguments.connect_arguments(task.id, auto_connect_arg_parser)
                bind_frameworks(auto_connect_frameworks)
                return _with_unused(task, unused)
            existing = CURRENT.task
            if existing is not None and current.ended_for_other_notebook(existing, notebook):
                CURRENT.task = existing = None  # notebook= wins: that was another's task
            if existing is not None and existing.status == "running":
                if (project_name and project_name != existing.project) or (
                    task_name and task_name != existing.name
                ):
                    log.warning(
                        "Task.init was already called in this process (task %s, %s/%s); "
                        "returning that task. Call task.close() first to start another.",
                        existing.id,
                        existing.project,
                        existing.name,
                    )
                return _with_unused(existing, unused)
            record = current.interactive_record(project_name, task_name, task_type, tags, notebook)
            task = cls(backend.store.create_task(record), backend)
            CURRENT.task = task
            current.watch_cells(task.flush)
            current.watch_failures(task._fail_on)
            atexit.register(task._close_at_exit)
            arguments.connect_arguments(task.id, auto_connect_arg_parser)
            bind_frameworks(auto_connect_frameworks)
            return _with_unused(task, unused)

    @staticmethod
    def running_locally() -> bool:
        """False when this process runs a task for clearnb (an agent's or a runner's
        kernel, a pipeline step); True otherwise (a notebook or script run by hand)."""
        return current.attached_task_id() is None

    @classmethod
    def current_task(cls) -> Task | None:
        """The task of this process (``Task.init``'s), or None."""
        if CURRENT.task is None and current.attached_task_id():
            return cls.init()
        return CURRENT.task

    @classmethod
    def get_task(
        cls,
        task_id: str | None = None,
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: Mapping[str, Any] | None = None,
    ) -> Task:
        """A task by id, or the newest with exactly this project and name (and the tags
        and ``task_filter`` of :meth:`get_tasks`)."""
        backend = Backend.for_config()
        if task_id:
            store = backend.store
            return cls(store.get_task(store.resolve_task_id(task_id)), backend)
        if not project_name and not task_name:
            raise ClearnbError(
                "Task.get_task needs task_id=..., or project_name=... and/or task_name=..."
            )
        found = taskquery.find_tasks(
            backend.store,
            project_name=project_name,
            task_name=task_name,
            tags=tags,
            allow_archived=allow_archived,
            task_filter=task_filter,
            exact_name=True,
            where="Task.get_task",
        )
        if not found:
            raise TaskNotFoundError(
                f"No task named {task_name!r} in project {project_name!r}. List the tasks with "
                "`clearnb task ls`, or run the notebook once so it is registered.",
                project_name=project_name,
                task_name=task_name,
            )
        return cls(found[0], backend)

    @classmethod
    def get_tasks(
        cls,
        task_ids: Sequence[str] | None = None,
        project_name: str | Sequence[str] | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        allow_archived: bool = True,
        task_filter: Mapping[str, Any] | None = None,
    ) -> list[Task]:
        """Tasks by ids, or every task matching ClearML's filters, newest first.

        ``project_name`` is a name or a list of names; ``task_name`` a regular expression
        that may match part of a name; ``task_filter`` takes ClearML's keys (``status``,
        ``type``, ``parent``, ``order_by``, ``page``, ``page_size``, ...): see
        :mod:`clearnb.taskquery`.
        """
        backend = Backend.for_config()
        records = taskquery.find_tasks(
            backend.store, task_ids, project_name, task_name, tags, allow_archived, task_filter
        )
        return [cls(r, backend) for r in records]

    @classmethod
    def create(
        cls,
        project_name: str | None = None,
        task_name: str | None = None,
        notebook: str | os.PathLike[str] | None = None,
        task_type: str = "notebook",
        tags: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Task:
        """Register ``notebook`` as a template (status ``created``) without running it."""
        if notebook is None:
            raise ClearnbError("Task.create needs notebook='path/to/step.ipynb'.")
        path = Path(notebook).expanduser().absolute()
        nb = load_notebook(path)
        recorded = NotebookParameters.of(nb).defaults()
        backend = Backend.for_config()
        record = TaskRecord(
            project=project_name or "default",
            name=task_name or path.stem,
            task_type=task_type,
            notebook=str(path),
            parameters=recorded,
            tags=list(tags or []),
            runtime={"code_hash": code_fingerprint(nb), "template": True},
        )
        task = cls(backend.store.create_task(record), backend)
        if parameters:
            task.update_parameters(parameters)
        return task

    @classmethod
    def clone(
        cls,
        source_task: Task | str,
        name: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
        project: str | None = None,
    ) -> Task:
        """A draft copy (status ``created``) of ``source_task`` with its own parameters."""
        backend = Backend.for_config()
        source = (
            source_task._record
            if isinstance(source_task, Task)
            else backend.store.get_task(source_task)
        )
        record = TaskRecord(
            project=project or source.project,
            name=name or f"{source.name} (clone)",
            task_type=source.task_type,
            notebook=source.notebook,
            parameters=json.loads(json.dumps(source.parameters)),
            tags=list(source.tags),
            parent=parent or source.id,
            comment=comment or f"cloned from {source.id}",
            runtime={k: v for k, v in source.runtime.items() if k in ("code_hash", "kernel_name")},
            configuration=json.loads(json.dumps(source.configuration)),
        )
        clone = cls(backend.store.create_task(record), backend)
        backend.store.copy_task_models(source.id, clone.id, kind="input")
        return clone

    # -- facts ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The task's id."""
        return self._record.id

    @property
    def name(self) -> str:
        """The task's name."""
        return self._record.name

    @property
    def project(self) -> str:
        """The task's project."""
        return self._record.project

    @property
    def status(self) -> str:
        """The status as last read (see :meth:`get_status` for a fresh one)."""
        return self._record.status

    @property
    def task_type(self) -> str:
        """``notebook``, ``function``, ``controller`` or a ClearML task type."""
        return self._record.task_type

    @property
    def parent(self) -> str | None:
        """Id of the task this one was cloned from or launched by."""
        return self._record.parent

    @property
    def notebook(self) -> str | None:
        """Path of the source notebook."""
        return self._record.notebook

    @property
    def output_notebook(self) -> str | None:
        """Where the executed notebook is stored."""
        return self._record.output_notebook

    @property
    def error(self) -> dict[str, Any] | None:
        """For a failed task: ``reason``, and for a raising cell its index, ename, evalue."""
        return self._record.error

    @property
    def runtime(self) -> dict[str, Any]:
        """Run facts: cell timings, duration, kernel name, overridden parameters."""
        return dict(self._record.runtime)

    @property
    def record(self) -> TaskRecord:
        """The stored record as last read."""
        return self._record

    @property
    def backend(self) -> Backend:
        """The store and artifact storage the task lives in."""
        return self._backend

    @property
    def artifacts(self) -> dict[str, Artifact]:
        """The task's artifacts by name, read fresh from the store."""
        stored = self._backend.store.get_artifacts(self.id)
        return {name: Artifact(rec, self._backend.artifacts) for name, rec in stored.items()}

    @property
    def models(self) -> TaskModels:
        """The task's models, read fresh: ``{"input": [...], "output": [...]}``, each list
        also indexable by the model's name on the task (``task.models["output"]["best"]``)."""
        return TaskModels(self)

    def get_models(self) -> TaskModels:
        """The task's models (as :attr:`models`)."""
        return TaskModels(self)

    def get_project_name(self) -> str:
        """The task's project."""
        return self.project

    def get_status(self) -> str:
        """The current status, read from the store."""
        return self.reload().status

    def get_tags(self) -> list[str]:
        """The task's tags."""
        return list(self._record.tags)

    def add_tags(self, tags: str | Iterable[str]) -> None:
        """Add tags to the task (a string holds tags separated by spaces, as in ClearML)."""
        new = tags.split() if isinstance(tags, str) else list(tags)
        merged = list(dict.fromkeys([*self.reload()._record.tags, *new]))
        self._record = self._backend.store.update_task(self.id, tags=merged)

    @property
    def comment(self) -> str:
        """The task's comment (its description)."""
        return self._record.comment

    @comment.setter
    def comment(self, value: str) -> None:
        self.set_comment(value)

    def set_comment(self, comment: str) -> None:
        """Set the task's comment (its description)."""
        self._record = self._backend.store.update_task(self.id, comment=str(comment or ""))

    def reload(self) -> Task:
        """Read the task again from the store; returns self."""
        self._record = self._backend.store.get_task(self.id)
        return self

    # -- parameters ---------------------------------------------------------------------------

    def connect(
        self, mutable: M, name: str | None = None, ignore_remote_overrides: bool = False
    ) -> M:
        """Connect a dict (or argparse Namespace) as parameter section ``name``; or a
        model, recorded as the task's input (:class:`~clearnb.model.InputModel`) or output.

        Values the task holds for that section (overrides of a run, or of a cloned
        draft) are written into ``mutable`` in place, typed like its current values; then
        the whole section is recorded with the task. A task started by hand
        (``Task.init`` outside a run) has no overrides: ``mutable`` is recorded as it is,
        so editing the dict and running the cell again records the new values. Later
        changes to ``mutable`` are recorded too (at the end of each cell, when the run ends
        and when parameters are read), as ClearML records them. With
        ``ignore_remote_overrides`` a run records ``mutable`` as it is. Returns ``mutable``.
        """
        section = name or GENERAL
        values: MutableMapping[Any, Any]
        if isinstance(mutable, InputModel | OutputModel):
            mutable.connect(self, name, ignore_remote_overrides=ignore_remote_overrides)
            return mutable
        if isinstance(mutable, argparse.Namespace):
            values = vars(mutable)
        elif isinstance(mutable, MutableMapping):
            values = mutable
        else:
            raise TypeError(
                f"task.connect() takes a dict or an argparse.Namespace, not "
                f"{type(mutable).__name__}; put the parameters in a dict first."
            )
        record = self.reload()._record
        if record.runtime.get("interactive") or ignore_remote_overrides:
            self._set_section(section, dict(values), replace=False)
            self._connected.add(section, values)
            return mutable
        overrides = record.parameters.get(section, {})
        problems = []
        for key, value in overrides.items():
            if key in values:
                current = values[key]
                declared = DeclaredParameter(str(key), current, repr(current))
                try:
                    values[key] = coerce(value, declared)
                except ParameterError as exc:
                    problems.append(
                        f"{section}/{key}: {value!r} does not fit the type of {current!r} "
                        f"({exc.fields['reason']}); pass a value of that type"
                    )
            elif section != GENERAL:  # General also holds the parameters cell's variables
                values[key] = value
        if problems:
            raise ParameterError.collect(problems, "parameter problem")
        self._set_section(section, dict(values), replace=False)
        self._connected.add(section, values)
        return mutable

    def get_parameters(self) -> dict[str, Any]:
        """All parameters, flat: ``{"Section/name": value}``."""
        return {
            f"{section}/{key}": value
            for section, values in self._record_connected()._record.parameters.items()
            for key, value in values.items()
        }

    def get_parameters_as_dict(self, cast: bool = False) -> dict[str, Any]:
        """All parameters by section: ``{"Section": {"name": value}}``; a name with ``/``
        in it nests further (``"opt/lr"`` is ``{"opt": {"lr": ...}}``), as in ClearML.

        Values are stored with their types here, so they come back typed whether or not
        ``cast`` is asked for (ClearML gives text unless ``cast``).
        """
        nested: dict[str, Any] = {}
        for section, values in self._record_connected()._record.parameters.items():
            top = nested.setdefault(section, {})
            for key, value in sorted(values.items(), key=lambda item: item[0].count("/")):
                *parents, leaf = key.split("/")
                place = top
                for parent in parents:
                    place = place.setdefault(parent, {})
                    if not isinstance(place, dict):  # "a" holds a value and "a/b" another
                        place, leaf = top, key
                        break
                place[leaf] = json.loads(json.dumps(value))
        return nested

    def set_parameters_as_dict(self, dictionary: Mapping[str, Any]) -> None:
        """Set parameters from a nested dict, ``{"Section": {"name": value, "group": {...}}}``
        (nested names are joined with ``/``); the others are kept, as ClearML's update."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, values: Mapping[Any, Any]) -> None:
            for key, value in values.items():
                if isinstance(value, Mapping) and value:
                    walk(f"{prefix}{key}/", value)
                else:
                    flat[f"{prefix}{key}"] = value

        walk("", dictionary)
        self.update_parameters(flat)

    def get_parameter(self, name: str, default: Any = None) -> Any:
        """One parameter by ``"Section/name"`` (a bare name means ``General``)."""
        section, key = split_key(name)
        return self._record_connected()._record.parameters.get(section, {}).get(key, default)

    def set_parameters(self, parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Replace all parameters with ``{"Section/name": value}`` (bare names: ``General``)."""
        grouped = connected.group_values({**(parameters or {}), **kwargs})
        self._record = self._backend.store.update_task(self.id, parameters=grouped)

    def update_parameters(self, parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set or change some parameters, keeping the others."""
        for section, values in connected.group_values({**(parameters or {}), **kwargs}).items():
            self._set_section(section, values, replace=False)

    def set_parameter(self, name: str, value: Any) -> None:
        """Set one parameter, ``"Section/name"``."""
        self.update_parameters({name: value})

    def _record_connected(self) -> Task:
        """Record the connected dicts changed since :meth:`connect`; the task, reloaded."""
        for section, values in self._connected.changed().items():
            self._set_section(section, values, replace=False)
        return self.reload()

    def _set_section(self, section: str, values: Mapping[str, Any], replace: bool) -> None:
        clean = {str(k): connected.recordable(v) for k, v in values.items()}
        if replace:
            parameters = dict(self.reload()._record.parameters)
            parameters[section] = clean
            self._record = self._backend.store.update_task(self.id, parameters=parameters)
        else:
            self._backend.store.set_parameters(self.id, {section: clean})
            self.reload()

    # -- outputs -------------------------------------------------------------------------------

    def upload_artifact(
        self,
        name: str,
        artifact_object: Any,
        metadata: Mapping[str, Any] | None = None,
        delete_after_upload: bool = False,
        auto_pickle: bool = True,
        preview: Any = None,
        wait_on_upload: bool = True,
        extension_name: str | None = None,
        serialization_function: Callable[[Any], bytes | bytearray] | None = None,
    ) -> bool:
        """Store ``artifact_object`` under ``name`` (re-uploading a name replaces it);
        ``serialization_function`` stores the bytes it makes of the object instead (read
        back with ``artifacts[name].get(deserialization_function=...)``). With
        ``auto_pickle=False`` a value only pickle could store is refused, as in ClearML; the
        upload is always done when this returns (``wait_on_upload``). ``extension_name``
        is recorded with the artifact and warned about: the codec picks the file format."""
        check_user_artifact_name(name)
        registry = self._backend.artifacts.registry
        if not auto_pickle and serialization_function is None:
            registry.refuse_pickle(name, artifact_object)
        if extension_name is not None:
            metadata = {**(metadata or {}), "unused_extension_name": extension_name}
            compat.warn_unused(
                "upload_artifact", {"extension_name": extension_name}, "the type picks the format"
            )
        record = self._backend.artifacts.save(
            self.id,
            name,
            artifact_object,
            metadata=dict(metadata or {}),
            serialization_function=serialization_function,
        )
        if preview is not None:
            record.preview = str(preview)[:500]
        self._backend.store.put_artifact(record)
        if delete_after_upload and isinstance(artifact_object, str | Path):
            path = Path(artifact_object)
            if path.is_file():
                path.unlink()
        return True

    def get_logger(self) -> Logger:
        """The logger reporting scalars, figures, tables and text to this task."""
        if self._logger is None:
            self._logger = Logger(self.id, self._backend)
        return self._logger

    def execute_remotely(
        self, queue_name: str | None = None, clone: bool = False, exit_process: bool = True
    ) -> Task | None:
        """Stop running here and send this task to ``queue_name`` for an agent to run.

        Inside a run (on an agent or the local runner) it does nothing and returns None, so
        the notebook goes on there. Run interactively, the task keeps the parameters
        connected so far and is enqueued; with ``clone`` a copy is enqueued instead. With
        no ``queue_name`` nothing is enqueued: the task is left a draft (status
        ``created``), as in ClearML. With ``exit_process`` the rest of the notebook (or
        script) does not run here.
        """
        if current.attached_task_id() == self.id:
            return None
        if not clone and not exit_process:
            raise ClearnbError(
                "execute_remotely(clone=False) moves this very task to the queue, so the "
                "process cannot go on with it: pass exit_process=True, or clone=True"
            )
        self.flush()
        if clone:
            target = Task.clone(self, name=self.name)
        else:
            runtime = {k: v for k, v in self._record.runtime.items() if k != "interactive"}
            self._record = self._backend.store.update_task(
                self.id,
                status="created",
                started=None,
                completed=None,
                error=None,
                runtime={**runtime, "sent_from": "execute_remotely"},
            )
            target = self
            atexit.unregister(self._close_at_exit)  # the agent's run completes it, not this one
            with CURRENT.lock:
                if CURRENT.task is self:
                    CURRENT.task = None
        if queue_name:
            Task.enqueue(target, queue_name=queue_name)
        if not exit_process:
            return target
        dispatch.stop_here(target.id, target.name, queue_name or None)

    def close(self) -> None:
        """Finish an interactively started task (``completed``); a no-op inside a run."""
        self.flush()
        record = self.reload()._record
        if record.runtime.get("interactive") and record.status == "running" and not record.worker:
            self.mark_completed()
        with CURRENT.lock:
            if CURRENT.task is self:
                CURRENT.task = None

    def flush(self, wait: bool = False) -> bool:
        """Write reports still buffered by this task's logger, and record the connected
        dicts (parameters, configurations) changed since they were last recorded."""
        if self._logger is not None:
            self._logger.flush()
        self._record_connected()
        return super().flush(wait)

    def _fail_on(self, exc: BaseException) -> None:
        """Record the end of a task started by hand whose code raised ``exc``."""
        record = self.reload()._record
        if isinstance(exc, ExecutedRemotely) or not record.runtime.get("interactive"):
            return  # sent to a queue (or left a draft): not this process's run any more
        if record.status != "running" or record.worker is not None:
            return
        if isinstance(exc, KeyboardInterrupt):
            taskstatus.end(self, "aborted", {"reason": "interrupted (Ctrl-C)"})
        else:
            taskstatus.end(self, "failed", current.error_of(exc))

    def _close_at_exit(self) -> None:
        try:
            self.flush()
            record = self.reload()._record
            if record.status == "running" and record.worker is None:  # not sent to an agent
                self.mark_completed()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.project}/{self.name} [{self.status}]>"


def _with_unused(task: Task, unused: Mapping[str, Any]) -> Task:
    """``task``, with the ``Task.init`` arguments that do nothing here in its runtime."""
    if unused:
        task._record = task._backend.store.update_runtime(
            task.id, compat.UNUSED_KEY, lambda recorded: {**(recorded or {}), **unused}
        )
    return task

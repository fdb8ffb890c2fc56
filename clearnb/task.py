"""The Task API, as ClearML spells it, for step notebooks and for controllers.

Inside a notebook run by clearnb, ``Task.init()`` attaches to the run's task (its id is in
the kernel's environment); run interactively in Jupyter it records a new task and
registers the notebook as a template under its project and name. Which task is this
process's is :mod:`clearnb.current`'s; preparing, queueing and following a task is
:mod:`clearnb.dispatch`'s; the logger is :mod:`clearnb.logger`'s.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from clearnb import current, dispatch
from clearnb.artifacts import Artifact
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.connected import ConnectedSections
from clearnb.current import CURRENT
from clearnb.dispatch import ExecutedRemotely
from clearnb.errors import ClearnbError, ParameterError, TaskFailedError, TaskNotFoundError
from clearnb.logger import Logger
from clearnb.notebook.files import code_fingerprint, load_notebook
from clearnb.notebook.parameters import (
    GENERAL,
    DeclaredParameter,
    NotebookParameters,
    coerce,
    split_key,
)
from clearnb.store.records import TaskRecord
from clearnb.tasktypes import TaskTypes

__all__ = ["Artifact", "ExecutedRemotely", "Task", "TaskStatusEnum", "TaskTypes"]

log = logging.getLogger(__name__)

M = TypeVar("M")


class TaskStatusEnum:
    """Status names of a task."""

    created = "created"
    queued = "queued"
    running = "running"
    in_progress = "running"
    completed = "completed"
    failed = "failed"
    aborted = "aborted"
    stopped = "aborted"


class Task:
    """One run of a notebook or function, or a draft/template of one."""

    TaskStatusEnum = TaskStatusEnum
    TaskTypes = TaskTypes

    def __init__(self, record: TaskRecord, backend: Backend) -> None:
        self._record = record
        self._backend = backend
        self._logger: Logger | None = None
        self._connected = ConnectedSections()

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
        reuse_last_task_id: bool = True,
        continue_last_task: bool = False,
        output_uri: str | None = None,
        auto_connect_arg_parser: bool = True,
        auto_connect_frameworks: bool = True,
        auto_resource_monitoring: bool = True,
        auto_connect_streams: bool = True,
        notebook: str | os.PathLike[str] | None = None,
    ) -> Task:
        """The task of this run: attach to it when clearnb runs the notebook, else record one.

        Run interactively, the notebook (found from the kernel's environment, or given as
        ``notebook=``) is registered as a template under ``project_name``/``task_name``.
        ``output_uri`` and the ``auto_*`` flags are accepted for compatibility.
        """
        with CURRENT.lock:
            backend = Backend.for_config(Config.from_env())
            attached = current.attached_task_id()
            if attached:
                existing = CURRENT.task
                if existing is not None and existing.id == attached:
                    return existing
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
                return task
            existing = CURRENT.task
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
                return existing
            record = current.interactive_record(project_name, task_name, task_type, tags, notebook)
            task = cls(backend.store.create_task(record), backend)
            CURRENT.task = task
            current.watch_cells(task.flush)
            current.watch_failures(task._fail_on)
            atexit.register(task._close_at_exit)
            return task

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
        """A task by id, or the newest with this project and name."""
        backend = Backend.for_config()
        if task_id:
            return cls(backend.store.get_task(task_id), backend)
        if not project_name and not task_name:
            raise ClearnbError(
                "Task.get_task needs task_id=..., or project_name=... and/or task_name=..."
            )
        found = backend.store.find_tasks(
            project=project_name, name=task_name, tags=tags or None, limit=1
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
        project_name: str | None = None,
        task_name: str | None = None,
        tags: Sequence[str] | None = None,
        task_filter: Mapping[str, Any] | None = None,
    ) -> list[Task]:
        """Tasks by ids, or every task matching project, name and tags (newest first)."""
        backend = Backend.for_config()
        if task_ids:
            return [cls(backend.store.get_task(i), backend) for i in task_ids]
        status = (task_filter or {}).get("status")
        records = backend.store.find_tasks(
            project=project_name, name=task_name, tags=tags or None, status=status
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
        )
        return cls(backend.store.create_task(record), backend)

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
    def artifacts(self) -> dict[str, Artifact]:
        """The task's artifacts by name, read fresh from the store."""
        stored = self._backend.store.get_artifacts(self.id)
        return {name: Artifact(rec, self._backend.artifacts) for name, rec in stored.items()}

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
        """Add tags to the task."""
        new = [tags] if isinstance(tags, str) else list(tags)
        merged = list(dict.fromkeys([*self._record.tags, *new]))
        self._record = self._backend.store.update_task(self.id, tags=merged)

    def reload(self) -> Task:
        """Read the task again from the store; returns self."""
        self._record = self._backend.store.get_task(self.id)
        return self

    # -- parameters ---------------------------------------------------------------------------

    def connect(self, mutable: M, name: str | None = None) -> M:
        """Connect a dict (or argparse Namespace) as parameter section ``name``.

        Values the task holds for that section (overrides of a run, or of a cloned
        draft) are written into ``mutable`` in place, typed like its current values; then
        the whole section is recorded with the task. A task started by hand
        (``Task.init`` outside a run) has no overrides: ``mutable`` is recorded as it is,
        so editing the dict and running the cell again records the new values. Later
        changes to ``mutable`` are recorded too (at the end of each cell, when the run ends
        and when parameters are read), as ClearML records them. Returns ``mutable``.
        """
        section = name or GENERAL
        values: MutableMapping[Any, Any]
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
        if record.runtime.get("interactive"):
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

    def get_parameters_as_dict(self) -> dict[str, dict[str, Any]]:
        """All parameters by section: ``{"Section": {"name": value}}``."""
        return json.loads(json.dumps(self._record_connected()._record.parameters))  # type: ignore[no-any-return]

    def get_parameter(self, name: str, default: Any = None) -> Any:
        """One parameter by ``"Section/name"`` (a bare name means ``General``)."""
        section, key = split_key(name)
        return self._record_connected()._record.parameters.get(section, {}).get(key, default)

    def set_parameters(self, parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Replace all parameters with ``{"Section/name": value}`` (bare names: ``General``)."""
        grouped = _group({**(parameters or {}), **kwargs})
        self._record = self._backend.store.update_task(self.id, parameters=grouped)

    def update_parameters(self, parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set or change some parameters, keeping the others."""
        for section, values in _group({**(parameters or {}), **kwargs}).items():
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
        clean = {str(k): _jsonable(v) for k, v in values.items()}
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
        back with ``artifacts[name].get(deserialization_function=...)``)."""
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

    def get_reported_scalars(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        """Reported scalars: ``{title: {series: {"x": iterations, "y": values}}}``."""
        self.flush()
        result: dict[str, dict[str, dict[str, list[float]]]] = {}
        for row in self._backend.store.get_scalars(self.id):
            series = result.setdefault(row.title, {}).setdefault(row.series, {"x": [], "y": []})
            series["x"].append(row.iteration)
            series["y"].append(row.value)
        return result

    # -- status --------------------------------------------------------------------------------

    def mark_started(self, force: bool = False) -> None:
        """Set status ``running``."""
        self._record = self._backend.store.update_task(
            self.id, status="running", started=time.time()
        )

    def mark_completed(self, ignore_errors: bool = True, status_message: str | None = None) -> None:
        """Set status ``completed``."""
        self._finish("completed", None)

    def mark_failed(self, ignore_errors: bool = True, status_reason: str | None = None) -> None:
        """Set status ``failed`` with ``status_reason``."""
        self._finish("failed", {"reason": status_reason or "marked failed"})

    def mark_stopped(self, force: bool = False, status_message: str | None = None) -> None:
        """Set status ``aborted``; a task running on an agent is stopped by that agent."""
        record = self.reload()._record
        if record.worker is not None and record.status == "running":
            self._record = self._backend.store.request_abort(
                self.id, status_message or "stopped by the user"
            )
            return
        self._finish("aborted", {"reason": status_message or "stopped"})

    # -- queues ------------------------------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        task: Task | str,
        queue_name: str | None = None,
        queue_id: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Send ``task`` to a queue; an agent serving it runs it (``clearnb agent``).

        The task must be a draft (``Task.clone``, ``Task.create``) or, with ``force``, a
        task that ended, which is reset. Bad parameters are refused here, before queueing.
        Warns (:class:`~clearnb.dispatch.QueueWarning`) if no agent serves the queue.
        """
        name = queue_name or queue_id
        if not name:
            raise ClearnbError(
                "Task.enqueue needs a queue: Task.enqueue(task, queue_name='default')"
            )
        backend = task._backend if isinstance(task, Task) else Backend.for_config()
        task_id = task.id if isinstance(task, Task) else task
        record = dispatch.enqueue(backend, task_id, name, force=force)
        if isinstance(task, Task):
            task._record = record if record.id == task.id else task.reload()._record
        return {"queued": 1, "task": record.id, "queue": name, "status": record.status}

    def wait_for_status(
        self,
        status: Iterable[str] = ("completed", "aborted"),
        raise_on_status: Iterable[str] | None = ("failed",),
        check_interval_sec: float = 0.5,
        timeout: float | None = None,
    ) -> Task:
        """Wait until the task reaches one of ``status``; returns it, reloaded.

        Reaching one of ``raise_on_status`` raises :class:`TaskFailedError` with the
        reason. ``timeout`` (seconds) raises :class:`TimeoutError` when it runs out.
        """
        wanted = {TaskStatusEnum.__dict__.get(s, s) for s in status}
        raising = {TaskStatusEnum.__dict__.get(s, s) for s in raise_on_status or ()}
        record = dispatch.follow(
            self._backend,
            self.id,
            until=wanted | raising,
            timeout=timeout,
            interval=check_interval_sec,
        )
        self._record = record
        if record.status in raising:
            reason = (record.error or {}).get("reason", record.status)
            raise TaskFailedError(
                f"Task {record.id} ({record.name}) ended {record.status}: {reason}",
                task_id=record.id,
                error=record.error,
            )
        if record.status not in wanted:
            raise TimeoutError(
                f"Task {record.id} ({record.name}) is still {record.status} after {timeout:g} s"
            )
        return self

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
        """Write reports still buffered by this task's logger."""
        if self._logger is not None:
            self._logger.flush()
        self._record_connected()
        return True

    def _finish(self, status: str, error: dict[str, Any] | None) -> None:
        self.flush()
        self._record = self._backend.store.update_task(
            self.id, status=status, error=error, completed=time.time()
        )

    def _fail_on(self, exc: BaseException) -> None:
        """Record the end of a task started by hand whose code raised ``exc``."""
        record = self.reload()._record
        if isinstance(exc, ExecutedRemotely) or not record.runtime.get("interactive"):
            return  # sent to a queue (or left a draft): not this process's run any more
        if record.status != "running" or record.worker is not None:
            return
        if isinstance(exc, KeyboardInterrupt):
            self._finish("aborted", {"reason": "interrupted (Ctrl-C)"})
        else:
            self._finish("failed", current.error_of(exc))

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


def _group(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = split_key(str(key))
        grouped.setdefault(section, {})[name] = _jsonable(value)
    return grouped


def _jsonable(value: Any) -> Any:
    """``value`` as something JSON can store (numbers of numpy become Python numbers)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)

"""Run ONE notebook as a Task: validate, parameterize, execute, keep the evidence.

Everything that can be checked is checked before a kernel is touched (the notebook exists
and is a notebook, overrides name declared parameters and convert to their types). The run
itself is papermill's, through the ``clearnb`` engine and a :class:`KernelPool`; whatever
happens in the notebook, the task ends ``completed`` or ``failed`` with the reason and the
executed notebook stored. A Python script runs as the notebook it reads as, with its own
``sys.argv`` and ``__file__``, and leaves an executed ``.ipynb`` all the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearnb import events
from clearnb.artifacts.storage import EXECUTED_NOTEBOOK
from clearnb.backend import Backend
from clearnb.config import TASK_ID_ENV, Config, make_private_folder, make_private_tree
from clearnb.dispatch import prepare_run
from clearnb.errors import ClearnbError, TaskFailedError
from clearnb.events import EventCallback, RunEvent
from clearnb.execution.capture import Evidence, collect_evidence, strip_ansi
from clearnb.execution.context import ABORTED, KERNEL_DIED, MEMORY_LIMIT, TIME_LIMIT, RunContext
from clearnb.execution.kernels import DEFAULT_KERNEL, KernelPool
from clearnb.execution.limits import (
    format_size,
    log_tail,
    output_limit,
    parse_count,
    parse_memory_limit,
    parse_seconds,
)
from clearnb.notebook.files import load_notebook
from clearnb.notebook.scripts import is_script
from clearnb.processes import controller_identity
from clearnb.scratch import scratch_folder
from clearnb.store import Store, pipelines
from clearnb.store.queues import OWNER_KEY
from clearnb.store.records import EventRecord, ReportRecord, TaskRecord
from clearnb.task import Task

if TYPE_CHECKING:
    from papermill.exceptions import PapermillExecutionError

log = logging.getLogger(__name__)

NOTEBOOK_ARTIFACT = EXECUTED_NOTEBOOK
"""Name of the artifact holding the executed notebook (as ClearML names it)."""
PRELOAD = ("clearnb.task",)
"""Modules imported into pooled kernels ahead of use, so ``Task.init`` is instant."""


class RunHandle:
    """Lets another thread abort a run: ``runner.execute(..., handle=h)``, then ``h.abort()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: RunContext | None = None
        self.reason: str | None = None

    def abort(self, reason: str = "the run was stopped") -> None:
        """Stop the run (now, or as soon as it starts); it ends ``aborted``."""
        with self._lock:
            self.reason = reason
            context = self._context
        if context is not None:
            context.abort(reason)

    def _attach(self, context: RunContext) -> None:
        with self._lock:
            self._context = context
            reason = self.reason
        if reason is not None:
            context.abort(reason)


class NotebookRunner:
    """Runs notebooks as Tasks on pre-started kernels; reuse one for many runs.

    >>> with NotebookRunner() as runner:  # doctest: +SKIP
    ...     task = runner.execute("step.ipynb", parameters={"General/test_size": 0.25})

    ``pool_size`` kernels are kept ready; ``on_event`` receives every :class:`RunEvent`
    of every run (also persisted in the store).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        pool_size: int = 2,
        kernel_name: str = DEFAULT_KERNEL,
        start_timeout: float = 60.0,
        on_event: EventCallback | None = None,
        persist_cell_events: bool = True,
    ) -> None:
        pool_size = parse_count(pool_size, "pool_size")
        start_timeout = parse_seconds(start_timeout, "start_timeout") or 60.0
        self.config = config or Config.from_env()
        self.backend = Backend.for_config(self.config)
        self.start_timeout = start_timeout
        self.on_event = on_event
        self.persist_cell_events = persist_cell_events
        env = dict(os.environ)
        env.update(self.config.environ())
        env.pop(TASK_ID_ENV, None)
        env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        self.pool = KernelPool(
            pool_size,
            kernel_name=kernel_name,
            env=env,
            preload=PRELOAD,
            startup_timeout=start_timeout,
        )

    def start(self) -> NotebookRunner:
        """Start warming kernels now (otherwise done by the first run)."""
        self.pool.start()
        return self

    def close(self) -> None:
        """Stop every kernel of the pool."""
        self.pool.close()

    def __enter__(self) -> NotebookRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one run ------------------------------------------------------------------------------

    def prepare(
        self,
        notebook: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        project_name: str | None = None,
        task_name: str | None = None,
        task: Task | str | None = None,
        tags: Sequence[str] = (),
        parent: str | None = None,
        runtime: Mapping[str, Any] | None = None,
        cache_key: str | None = None,
        strict: bool = True,
    ) -> TaskRecord:
        """Validate a run and record its Task (status ``created``) without executing it.

        See :func:`prepare_run`.
        """
        return prepare_run(
            self.backend,
            notebook,
            parameters,
            project_name=project_name,
            task_name=task_name,
            task=task,
            tags=tags,
            parent=parent,
            runtime=runtime,
            cache_key=cache_key,
            strict=strict,
        )

    def execute(
        self,
        notebook: str | os.PathLike[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        project_name: str | None = None,
        task_name: str | None = None,
        task: Task | str | None = None,
        time_limit: float | None = None,
        memory_limit: float | str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        tags: Sequence[str] = (),
        parent: str | None = None,
        on_event: EventCallback | None = None,
        raise_on_error: bool = False,
        handle: RunHandle | None = None,
        runtime: Mapping[str, Any] | None = None,
        cache_key: str | None = None,
        strict: bool = True,
    ) -> Task:
        """Run ``notebook`` (or the draft ``task``) with ``parameters``; return its Task.

        ``parameters`` are ``{"Section/name": value}`` (a bare name means ``General``).
        ``time_limit`` (seconds) bounds the whole run; ``memory_limit`` (bytes, or a size
        like ``"500MB"``) bounds the memory the kernel and the processes it starts hold
        together. A failed run returns a Task with status ``failed`` and its ``error``;
        with ``raise_on_error`` it raises :class:`TaskFailedError` instead. ``strict``
        refuses an override the notebook does not declare (see :func:`prepare_run`).
        """
        parse_memory_limit(memory_limit)
        time_limit = parse_seconds(time_limit)
        record = self.prepare(
            notebook,
            parameters,
            project_name=project_name,
            task_name=task_name,
            task=task,
            tags=tags,
            parent=parent,
            runtime=runtime,
            cache_key=cache_key,
            strict=strict,
        )
        return self.run_prepared(
            record,
            time_limit=time_limit,
            memory_limit=memory_limit,
            cwd=cwd,
            on_event=on_event,
            raise_on_error=raise_on_error,
            handle=handle,
        )

    def run_prepared(
        self,
        record: TaskRecord,
        *,
        time_limit: float | None = None,
        memory_limit: float | str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        on_event: EventCallback | None = None,
        raise_on_error: bool = False,
        handle: RunHandle | None = None,
        keep_settled: bool = False,
    ) -> Task:
        """Execute a Task recorded by :meth:`prepare` (``handle`` can abort it).

        ``time_limit`` and ``memory_limit`` are those of :meth:`execute`. With
        ``keep_settled``, a Task that someone else ended while it ran (its worker was
        declared lost) keeps that status; the run only adds its evidence.
        """
        memory_bytes = parse_memory_limit(memory_limit)
        time_limit = parse_seconds(time_limit)
        store = self.backend.store
        assert record.notebook is not None
        notebook = Path(record.notebook)
        script = is_script(notebook)
        work_dir = self.config.home / "runs" / record.id
        make_private_folder(work_dir)
        output_path = work_dir / notebook.with_suffix(".ipynb").name
        started = time.time()
        store.merge_runtime(
            record.id,
            {OWNER_KEY: controller_identity()},  # settled if this process dies mid-run
            status="running",
            started=started,
            output_notebook=str(output_path),
        )

        def emit(kind: str, **payload: Any) -> None:
            self._emit(RunEvent(kind, record.id, payload), on_event)

        emit(events.TASK_STARTED, notebook=str(notebook), name=record.name)
        context = RunContext(
            pool=self.pool,
            env={
                **self.config.environ(),
                TASK_ID_ENV: record.id,
                "JPY_SESSION_NAME": str(notebook),
            },
            cwd=str(Path(cwd).absolute() if cwd else notebook.parent),
            script=str(notebook) if script else None,
            time_limit=time_limit,
            memory_limit=memory_bytes,
            output_limit=output_limit(),
            emit=emit,
        )
        if handle is not None:
            handle._attach(context)
        import papermill  # imported on first use: it pulls in nbformat, nbclient, jsonschema
        from papermill.exceptions import PapermillExecutionError

        error: dict[str, Any] | None = None
        status = "completed"
        try:
            source = _converted(notebook, work_dir) if script else notebook
            papermill.execute_notebook(
                str(source),
                str(output_path),
                parameters=record.runtime.get("injected") or None,
                engine_name="clearnb",
                kernel_name=record.runtime.get("kernel_name"),
                language=record.runtime.get("language"),
                progress_bar=False,
                start_timeout=self.start_timeout,
                run=context,
            )
        except PapermillExecutionError as exc:
            error = _cell_error(exc, context)
            status = "aborted" if exc.ename == ABORTED else "failed"
        except ClearnbError as exc:
            status, error = "failed", {"reason": str(exc), "ename": type(exc).__name__}
        except Exception as exc:
            status = "failed"
            error = {
                "reason": f"the run could not complete: {type(exc).__name__}: {exc}",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": traceback.format_exception(exc),
            }
        except BaseException:
            store.update_task(
                record.id,
                status="aborted",
                completed=time.time(),
                error={"reason": "aborted: the run was interrupted"},
            )
            pipelines.settle(store, record.id, "the controller notebook's run was interrupted")
            emit(events.TASK_FINISHED, status="aborted")
            raise
        facts: dict[str, Any] = {"kernel_pid": context.kernel.pid if context.kernel else None}
        if context.kernel is not None:
            facts["kernel_start_seconds"] = round(context.kernel.started, 3)
        if memory_bytes is not None:
            facts["memory_limit"] = memory_bytes
            facts["memory_peak"] = context.memory_peak
        finished = self._keep_evidence(
            record, output_path, status, error, started, facts, keep_settled
        )
        emit(events.TASK_FINISHED, status=finished.status, error=finished.error)
        result = Task.from_record(finished, self.backend)
        if raise_on_error and finished.status == "failed":
            reason = (finished.error or {}).get("reason", "failed")
            raise TaskFailedError(
                f"Task {finished.id} ({finished.name}) failed: {reason}. Its executed notebook: "
                f"{finished.output_notebook}",
                task_id=finished.id,
                error=finished.error,
            )
        return result

    # -- helpers ------------------------------------------------------------------------------

    def _emit(self, event: RunEvent, on_event: EventCallback | None) -> None:
        if self.persist_cell_events or event.kind in (events.TASK_STARTED, events.TASK_FINISHED):
            try:
                self.backend.store.add_event(
                    EventRecord(event.task_id, event.kind, event.payload, timestamp=event.timestamp)
                )
            except Exception:
                log.warning("could not persist event %s", event.kind, exc_info=True)
        for callback in (self.on_event, on_event):
            if callback is not None:
                try:
                    callback(event)
                except Exception:
                    log.warning("event callback raised", exc_info=True)

    def _keep_evidence(
        self,
        record: TaskRecord,
        output_path: Path,
        status: str,
        error: dict[str, Any] | None,
        started: float,
        facts: Mapping[str, Any],
        keep_settled: bool = False,
    ) -> TaskRecord:
        """Store the executed notebook, figures, streams and timings; set the final status
        (with ``keep_settled``, not over one someone else recorded meanwhile)."""
        backend = self.backend
        store, artifacts = backend.store, backend.artifacts
        runtime = dict(facts)  # the keys this run adds; the Task's other keys are kept
        output_url: str | None = str(output_path) if output_path.exists() else None
        try:
            if output_path.exists():
                import nbformat

                executed = nbformat.read(output_path, as_version=4)  # type: ignore[no-untyped-call]
                evidence = collect_evidence(executed)
                self._store_evidence(record.id, evidence, output_path)
                runtime["cells"] = evidence.cells
                runtime["notebook_duration"] = evidence.duration
                stored = artifacts.save(
                    record.id, NOTEBOOK_ARTIFACT, output_path, metadata={"executed": True}
                )
                store.put_artifact(stored)
                output_url = stored.url
        except Exception as exc:
            log.warning("could not store the evidence of task %s", record.id, exc_info=True)
            if status == "completed":
                status = "failed"
                error = {
                    "reason": f"the run finished but its outputs could not be stored: {exc}",
                    "ename": type(exc).__name__,
                    "evalue": str(exc),
                }
        with contextlib.suppress(OSError):  # papermill wrote the notebook with the umask's mode
            make_private_tree(output_path.parent)
        completed = time.time()
        runtime["duration"] = completed - started
        if status != "completed":  # a pipeline the notebook ran cannot finish any more
            pipelines.settle(store, record.id, f"the controller notebook's run ended {status}")
        return record_end(
            store,
            record.id,
            runtime,
            keep_final=keep_settled,
            status=status,
            error=error,
            completed=completed,
            output_notebook=output_url,
        )

    def _store_evidence(self, task_id: str, evidence: Evidence, output_path: Path) -> None:
        store, artifacts = self.backend.store, self.backend.artifacts
        if evidence.figures:
            with scratch_folder(self.config.cache_dir, "figures") as folder:
                for figure in evidence.figures:
                    file = Path(folder) / f"{figure.name}.{figure.extension}"
                    file.write_bytes(figure.data)
                    stored = artifacts.save(
                        task_id,
                        figure.name,
                        _as_image(file),
                        metadata={"figure": True, "cell_index": figure.cell_index},
                    )
                    store.put_artifact(stored)
        for stream, text in (("stdout", evidence.stdout), ("stderr", evidence.stderr)):
            if text:
                payload = {"text": log_tail(text), "characters": len(text)}
                store.add_report(ReportRecord(task_id, "log", title=stream, payload=payload))


def _converted(script: Path, work_dir: Path) -> Path:
    """The notebook of ``script`` written in the run's folder, for papermill to run.

    It is read again here (not taken from when the run was prepared) so that the run
    executes the file as it is now, as it does a notebook.
    """
    import nbformat

    converted = work_dir / f"{script.stem}.converted.ipynb"
    nbformat.write(load_notebook(script), converted)  # type: ignore[no-untyped-call]
    return converted


def _as_image(file: Path) -> Any:
    """A PNG or JPEG as a PIL image (stored by the figure codec, loads as an image)."""
    if file.suffix in (".png", ".jpg"):
        try:
            from PIL import Image

            with Image.open(file) as image:
                image.load()
                return image.copy()
        except Exception:
            log.debug("could not read %s as an image", file, exc_info=True)
    return file


def _cell_error(exc: PapermillExecutionError, context: RunContext) -> dict[str, Any]:
    ename, evalue = str(exc.ename), str(exc.evalue)
    where = f"cell In [{exc.exec_count}]" if exc.exec_count else f"cell {exc.cell_index}"
    own = context.notebook_code_cells or []
    if exc.cell_index in own:  # as the notebook's author counts: its own code cells
        number = own.index(exc.cell_index) + 1
        shown = ""
        if exc.exec_count and exc.exec_count != number:
            shown = f" (In [{exc.exec_count}] in the executed notebook)"
        where = f"code cell {number}{shown}"
    if context.cell_count and exc.cell_index is not None:
        position = f"cell {exc.cell_index + 1} of {context.cell_count}"
    else:
        position = where
    how = f" ({context.detail})" if context.detail else ""
    if ename == KERNEL_DIED:
        reason = f"the kernel died{how} while running {position}"
    elif ename == TIME_LIMIT:
        reason = (
            f"the run exceeded its time limit of {context.time_limit:g} s while running "
            f"{position}; the kernel was stopped"
        )
    elif ename == MEMORY_LIMIT and context.memory_limit is not None:
        reason = (
            f"the kernel used {context.detail}, over the step's memory limit of "
            f"{format_size(context.memory_limit)}, while running {position}; the kernel "
            "was stopped"
        )
    elif ename == ABORTED:
        reason = f"aborted while running {position}: {evalue}"
    else:
        reason = f"{where} raised {ename}: {evalue}"
    return {
        "reason": reason,
        "cell_index": exc.cell_index,
        "execution_count": exc.exec_count,
        "ename": ename,
        "evalue": evalue,
        "traceback": [strip_ansi(line) for line in (exc.traceback or [])],
        "source": exc.source,
    }


def execute_notebook(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    project_name: str | None = None,
    task_name: str | None = None,
    time_limit: float | None = None,
    memory_limit: float | str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    tags: Sequence[str] = (),
    raise_on_error: bool = False,
    config: Config | None = None,
) -> Task:
    """Run one notebook as a new Task with ``parameters`` (``{"Section/name": value}``).

    For many runs, keep a :class:`NotebookRunner` open instead: its kernels are started
    ahead of need.
    """
    with NotebookRunner(config, pool_size=0) as runner:
        return runner.execute(
            notebook,
            parameters,
            project_name=project_name,
            task_name=task_name,
            time_limit=time_limit,
            memory_limit=memory_limit,
            cwd=cwd,
            tags=tags,
            raise_on_error=raise_on_error,
        )


END_ATTEMPTS = 4
"""How many times the end of a run is written before it is recorded as failed to store."""


def record_end(store: Store, task_id: str, runtime: dict[str, Any], **fields: Any) -> TaskRecord:
    """Store the end of run ``task_id``: retried (the store may be busy or full for a
    moment); if it still cannot be written, the task is failed with that reason in a
    smaller write, so it never stays ``running``. Raises if even that cannot be stored."""
    delay = 0.2
    for attempt in range(END_ATTEMPTS):
        try:
            return store.merge_runtime(task_id, runtime, **fields)
        except ClearnbError as exc:
            log.warning("could not store the end of task %s (attempt %d)", task_id, attempt + 1)
            failure = exc
            time.sleep(delay)
            delay *= 2
    reason = f"the run ended {fields.get('status')}, but its end could not be stored: {failure}"
    return store.update_task(
        task_id,
        status="failed",
        completed=fields.get("completed") or time.time(),
        error={"reason": reason, "ename": type(failure).__name__},
    )

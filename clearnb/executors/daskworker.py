"""The worker side of the Dask executor: a kernel pool on every worker, and one step run there.

Kernels never run inside a Dask worker's process: :class:`RunnerPlugin`, registered by the
controller, starts a :class:`~clearnb.execution.runner.NotebookRunner` (its kernels are
processes of their own, pre-started) when a worker takes the plugin, and closes it with the
worker. :func:`run_task` is all the controller submits, with the id of a prepared Task: the
worker claims that Task in the store (a Task Dask hands out twice, after a worker died, runs
once), runs it on the plugin's runner, and the runner stores its events, which the
controller follows. While it runs, a heartbeat renews the worker's lease on the Task and
carries abort requests to its kernel, as an agent's heartbeat does.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin, get_worker

from clearnb import events
from clearnb.dispatch import reachable_notebook
from clearnb.errors import ClearnbError
from clearnb.events import RunEvent
from clearnb.execution.runner import NotebookRunner, RunHandle
from clearnb.executors.dasksettings import WORKER_LOST, WorkerSettings, cell_text, sqlite_refusal
from clearnb.store.queues import DASK_WORKER_PREFIX

if TYPE_CHECKING:
    from distributed import Worker

log = logging.getLogger(__name__)


class RunnerPlugin(WorkerPlugin):
    """Keeps a :class:`NotebookRunner` with one pre-started kernel per worker thread on
    each Dask worker, from the plugin's setup to the worker's end."""

    idempotent = True  # a second controller on the same store shares the runner

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.name = settings.plugin_name
        self.address = ""
        self.host = ""
        self.refusal: str | None = None
        self.runner: NotebookRunner | None = None
        self._lock = threading.Lock()
        self._running: dict[str, RunHandle] = {}
        self._cells: dict[str, tuple[int, int]] = {}
        self._stopping = threading.Event()
        self._beat: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:  # what travels to the workers
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        RunnerPlugin.__init__(self, state["settings"])

    @property
    def worker_id(self) -> str:
        """How the store names this worker while it holds a step."""
        return DASK_WORKER_PREFIX + self.address

    def setup(self, worker: Worker) -> None:
        """Start the kernel pool (in the background) and the heartbeat."""
        self.address = str(worker.address)
        self.host = socket.gethostname()
        self.refusal = sqlite_refusal(
            self.settings.store_url, self.settings.controller_host, self.host
        )
        if self.refusal is not None:  # opening the store here would make a stray file
            log.error("clearnb runs no step on this worker: %s", self.refusal)
            return
        self.runner = NotebookRunner(
            self.settings.config(self.host),
            pool_size=max(1, worker.state.nthreads),
            on_event=self._seen,
        ).start()
        # papermill takes about 2 s to import: not on the first step's time
        threading.Thread(
            target=importlib.import_module, args=("papermill",), name="clearnb import", daemon=True
        ).start()
        self._beat = threading.Thread(
            target=self._heartbeat_loop, name="clearnb heartbeat", daemon=True
        )
        self._beat.start()

    def teardown(self, worker: Worker) -> None:
        """Fail the steps still running here (the worker closes), then stop the kernels."""
        self._stopping.set()
        runner, self.runner = self.runner, None
        if runner is None:
            return
        with self._lock:
            running = list(self._running)
        stream = getattr(getattr(worker, "batched_stream", None), "comm", None)
        why = "lost its scheduler" if stream is None or stream.closed() else "was shut down"
        for task_id in running:
            reason = f"the Dask worker {self.address} {why} while running {self._where(task_id)}"
            try:
                runner.backend.store.fail_unfinished(
                    task_id, {"reason": reason, "ename": WORKER_LOST}, worker=self.worker_id
                )
            except ClearnbError:
                log.warning("could not record the end of task %s", task_id, exc_info=True)
        runner.close()
        if self._beat is not None:
            self._beat.join(5)

    # -- one step --------------------------------------------------------------------------

    def run(self, task_id: str) -> dict[str, Any]:
        """Claim the prepared Task ``task_id`` and run it here; ``{"status": ...}`` once it
        has ended, or ``{"refused": status}`` if it was not waiting for a worker."""
        if self.refusal is not None:
            raise ClearnbError(self.refusal, task_id=task_id)
        runner = self.runner
        if runner is None:
            raise ClearnbError(f"the Dask worker {self.address} is closing", task_id=task_id)
        store = runner.backend.store
        facts = {"dask_worker": self.address, "dask_host": self.host, "worker_pid": os.getpid()}
        record = store.claim_task(task_id, self.worker_id, self.settings.lease, facts)
        if record is None:
            return {"refused": store.get_task(task_id).status}
        handle = RunHandle()
        with self._lock:
            self._running[task_id] = handle
        try:
            record = reachable_notebook(runner.backend, record)
            limit = record.runtime.get("time_limit")
            task = runner.run_prepared(
                record,
                time_limit=float(limit) if limit else None,
                memory_limit=record.runtime.get("memory_limit"),
                handle=handle,
                keep_settled=True,
            )
            return {"status": task.status}
        except Exception as exc:
            log.exception("the Dask worker could not run task %s", task_id)
            reason = f"the Dask worker {self.address} could not run it: {type(exc).__name__}: {exc}"
            store.fail_unfinished(
                task_id, {"reason": reason, "ename": type(exc).__name__}, worker=self.worker_id
            )
            return {"status": "failed"}
        finally:
            with self._lock:
                self._running.pop(task_id, None)
                self._cells.pop(task_id, None)
            store.release_task(task_id, self.worker_id)

    def _seen(self, event: RunEvent) -> None:
        if event.kind == events.CELL_STARTED:
            with self._lock:
                self._cells[event.task_id] = (
                    int(event.payload.get("index") or 0),
                    int(event.payload.get("count") or 0),
                )

    def _where(self, task_id: str) -> str:
        with self._lock:
            cell = self._cells.get(task_id)
        return cell_text(cell)

    # -- heartbeat -------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat):
            runner = self.runner
            with self._lock:
                running = dict(self._running)
            if runner is None or not running:
                continue
            try:
                answers = runner.backend.store.renew_leases(
                    self.worker_id, list(running), self.settings.lease
                )
            except ClearnbError:
                log.warning("heartbeat failed", exc_info=True)
                continue
            for task_id, reason in answers.items():
                handle = running.get(task_id)
                if reason is not None and handle is not None and handle.reason is None:
                    log.info("stopping task %s: %s", task_id, reason)
                    handle.abort(reason)


def run_task(plugin_name: str, task_id: str) -> dict[str, Any]:
    """Run the prepared Task ``task_id`` on this worker's runner: what the controller
    submits to Dask (only ids travel; the Task, its notebook and results are in the store
    and the artifact storage)."""
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, RunnerPlugin):
        raise ClearnbError(
            f"the Dask worker {worker.address} has no clearnb runner ({plugin_name}): "
            "is clearnb installed in the workers' environment?",
            task_id=task_id,
        )
    return plugin.run(task_id)

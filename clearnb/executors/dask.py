"""Steps run on a Dask distributed cluster: submitted by id, followed through the store.

:class:`DaskCluster` is a run's connection to one cluster (a scheduler's address, a
``Client`` or cluster object given, or a ``LocalCluster`` of worker processes started
here), opened on first need; it registers the :mod:`~clearnb.executors.daskworker` plugin
that keeps a kernel pool on every worker. :class:`DaskExecutor` runs one step: the step is
prepared as a Task in the store (as for a queue), its id is submitted to Dask, and the
controller follows the Task through the store's events exactly as it follows a Task on an
agent, so live progress reaches listeners the same way. Meanwhile it watches what Dask
knows: a worker that died, a lost scheduler, a resource no worker has.

``distributed`` is an optional dependency (``pip install 'clearnb[dask]'``), imported here
only when a run uses Dask.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from clearnb import events as run_events
from clearnb.backend import Backend
from clearnb.dispatch import UNSERVED_REMINDER, prepare_run, ship_notebook
from clearnb.errors import ClearnbError, MissingDependencyError
from clearnb.events import RunEvent
from clearnb.executors.base import StepRequest
from clearnb.executors.choice import ExecutorChoice
from clearnb.executors.dasksettings import WORKER_LOST, WorkerSettings, cell_text, sqlite_refusal
from clearnb.executors.queue import follow
from clearnb.store.queues import DASK_WORKER_PREFIX
from clearnb.store.records import TaskRecord
from clearnb.task import Task

# distributed's Client and Future are only partly typed: they are held as Any here
Client = Any
Future = Any

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
"""Seconds to reach a scheduler before the run's steps fail with the reason."""
WORKERS_FRESH_FOR = 0.5
"""Seconds the scheduler's list of workers is taken as current."""
INSTALL_HINT = "pip install 'clearnb[dask]'"


def import_distributed() -> Any:
    """The ``distributed`` package, or an error naming the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"running steps on Dask needs the distributed package: {INSTALL_HINT} ({exc})",
            extra="dask",
        ) from exc
    return distributed


def unserved_resource_message(resource: str) -> str:
    """What a user is told when a step needs a resource no Dask worker has."""
    return (
        f"no Dask worker has the resource {resource!r}: the step stays queued until one "
        f"does. Start one with it: dask worker SCHEDULER --resources {resource}=1"
    )


class DaskCluster:
    """A run's connection to one Dask cluster, opened on first need and shared by its steps.

    ``lease`` and ``heartbeat`` (seconds) are the workers' claim on a running step and how
    often they renew it (abort requests arrive with the heartbeat).
    """

    def __init__(
        self,
        choice: ExecutorChoice,
        backend: Backend,
        *,
        lease: float | None = None,
        heartbeat: float | None = None,
    ) -> None:
        config = backend.config
        self.choice = choice
        self.backend = backend
        timing = {
            key: value
            for key, value in (("lease", lease), ("heartbeat", heartbeat))
            if value is not None
        }
        self.settings = WorkerSettings(
            store_url=config.store_url,
            artifact_url=config.artifact_url,
            home=str(config.home),
            controller_host=socket.gethostname(),
            **timing,
        )
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._owns_client = False
        self._local_cluster: Any = None
        self._problem: ClearnbError | None = None
        self._closed = False
        self._dashboard: str | None = None
        self._workers: dict[str, Mapping[str, Any]] = {}
        self._workers_at = 0.0
        self._workers_lock = threading.Lock()
        self._hosts: dict[str, str] = {}
        self._avoid: dict[tuple[str | None, str | None], set[str]] = {}
        self._futures: set[Future] = set()

    # -- connection ----------------------------------------------------------------------

    def client(self) -> Client:
        """The connected client (connecting now if needed); a connection that failed
        fails every later call with the same reason, at once."""
        with self._lock:
            if self._closed:
                raise ClearnbError("the run's Dask connection is closed")
            if self._problem is not None:
                raise self._problem
            if self._client is None:
                try:
                    self._client = self._connect()
                except ClearnbError as exc:
                    self._problem = exc
                    raise
                except Exception as exc:
                    self._problem = ClearnbError(
                        f"cannot use the Dask cluster {self.where}: {type(exc).__name__}: {exc}",
                        executor=self.choice.url,
                    )
                    raise self._problem from exc
            return self._client

    def warm(self) -> None:
        """Connect now (and let the workers start their kernels) rather than at the first
        step."""
        self.client()

    @property
    def where(self) -> str:
        """The scheduler, as a user names it."""
        return self.choice.address or "started on this machine"

    @property
    def address(self) -> str | None:
        """The scheduler's address, once connected."""
        client = self._client
        return str(client.scheduler.address) if client is not None else self.choice.address

    @property
    def dashboard_link(self) -> str | None:
        """The address of the cluster's dashboard, once connected (None without one)."""
        return self._dashboard

    def facts(self) -> dict[str, Any]:
        """What the run's Task records of the cluster."""
        return {
            "kind": "dask",
            "executor": self.choice.url,
            "scheduler": self.address,
            "dashboard": self.dashboard_link,
        }

    def _connect(self) -> Client:
        distributed = import_distributed()  # before the worker module, which needs it
        from clearnb.executors.daskworker import RunnerPlugin

        given = self.choice.cluster
        if isinstance(given, distributed.Client):
            client = given
        elif given is not None:  # a cluster object: LocalCluster, SLURMCluster, ...
            client = distributed.Client(given, set_as_default=False)
            self._owns_client = True
        elif self.choice.address is None:
            self._local_cluster = distributed.LocalCluster(
                processes=True, threads_per_worker=1, dashboard_address=":0"
            )
            client = distributed.Client(self._local_cluster, set_as_default=False)
            self._owns_client = True
        else:
            try:
                client = distributed.Client(
                    self.choice.address, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
            except OSError as exc:
                raise ClearnbError(
                    f"cannot reach the Dask scheduler at {self.choice.address} ({exc}); "
                    "start it (dask scheduler) or pass the address it listens on",
                    executor=self.choice.url,
                ) from exc
            self._owns_client = True
        try:
            self._learn_hosts(client, None)
            client.register_plugin(RunnerPlugin(self.settings))
        except BaseException:
            self._close_owned(client)
            raise
        try:
            self._dashboard = str(client.dashboard_link) or None
        except Exception:  # no dashboard: bokeh is not installed where the scheduler runs
            self._dashboard = None
        return client

    def _learn_hosts(self, client: Client, addresses: list[str] | None) -> None:
        """Note the host of each worker (all, or ``addresses``); refuse a SQLite store that
        a worker on another host cannot share."""
        hosts: dict[str, str] = client.run(socket.gethostname, workers=addresses)
        self._hosts.update(hosts)
        for host in sorted(set(hosts.values())):
            refusal = sqlite_refusal(self.settings.store_url, self.settings.controller_host, host)
            if refusal is not None:
                raise ClearnbError(refusal, store_url=self.settings.store_url, worker_host=host)

    # -- what the scheduler knows --------------------------------------------------------

    def workers(self, *, fresh: bool = False) -> Mapping[str, Mapping[str, Any]]:
        """The scheduler's workers by address, at most :data:`WORKERS_FRESH_FOR` s old."""
        with self._workers_lock:
            now = time.monotonic()
            if fresh or now - self._workers_at > WORKERS_FRESH_FOR:
                info = self.client().scheduler_info(n_workers=-1)
                self._workers = dict(info.get("workers", {}))
                self._workers_at = now
            return self._workers

    def ships_notebooks(self) -> bool:
        """True if a worker may be on another host (it reads the notebook from the
        artifact storage); new workers' hosts are asked for."""
        unknown = [address for address in self.workers() if address not in self._hosts]
        if unknown:
            try:
                self._learn_hosts(self.client(), unknown)
            except ClearnbError:
                raise
            except Exception:  # a worker that left meanwhile: it takes no step
                log.debug("could not ask Dask workers for their host", exc_info=True)
                return True
        here, workers = self.settings.controller_host, self.workers()
        if not workers:  # the worker that will take it is not known yet
            return True
        return any(self._hosts.get(address) != here for address in workers)

    def avoid(self, step: tuple[str | None, str | None], address: str) -> None:
        """The next attempts of ``step`` (pipeline id, name) prefer workers other than
        ``address``, where an attempt was lost."""
        with self._lock:
            self._avoid.setdefault(step, set()).add(address)

    def placement(self, step: tuple[str | None, str | None]) -> dict[str, Any]:
        """Where Dask should prefer to run ``step``: not where it was lost before."""
        with self._lock:
            avoided = set(self._avoid.get(step, ()))
        if not avoided:
            return {}
        others = [address for address in self.workers() if address not in avoided]
        return {"workers": others, "allow_other_workers": True} if others else {}

    # -- submitting ----------------------------------------------------------------------

    def executor(self, resource: str | None) -> DaskExecutor:
        """An executor for steps that need the worker resource ``resource`` (or none)."""
        return DaskExecutor(self, resource)

    def submit(self, task_id: str, resource: str | None, placement: Mapping[str, Any]) -> Future:
        """Hand the prepared Task ``task_id`` to Dask (never retried by Dask: a retry is
        a new Task, run by the pipeline's retry policy)."""
        from clearnb.executors.daskworker import run_task

        client = self.client()
        future: Future = client.submit(
            run_task,
            self.settings.plugin_name,
            task_id,
            key=f"clearnb-step-{task_id}",
            pure=False,
            retries=0,
            resources={resource: 1} if resource else None,
            **placement,
        )
        with self._lock:
            self._futures.add(future)
        return future

    def forget(self, future: Future) -> None:
        """Release ``future`` (its step has ended)."""
        with self._lock:
            self._futures.discard(future)
        future.release()

    def close(self) -> None:
        """Cancel what is still submitted; close the client and the cluster this run
        started (a cluster or client given is left running, its kernels ready)."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            futures, self._futures = list(self._futures), set()
        if client is None:
            return
        if futures:
            try:
                client.cancel(futures)
            except Exception:
                log.debug("could not cancel Dask futures", exc_info=True)
        self._close_owned(client)

    def _close_owned(self, client: Client) -> None:
        if self._owns_client:
            try:
                client.close(timeout=10)
            except Exception:
                log.debug("the Dask client did not close cleanly", exc_info=True)
        cluster, self._local_cluster = self._local_cluster, None
        if cluster is not None:
            cluster.close(timeout=30)


class DaskExecutor:
    """Runs steps on the workers of a :class:`DaskCluster` that have ``resource`` (a
    step's ``execution_queue``; None: any worker)."""

    def __init__(self, cluster: DaskCluster, resource: str | None = None) -> None:
        self.cluster = cluster
        self.resource = resource

    def execute(self, request: StepRequest) -> Task:
        """Run ``request`` on a Dask worker; return its Task once it has ended."""
        cluster = self.cluster
        backend = cluster.backend
        cluster.client()  # a cluster that cannot be used fails the step before any Task
        runtime = {
            **request.runtime,
            "time_limit": request.time_limit,
            "memory_limit": request.memory_limit,
            "executor": cluster.choice.url,
        }
        if self.resource:
            runtime["dask_resource"] = self.resource
        record = prepare_run(
            backend,
            request.notebook,
            request.overrides,
            project_name=request.project_name,
            task_name=request.task_name,
            task=request.template,
            tags=request.tags,
            parent=request.parent,
            runtime=runtime,
            cache_key=request.cache_key,
            check_kernel_installed=False,
            strict=request.strict,
        )
        store = backend.store
        handle = request.handle
        if handle is not None and handle.reason is not None:
            final = store.update_task(
                record.id, status="aborted", error={"reason": f"aborted: {handle.reason}"}
            )
            return Task.from_record(final, backend)
        if cluster.ships_notebooks():
            ship_notebook(backend, record)
        store.update_task(record.id, status="queued", enqueued=time.time())
        if request.on_event is not None:
            payload = {"executor": "dask", "resource": self.resource}
            request.on_event(RunEvent(run_events.TASK_QUEUED, record.id, payload))
        step = (request.parent, request.task_name)
        future = cluster.submit(record.id, self.resource, cluster.placement(step))
        watch = StepWatch(cluster, record.id, future, request, self.resource)
        future.add_done_callback(watch.ended)
        try:
            final = follow(
                backend,
                record.id,
                on_event=watch.forward,
                handle=handle,
                watch=watch.look,
                pause=watch.pause,
            )
        finally:
            if not future.done():
                future.cancel()
            cluster.forget(future)
        lost_on = watch.lost_worker
        if lost_on is not None:
            cluster.avoid(step, lost_on)
        return Task.from_record(final, backend)

    def close(self) -> None:
        """Nothing of its own to release: the run closes the cluster connection."""


class StepWatch:
    """What the controller checks while one step's Task has not ended: the step's future
    (an error, a lost scheduler), the worker running it (gone: the step failed), and
    whether any worker has the resource it needs."""

    def __init__(
        self,
        cluster: DaskCluster,
        task_id: str,
        future: Future,
        request: StepRequest,
        resource: str | None,
    ) -> None:
        self.cluster = cluster
        self.task_id = task_id
        self.future = future
        self.request = request
        self.resource = resource
        self.cell: tuple[int, int] | None = None
        self.cancelled = False
        self.lost_worker: str | None = None
        """The worker that died while running the step, if one did."""
        now = time.monotonic()
        self._next_look = now
        self._next_unserved = now + 1.0  # a moment for the scheduler to place it
        self._ended = threading.Event()

    def ended(self, future: Future) -> None:
        """The worker's function returned (or Dask gave up on it): look at the Task now."""
        self._ended.set()

    def pause(self, seconds: float) -> None:
        """Wait between two looks; the end of the step's future cuts the wait short, once
        (the Task is final then, so the step ends without waiting for the next look)."""
        if self._ended.wait(seconds):
            self._ended.clear()

    def forward(self, event: RunEvent) -> None:
        """Note the running cell, then pass ``event`` on to the step's listener."""
        if event.kind == run_events.CELL_STARTED:
            self.cell = (int(event.payload.get("index") or 0), int(event.payload.get("count") or 0))
        if self.request.on_event is not None:
            self.request.on_event(event)

    def cancel(self) -> None:
        """Take the step back from Dask (it is stopped, or its worker is gone)."""
        if not self.cancelled:
            self.cancelled = True
            self.future.cancel()

    def look(self, record: TaskRecord) -> bool:
        """One look (see :func:`clearnb.dispatch.follow`); True if it settled the task."""
        handle = self.request.handle
        if handle is not None and handle.reason is not None:
            self.cancel()  # follow() has asked the worker, through the store, to stop
        status = self.future.status
        if status == "error":
            return self._settle(self._error_reason(), "DaskTaskError")
        if status == "cancelled" and not self.cancelled:
            return self._settle(self._lost_scheduler_reason(record), "SchedulerLost")
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + WORKERS_FRESH_FOR
        worker = record.worker or ""
        if record.status == "running" and worker.startswith(DASK_WORKER_PREFIX):
            address = worker.removeprefix(DASK_WORKER_PREFIX)
            gone = address not in self.cluster.workers()
            if gone and address not in self.cluster.workers(fresh=True):
                self.cancel()  # Dask would hand it to another worker, which would refuse it
                reason = f"the Dask worker {address} died while running {cell_text(self.cell)}"
                settled = self.cluster.backend.store.fail_unfinished(
                    self.task_id, {"reason": reason, "ename": WORKER_LOST}, worker=worker
                )
                if settled is not None:
                    self.lost_worker = address
                return True
        if record.status == "queued" and self.resource and now >= self._next_unserved:
            self._check_served()
        return False

    def _check_served(self) -> None:
        assert self.resource is not None
        workers = self.cluster.workers()
        if any(self.resource in (info.get("resources") or {}) for info in workers.values()):
            self._next_unserved = time.monotonic() + 1.0
            return
        message = unserved_resource_message(self.resource)
        log.warning("task %s: %s", self.task_id, message)
        if self.request.on_unserved is not None:
            self.request.on_unserved(message)
        self._next_unserved = time.monotonic() + UNSERVED_REMINDER

    def _settle(self, reason: str, ename: str) -> bool:
        self.cluster.backend.store.fail_unfinished(self.task_id, {"reason": reason, "ename": ename})
        return True

    def _error_reason(self) -> str:
        try:
            error = self.future.exception(timeout=5)
        except Exception as exc:
            error = exc
        return f"Dask could not run it: {type(error).__name__}: {error}"

    def _lost_scheduler_reason(self, record: TaskRecord) -> str:
        where = (
            f"while it ran {cell_text(self.cell)}"
            if record.status == "running"
            else "before a worker took it"
        )
        return (
            f"the Dask scheduler {self.cluster.address} was lost {where}: the controller "
            "lost its connection to it (resume the pipeline once the cluster is back)"
        )

"""The ``/clearnb/api/...`` routes: JSON over the Jupyter server's own authentication.

Every route needs a logged-in user (the server's token or cookie); POST bodies are JSON
and XSRF-checked by the server. A refused request gets ``{"error": "...", "status": N}``
and changes nothing. Store reads and writes run on worker threads, so a busy store never
holds up the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
from jupyter_server.base.handlers import APIHandler
from tornado.iostream import StreamClosedError

from clearnb.errors import ClearnbError, TaskNotFoundError
from clearnb.lab import launch, views
from clearnb.lab.feed import ChangeFeed

if TYPE_CHECKING:
    from clearnb.backend import Backend
    from clearnb.lab.launch import Launcher
    from clearnb.store.records import TaskRecord

T = TypeVar("T")

PING_EVERY = 15.0
"""Seconds between two keep-alive comments on an idle event stream."""
MAX_LIMIT = 5000
"""The most rows one ``GET runs`` returns."""
STATUS_OF = {
    launch.BadRequest: 400,
    launch.NotFound: 404,
    TaskNotFoundError: 404,
    launch.Conflict: 409,
}


class LabState:
    """What every handler shares: the store, the feed, the launcher, the server's root."""

    def __init__(self, backend: Backend, launcher: Launcher, root_dir: str) -> None:
        self.backend = backend
        self.launcher = launcher
        self.root_dir = root_dir
        self.feed = ChangeFeed(backend.store)

    def task(self, task_id: str) -> TaskRecord:
        """The task ``task_id`` names (its id, or a unique start of it)."""
        store = self.backend.store
        return store.get_task(store.resolve_task_id(task_id))


class ClearnbHandler(APIHandler):
    """Base of clearnb's routes: JSON answers and errors, store work off the event loop."""

    def initialize(self, state: LabState) -> None:
        """Keep the shared state."""
        self.state = state

    def fail(self, status: int, message: str) -> None:
        """Answer with a JSON error."""
        self.set_status(status)
        self.finish({"error": message, "status": status})

    def body(self) -> dict[str, Any]:
        """The request's JSON object body (refused with 400 when it is not one)."""
        raw = self.request.body or b"{}"
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise launch.BadRequest(
                f"The request body is not JSON ({exc}); send a JSON object."
            ) from exc
        if not isinstance(value, dict):
            raise launch.BadRequest("The request body must be a JSON object.")
        return value

    async def answer(self, work: Callable[[], T]) -> None:
        """Run ``work`` on a worker thread and send what it returns, or its error."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, work)
        except ClearnbError as exc:
            self.fail(_status_of(exc), str(exc))
            return
        self.finish(json.dumps(result, default=str))

    async def answer_async(self, work: Callable[[], Any]) -> None:
        """Await ``work()`` and send what it returns, or its error."""
        try:
            result = await work()
        except ClearnbError as exc:
            self.fail(_status_of(exc), str(exc))
            return
        self.finish(json.dumps(result, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors the server raises itself (403, 405, ...) in the same JSON shape."""
        message = self._reason
        if status_code == 403:
            message = (
                "Not logged in to this Jupyter server (or the XSRF check failed): log in again."
            )
        self.finish({"error": message, "status": status_code})


def _status_of(exc: ClearnbError) -> int:
    for kind, status in STATUS_OF.items():
        if isinstance(exc, kind):
            return status
    return 400


class StoreHandler(ClearnbHandler):
    """``GET store``: which store the server sees."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """Send where the store and the artifacts are."""
        await self.answer(lambda: store_view(self.state))


class RunsHandler(ClearnbHandler):
    """``GET runs``: the sidebar's rows, newest first, filtered."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """Send the rows the query's filters keep."""
        try:
            query = runs_query(self.get_query_argument)
        except launch.BadRequest as exc:
            self.fail(400, str(exc))
            return
        await self.answer(lambda: list_runs(self.state, **query))


class RunHandler(ClearnbHandler):
    """``GET runs/<id>``: a pipeline run's graph and steps, or a task's details."""

    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        """Send the run."""

        def work() -> dict[str, Any]:
            record = self.state.task(run_id)
            if views.kind_of(record) == views.PIPELINE:
                return views.pipeline_view(record)
            detail = task_detail(self.state, record)
            return {"run": detail["task"], "task": detail}

        await self.answer(work)


class RunActionHandler(ClearnbHandler):
    """``POST runs/<id>/action``: abort, retry failed, run again, force."""

    @tornado.web.authenticated
    async def post(self, run_id: str) -> None:
        """Do the action the body names."""
        state = self.state

        async def work() -> dict[str, Any]:
            action = self.body().get("action")
            full_id = await asyncio.get_running_loop().run_in_executor(
                None, lambda: state.task(run_id).id
            )
            return await state.launcher.pipeline_action(full_id, action)

        await self.answer_async(work)


class TaskHandler(ClearnbHandler):
    """``GET tasks/<id>``: one task's details."""

    @tornado.web.authenticated
    async def get(self, task_id: str) -> None:
        """Send the task's details."""

        await self.answer(lambda: task_detail(self.state, self.state.task(task_id)))


class TaskNotebookHandler(ClearnbHandler):
    """``POST tasks/<id>/notebook``: where the executed notebook opens in JupyterLab."""

    @tornado.web.authenticated
    async def post(self, task_id: str) -> None:
        """Send the path (making a read-only copy where needed)."""
        state = self.state
        await self.answer(
            lambda: {
                "path": launch.executed_notebook(
                    state.backend, state.root_dir, state.task(task_id).id
                )
            }
        )


class TaskAbortHandler(ClearnbHandler):
    """``POST tasks/<id>/abort``: stop a queued or running task."""

    @tornado.web.authenticated
    async def post(self, task_id: str) -> None:
        """Ask for the task to stop; send its row."""
        reason = self.body().get("reason")
        backend = self.state.backend

        def work() -> dict[str, Any]:
            full_id = self.state.task(task_id).id
            launch.abort_task(backend, full_id, reason)
            return {"task": views.run_row(backend.store.get_task(full_id))}

        await self.answer(work)


class QueuesHandler(ClearnbHandler):
    """``GET queues``: queues with what waits, agents with what they run."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """Send the queues and agents."""
        await self.answer(lambda: views.queues_view(self.state.backend.store))


class NotebookParametersHandler(ClearnbHandler):
    """``GET notebook/parameters?path=``: the notebook's parameters for a typed form."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """Send the notebook's sections and parameters."""
        path = self.get_query_argument("path", "")
        state = self.state
        await self.answer(lambda: launch.notebook_parameters(state.backend, state.root_dir, path))


class NotebookRunHandler(ClearnbHandler):
    """``POST notebook/run``: run the notebook as a task, here or on a queue."""

    @tornado.web.authenticated
    async def post(self) -> None:
        """Start the run; send the new task's id."""
        state = self.state

        async def work() -> dict[str, Any]:
            body = self.body()
            task_id = await state.launcher.run_notebook(state.root_dir, body)
            return {"task_id": task_id}

        await self.answer_async(work)


class NotebookRegisterHandler(ClearnbHandler):
    """``POST notebook/register``: register the notebook as a template."""

    @tornado.web.authenticated
    async def post(self) -> None:
        """Register it (or find it registered); send the template."""
        body = self.body()
        state = self.state
        await self.answer(lambda: launch.register_template(state.backend, state.root_dir, body))


class NotebookRenamedHandler(ClearnbHandler):
    """``POST notebook/renamed``: a notebook (or folder) moved; its templates follow."""

    @tornado.web.authenticated
    async def post(self) -> None:
        """Update the templates; send the ids changed."""
        body = self.body()
        state = self.state
        await self.answer(
            lambda: {
                "updated": launch.notebook_renamed(
                    state.backend, state.root_dir, body.get("old_path"), body.get("new_path")
                )
            }
        )


class EventsHandler(ClearnbHandler):
    """``GET events?after=SEQ``: server-sent events, one ``change`` per store change."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """Stream changes until the client goes away."""
        try:
            after = int(self.get_query_argument("after", "-1"))
        except ValueError:
            self.fail(400, "after must be an event number (an integer).")
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        feed = self.state.feed
        queue = feed.subscribe()
        try:
            hello = {"seq": feed.seq, "reload": 0 <= after < feed.seq, "runs": [], "tasks": []}
            await self._send("hello", hello)
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), PING_EVERY)
                except asyncio.TimeoutError:
                    self.write(": ping\n\n")
                    await self.flush()
                    continue
                await self._send("change", change)
        except StreamClosedError:
            pass
        finally:
            feed.unsubscribe(queue)

    async def _send(self, name: str, data: dict[str, Any]) -> None:
        self.write(f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n")
        await self.flush()

    def on_connection_close(self) -> None:
        """The client left: the stream's loop ends at its next write."""


def task_detail(state: LabState, record: TaskRecord) -> dict[str, Any]:
    """``record``'s details, its row with the live cell progress the feed knows."""
    return views.task_detail(state.backend, record, state.feed.progress.get(record.id))


def store_view(state: LabState) -> dict[str, Any]:
    """Where the server's store and artifacts are."""
    from clearnb.store.schema import clearnb_version

    config = state.backend.config
    return {
        "home": str(config.home),
        "store_url": config.store_url,
        "artifacts": config.artifact_url,
        "root_dir": state.root_dir,
        "version": clearnb_version(),
    }


def runs_query(argument: Callable[..., Any]) -> dict[str, Any]:
    """The filters of a ``GET runs`` request, checked."""
    kind = argument("kind", "all")
    if kind not in views.KINDS:
        raise launch.BadRequest(f"kind must be one of {', '.join(views.KINDS)}, not {kind!r}.")
    try:
        limit = int(argument("limit", "200"))
    except ValueError:
        raise launch.BadRequest("limit must be a whole number of rows, e.g. limit=200.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise launch.BadRequest(f"limit must be between 1 and {MAX_LIMIT}, not {limit}.")
    statuses = [s for s in argument("status", "").split(",") if s]
    return {
        "kind": kind,
        "statuses": statuses,
        "project": argument("project", "") or None,
        "text": argument("text", "").strip(),
        "limit": limit,
        "steps": argument("steps", "0") == "1",
    }


def list_runs(
    state: LabState,
    *,
    kind: str,
    statuses: list[str],
    project: str | None,
    text: str,
    limit: int,
    steps: bool,
) -> dict[str, Any]:
    """Up to ``limit`` rows passing the filters, newest first (templates left out)."""
    store = state.backend.store
    seq = state.feed.seq if state.feed.seq else store.last_event_number()
    rows: list[dict[str, Any]] = []
    page = max(limit * 2, 200)
    while True:
        records = store.find_tasks(project=project, limit=page)
        rows = []
        for record in records:
            if record.runtime.get("template") or (record.parent and not steps):
                continue
            row = views.run_row(record, state.feed.progress.get(record.id))
            if views.matches(row, kind=kind, statuses=statuses, text=text):
                rows.append(row)
                if len(rows) >= limit:
                    break
        if len(rows) >= limit or len(records) < page:
            break
        page *= 4
    return {"runs": rows, "seq": seq, "store": store_view(state), "read_at": time.time()}


def routes(state: LabState) -> list[tuple[str, type[ClearnbHandler], dict[str, Any]]]:
    """The extension's routes (relative to the server's base URL)."""
    task = r"(?P<task_id>[A-Za-z0-9_-]{1,64})"
    run = r"(?P<run_id>[A-Za-z0-9_-]{1,64})"
    table: list[tuple[str, type[ClearnbHandler]]] = [
        (r"/clearnb/api/store", StoreHandler),
        (r"/clearnb/api/runs", RunsHandler),
        (rf"/clearnb/api/runs/{run}", RunHandler),
        (rf"/clearnb/api/runs/{run}/action", RunActionHandler),
        (rf"/clearnb/api/tasks/{task}", TaskHandler),
        (rf"/clearnb/api/tasks/{task}/notebook", TaskNotebookHandler),
        (rf"/clearnb/api/tasks/{task}/abort", TaskAbortHandler),
        (r"/clearnb/api/queues", QueuesHandler),
        (r"/clearnb/api/notebook/parameters", NotebookParametersHandler),
        (r"/clearnb/api/notebook/run", NotebookRunHandler),
        (r"/clearnb/api/notebook/register", NotebookRegisterHandler),
        (r"/clearnb/api/notebook/renamed", NotebookRenamedHandler),
        (r"/clearnb/api/events", EventsHandler),
    ]
    return [(pattern, handler, {"state": state}) for pattern, handler in table]

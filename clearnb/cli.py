"""The ``clearnb`` command: run notebooks as tasks and inspect them from a terminal."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from clearnb.errors import ClearnbError
from clearnb.status import PIPELINE_FINAL

if TYPE_CHECKING:
    from clearnb.store import Store
    from clearnb.store.records import TaskRecord
    from clearnb.task import Task

STATUS_COLOURS = {
    "completed": "green",
    "failed": "red",
    "aborted": "yellow",
    "running": "cyan",
    "queued": "blue",
    "created": "white",
}


parameter_option = click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Override a parameter: NAME or Section/NAME, typed like the notebook's default.",
)


@click.group()
@click.version_option(package_name="clearnb")
def main() -> None:
    """clearnb: pipelines of Jupyter notebooks without a server."""


memory_limit_option = click.option(
    "--memory-limit",
    default=None,
    metavar="SIZE",
    help="Memory the kernel may use, e.g. 2GB; over it, the run is stopped and fails.",
)


@main.group()
def task() -> None:
    """Run notebooks as tasks; list and show tasks."""


@task.command("run")
@click.argument("notebook", type=click.Path(dir_okay=False))
@parameter_option
@click.option("--project", "project_name", default="default", show_default=True)
@click.option("--name", "task_name", default=None, help="Task name (default: notebook name).")
@click.option("--time-limit", type=float, default=None, help="Seconds the run may take.")
@memory_limit_option
@click.option(
    "--cwd",
    type=click.Path(file_okay=False),
    default=None,
    help="Working folder of the kernel (default: the notebook's folder).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the finished task as JSON.")
def run_command(
    notebook: str,
    parameters: tuple[tuple[str, str], ...],
    project_name: str,
    task_name: str | None,
    time_limit: float | None,
    memory_limit: str | None,
    cwd: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run NOTEBOOK as a new task, with parameter overrides."""
    from clearnb.execution import events
    from clearnb.execution.events import RunEvent
    from clearnb.execution.runner import NotebookRunner

    def progress(event: RunEvent) -> None:
        if quiet:
            return
        if event.kind == events.CELL_STARTED and event.payload.get("cell_type") == "code":
            index, count = event.payload["index"], event.payload["count"]
            click.echo(f"  cell {index + 1}/{count} ...", err=True)
        elif event.kind == events.TASK_STARTED:
            click.echo(f"task {event.task_id} started", err=True)

    try:
        with NotebookRunner(pool_size=0) as runner:
            result = runner.execute(
                notebook,
                dict(parameters),
                project_name=project_name,
                task_name=task_name,
                time_limit=time_limit,
                memory_limit=memory_limit,
                cwd=cwd,
                on_event=progress,
            )
    except ClearnbError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(_task_dict(result.record), indent=2, default=str))
    else:
        _print_task(result.record, verbose=False)
    if result.status != "completed":
        sys.exit(1)


@task.command("ls")
@click.option("--project", default=None, help="Only this project.")
@click.option("--name", default=None, help="Only tasks with this name.")
@click.option("--status", default=None, help="Only tasks with this status.")
@click.option("--limit", default=20, show_default=True, help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_command(
    project: str | None, name: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List tasks, newest first."""
    from clearnb.backend import Backend

    store = _backend_or_exit(Backend).store
    store.expire_leases()  # a task whose agent died shows failed, not running
    records = store.find_tasks(project=project, name=name, status=status, limit=limit)
    if as_json:
        click.echo(json.dumps([_task_dict(r) for r in records], indent=2, default=str))
        return
    if not records:
        click.echo("No tasks yet. Run one with: clearnb task run NOTEBOOK")
        return
    header = f"{'ID':32}  {'STATUS':9}  {'STARTED':19}  {'DURATION':>8}  PROJECT/NAME"
    click.echo(header)
    for r in records:
        started = _when(r.started or r.created)
        duration = _duration(r.started, r.completed)
        status_text = click.style(f"{r.status:9}", fg=STATUS_COLOURS.get(r.status))
        click.echo(f"{r.id:32}  {status_text}  {started:19}  {duration:>8}  {r.project}/{r.name}")


@task.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(task_id: str, as_json: bool) -> None:
    """Show a task: parameters, artifacts, status, output notebook and error."""
    from clearnb.backend import Backend

    store = _backend_or_exit(Backend).store
    store.expire_leases()
    record = _task_or_exit(store, task_id)
    if as_json:
        data = _task_dict(record)
        data["artifacts"] = {
            name: {
                "url": a.url,
                "type": a.type,
                "size": a.size,
                "hash": a.hash,
                "preview": a.preview,
            }
            for name, a in store.get_artifacts(task_id).items()
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _print_task(record, verbose=True)
    artifacts = store.get_artifacts(task_id)
    if artifacts:
        click.echo("artifacts:")
        for name, a in artifacts.items():
            click.echo(f"  {name:24} {a.type:24} {_size(a.size):>9}  {a.preview}")
            click.echo(f"  {'':24} {a.url}")
    logs = {r.title: r.payload.get("text", "") for r in store.get_reports(task_id, kind="log")}
    for stream in ("stdout", "stderr"):
        text = logs.get(stream, "")
        if text:
            tail = "\n".join(text.rstrip().splitlines()[-10:])
            click.echo(f"{stream} (last lines):")
            click.echo("  " + tail.replace("\n", "\n  "))


def _task_or_exit(store: Any, task_id: str) -> Any:
    """The task's record, or a clear error and exit 1."""
    try:
        return store.get_task(task_id)
    except ClearnbError as exc:
        raise click.ClickException(str(exc)) from exc


def _backend_or_exit(backend_class: Any) -> Any:
    try:
        return backend_class.for_config()
    except ClearnbError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_task(record: Any, verbose: bool) -> None:
    colour = STATUS_COLOURS.get(record.status)
    click.echo(f"task     {record.id}")
    click.echo(f"name     {record.project}/{record.name}")
    click.echo("status   " + click.style(record.status, fg=colour, bold=True))
    if record.started:
        took = _duration(record.started, record.completed)
        click.echo(f"started  {_when(record.started)}  ({took})")
    if record.queue and record.status in ("queued", "running"):
        where = f" on agent {record.worker}" if record.worker else ""
        click.echo(f"queue    {record.queue}{where}")
    if record.notebook:
        click.echo(f"notebook {record.notebook}")
    if record.output_notebook:
        click.echo(f"output   {record.output_notebook}")
    if verbose and record.parameters:
        overridden = set(record.runtime.get("overrides", []))
        click.echo("parameters:")
        for section, values in record.parameters.items():
            for key, value in values.items():
                mark = " *" if f"{section}/{key}" in overridden else ""
                click.echo(f"  {section}/{key} = {value!r}{mark}")
        if overridden:
            click.echo("  (* overridden for this run)")
    if record.error:
        click.echo(click.style(f"error    {record.error.get('reason', '')}", fg="red"))
        if verbose and record.error.get("traceback"):
            lines = "\n".join(record.error["traceback"][-6:]).splitlines()
            click.echo("\n".join(f"  {line}" for line in lines))


def _task_dict(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: float | None, end: float | None) -> str:
    if not start:
        return "-"
    seconds = (end or dt.datetime.now().timestamp()) - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@task.command("enqueue")
@click.argument("task_id")
@click.option("--queue", "queue_name", required=True, help="The queue an agent serves.")
@click.option("--force", is_flag=True, help="Reset a task that already ended and run it again.")
def enqueue_command(task_id: str, queue_name: str, force: bool) -> None:
    """Send task TASK_ID (a draft, e.g. a clone) to a queue for an agent to run."""
    import warnings

    from clearnb.backend import Backend
    from clearnb.executors.queue import QueueWarning, enqueue

    backend = _backend_or_exit(Backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QueueWarning)
        try:
            record = enqueue(backend, task_id, queue_name, force=force)
        except ClearnbError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"task {record.id} ({record.name}) queued on {queue_name!r}")
    for warning in caught:
        if issubclass(warning.category, QueueWarning):
            click.echo(click.style(f"warning: {warning.message}", fg="yellow"), err=True)


@task.command("abort")
@click.argument("task_id")
@click.option("--reason", default="aborted from the command line", show_default=True)
def abort_command(task_id: str, reason: str) -> None:
    """Stop task TASK_ID: out of its queue, or its kernel stopped by the agent running it."""
    from clearnb.backend import Backend

    store = _backend_or_exit(Backend).store
    before = _task_or_exit(store, task_id)
    record = store.request_abort(task_id, reason)
    if before.status in ("created", "queued"):
        click.echo(f"task {task_id} aborted (it was {before.status})")
    elif before.status == "running":
        where = f"agent {record.worker}" if record.worker else "the process running it"
        click.echo(f"task {task_id}: asked {where} to stop it")
    else:
        click.echo(f"task {task_id} already ended {before.status}; nothing to stop")


@main.command("agent")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    required=True,
    help="A queue to serve (repeat for several; the first has priority).",
)
@click.option("--workers", default=1, show_default=True, help="Tasks run at the same time.")
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    help="Seconds a running task stays this agent's without a heartbeat.",
)
@click.option("--name", default=None, help="The agent's name (default: host:pid).")
def agent_command(queues: tuple[str, ...], workers: int, lease: float, name: str | None) -> None:
    """Serve queues: run the tasks sent to them, here, until stopped (Ctrl-C).

    The first Ctrl-C stops taking tasks and lets the running ones finish; a second one
    (or SIGTERM) stops them too.
    """
    import signal

    from clearnb.executors.agent import Agent

    try:
        agent = Agent(queues, workers=workers, lease=lease, name=name)
    except ClearnbError as exc:
        raise click.ClickException(str(exc)) from exc
    interrupts = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            click.echo("stopping: no new tasks; Ctrl-C again to stop the running ones", err=True)
            agent.stop()
        else:
            agent.stop(abort="the agent was stopped")

    def on_term(signum: int, frame: Any) -> None:
        agent.stop(abort="the agent was stopped")

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_term)
    try:
        agent.run()
    except ClearnbError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def queue() -> None:
    """Queues: what waits in them and which agents serve them."""


@queue.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queue_ls_command(as_json: bool) -> None:
    """List queues with their waiting tasks, and the agents seen with their heartbeat."""
    from clearnb.backend import Backend
    from clearnb.executors.queue import AGENT_SEEN_WITHIN

    store = _backend_or_exit(Backend).store
    store.expire_leases()
    waiting: dict[str, list[Any]] = {}
    for record in store.queued_tasks():
        waiting.setdefault(record.queue or "", []).append(record)
    workers = store.get_workers()
    now = time.time()
    names = sorted({*waiting, *(q for w in workers for q in w.queues)})
    if as_json:
        data = {
            "queues": {
                name: {
                    "waiting": [r.id for r in waiting.get(name, [])],
                    "agents": [w.id for w in workers if name in w.queues],
                }
                for name in names
            },
            "agents": [_worker_dict(w, now) for w in workers],
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    if not names:
        click.echo(
            "No task waits in a queue and no agent was seen. Send a task to a queue with "
            "`clearnb task enqueue ID --queue Q`; serve it with `clearnb agent --queue Q`."
        )
        return
    click.echo(f"{'QUEUE':20}  {'WAITING':>7}  {'OLDEST':>8}  AGENTS")
    for name in names:
        queued = waiting.get(name, [])
        oldest = _duration(queued[0].enqueued, now) if queued else "-"
        live = [
            w.id
            for w in workers
            if name in w.queues and w.status != "stopped" and now - w.last_seen <= AGENT_SEEN_WITHIN
        ]
        serving = ", ".join(live) or click.style("none: no agent serves it", fg="yellow")
        click.echo(f"{name:20}  {len(queued):>7}  {oldest:>8}  {serving}")
    if workers:
        click.echo("")
        click.echo(f"{'AGENT':28}  {'STATUS':8}  {'LAST SEEN':>9}  {'RUNNING':>7}  QUEUES")
        for w in workers:
            status = (
                w.status
                if now - w.last_seen <= AGENT_SEEN_WITHIN or w.status == "stopped"
                else "lost"
            )
            seen = f"{now - w.last_seen:.0f}s ago"
            click.echo(
                f"{w.id:28}  {status:8}  {seen:>9}  {len(w.running):>3}/{w.capacity:<3}  "
                + ", ".join(w.queues)
            )


def _worker_dict(worker: Any, now: float) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(worker)
    data["seconds_since_seen"] = round(now - worker.last_seen, 3)
    return data


# -- pipelines ---------------------------------------------------------------------------------

POLL_SECONDS = 0.25
"""How often ``clearnb run`` reads the pipeline's state from the store."""


@main.command("run", short_help="Run a pipeline notebook and follow its steps.")
@click.argument("notebook", type=click.Path(dir_okay=False))
@parameter_option
@click.option("--project", "project_name", default=None, help="Project of the notebook's task.")
@click.option("--name", "task_name", default=None, help="Task name (default: notebook name).")
@click.option("--time-limit", type=float, default=None, help="Seconds the run may take.")
@memory_limit_option
def run_pipeline_command(
    notebook: str,
    parameters: tuple[tuple[str, str], ...],
    project_name: str | None,
    task_name: str | None,
    time_limit: float | None,
    memory_limit: str | None,
) -> None:
    """Run a pipeline NOTEBOOK (one that starts a PipelineController); follow its steps.

    Shows one line per step while the pipeline runs, then a table of the steps. Exits 0
    if the pipeline and the notebook completed, 1 otherwise, 130 on Ctrl-C.
    """
    from clearnb.execution import events
    from clearnb.execution.events import RunEvent
    from clearnb.execution.limits import parse_memory_limit
    from clearnb.execution.runner import NotebookRunner, RunHandle

    try:
        parse_memory_limit(memory_limit)
        runner = NotebookRunner(pool_size=0)
        record = runner.prepare(
            notebook, dict(parameters), project_name=project_name, task_name=task_name
        )
    except ClearnbError as exc:
        raise click.UsageError(str(exc)) from exc
    store = runner.backend.store
    view = _LiveView(store, record, tty=sys.stderr.isatty())
    finished = threading.Event()
    outcome: dict[str, Any] = {}
    handle = RunHandle()

    def on_event(event: RunEvent) -> None:
        if event.kind == events.CELL_STARTED:
            view.notebook_cell = (int(event.payload["index"]), int(event.payload["count"]))

    def work() -> None:
        try:
            outcome["task"] = runner.run_prepared(
                record,
                time_limit=time_limit,
                memory_limit=memory_limit,
                on_event=on_event,
                handle=handle,
            )
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    thread = threading.Thread(target=work, name="clearnb-run", daemon=True)
    view.start()
    thread.start()
    try:
        while not finished.wait(POLL_SECONDS):
            view.poll()
    except KeyboardInterrupt:
        view.close()
        click.echo("interrupted: stopping the notebook's kernel ...", err=True)
        try:
            handle.abort("interrupted from the command line (Ctrl-C)")
            thread.join(15)
            runner.close()
            if store.get_task(record.id).status == "running":
                store.update_task(
                    record.id,
                    status="aborted",
                    completed=time.time(),
                    error={"reason": "aborted: interrupted from the command line (Ctrl-C)"},
                )
            view.poll(draw=False)
            _report_run(store.get_task(record.id), view.state, interrupted=True)
        except KeyboardInterrupt:
            pass
        sys.exit(130)
    runner.close()
    view.poll()
    view.close()
    if "error" in outcome:
        error = outcome["error"]
        raise click.ClickException(f"the run of {notebook} broke: {type(error).__name__}: {error}")
    task: Task = outcome["task"]
    sys.exit(_report_run(task.record, view.state))


@main.group()
def pipeline() -> None:
    """List pipeline runs and show their steps."""


@pipeline.command("ls")
@click.option("--project", default=None, help="Only pipelines of this project.")
@click.option("--limit", default=20, show_default=True, help="At most this many (newest first).")
def pipeline_ls_command(project: str | None, limit: int) -> None:
    """List pipeline runs, newest first."""
    from clearnb.backend import Backend
    from clearnb.pipeline.progress import done_text, elapsed

    store = _backend_or_exit(Backend).store
    found = []
    for record in store.find_tasks(task_type="controller"):
        record = _recovered(store, record)
        state = _pipeline_state(record)
        if project is not None and project not in (record.project, state.get("project")):
            continue
        found.append((record, state))
        if len(found) >= limit:
            break
    if not found:
        click.echo("No pipelines yet. Run one with: clearnb run NOTEBOOK")
        return
    header = f"{'ID':32}  {'STATUS':9}  {'STARTED':19}  {'DURATION':>8}  {'STEPS':14}  PROJECT/NAME"
    click.echo(header)
    for record, state in found:
        status = _effective_status(record, state)
        started = state.get("started") or record.started
        took = elapsed(state) if state.get("started") else None
        duration = _duration(record.started, record.completed) if took is None else _seconds(took)
        steps = done_text(state) if state.get("nodes") else "-"
        name = f"{state.get('project') or record.project}/{state.get('name') or record.name}"
        status_text = click.style(f"{status:9}", fg=_colour(status))
        click.echo(
            f"{record.id:32}  {status_text}  {_when(started):19}  {duration:>8}  {steps:14}  {name}"
        )


@pipeline.command("show", short_help="Show a pipeline run and its steps.")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline's state as JSON.")
def pipeline_show_command(task_id: str, as_json: bool) -> None:
    """Show a pipeline run: its status, arguments, and every step with its parameters."""
    from clearnb.backend import Backend
    from clearnb.pipeline.progress import pipeline_headline, resolved_lines, summary_lines

    store = _backend_or_exit(Backend).store
    record = _recovered(store, _task_or_exit(store, task_id))
    state = _pipeline_state(record)
    if record.task_type != "controller" and not state:
        raise click.ClickException(
            f"Task {task_id} is a {record.task_type} task, not a pipeline. "
            f"Show it with: clearnb task show {task_id}"
        )
    if as_json:
        click.echo(json.dumps(state, indent=2, default=str))
        return
    status = _effective_status(record, state)
    click.echo(f"pipeline {state.get('name') or record.name}")
    click.echo(f"task     {record.id}")
    project = state.get("project") or record.project
    version = f" (version {state['version']})" if state.get("version") else ""
    click.echo(f"project  {project}{version}")
    click.echo("status   " + click.style(status, fg=_colour(status), bold=True))
    started = state.get("started") or record.started
    if started:
        ended = state.get("ended") or (record.completed if status in PIPELINE_FINAL else None)
        click.echo(f"started  {_when(started)}  ({_duration(started, ended)})")
    if record.error:
        click.echo(click.style(f"error    {record.error.get('reason', '')}", fg="red"))
    if not state.get("nodes"):
        click.echo("The pipeline has not recorded any step yet.")
        return
    arguments = record.parameters.get("Args") or {}
    if arguments:
        click.echo("arguments:")
        for key, value in arguments.items():
            click.echo(f"  {key} = {value!r}")
    click.echo("")
    click.echo(pipeline_headline({**state, "status": status}, style=_terminal_style()))
    for line in summary_lines(state, style=_terminal_style()):
        click.echo("  " + line)
    parameters = resolved_lines(state)
    if parameters:
        click.echo("")
        click.echo("step parameters:")
        for line in parameters:
            click.echo("  " + line)
    dag = store.get_artifacts(record.id).get("pipeline_dag")
    if dag is not None:
        click.echo("")
        click.echo(f"DAG picture: {dag.url}")


class _LiveView:
    """Follows one notebook run in the store and shows its pipeline's steps as they change.

    On a terminal the view is redrawn in place; otherwise a line is printed for each
    change of a step's status, so logs stay readable.
    """

    def __init__(self, store: Store, record: TaskRecord, *, tty: bool) -> None:
        self.store = store
        self.record = record
        self.tty = tty
        self.state: dict[str, Any] | None = None
        self.notebook_cell: tuple[int, int] | None = None
        self.started = time.time()
        self._drawn = 0
        self._seen_events: dict[str, int] = {}
        self._cells: dict[str, dict[str, int]] = {}
        self._style = _terminal_style()

    def start(self) -> None:
        where = f"{self.record.project}/{self.record.name}"
        click.echo(f"task {self.record.id} ({where}): running {self.record.notebook}", err=True)

    def poll(self, draw: bool = True) -> None:
        """Read the pipeline's state (and its steps' cell events) and show what changed."""
        try:
            state = self._read()
        except ClearnbError:
            return
        if state is not None:
            state = self._with_cell_progress(state)
        before, self.state = self.state, state
        if not draw:
            return
        if self.tty:
            self._redraw()
        else:
            self._log_changes(before, state)

    def close(self) -> None:
        """Erase the live view from the terminal (the summary follows)."""
        if self.tty and self._drawn:
            click.echo(f"\x1b[{self._drawn}F\x1b[J", nl=False, err=True)
            self._drawn = 0

    # -- reading -------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any] | None:
        record = self.store.get_task(self.record.id)
        state = _pipeline_state(record)
        if state:
            return state
        children = self.store.find_tasks(task_type="controller", parent=self.record.id, limit=1)
        if children:
            return _pipeline_state(children[0]) or None
        return None

    def _with_cell_progress(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state, with the running steps' progress taken from their newest cell events."""
        from clearnb.execution import events

        nodes = dict(state.get("nodes") or {})
        for name, node in nodes.items():
            task_id = node.get("executed")
            if node.get("status") != "running" or not task_id:
                continue
            for event in self.store.get_events(task_id, after=self._seen_events.get(task_id, 0)):
                self._seen_events[task_id] = event.seq
                if event.kind == events.CELL_STARTED:
                    self._cells[task_id] = {
                        "cell": int(event.payload.get("index") or 0),
                        "cells": int(event.payload.get("count") or 0),
                    }
            if task_id in self._cells:
                nodes[name] = {**node, "progress": self._cells[task_id]}
        return {**state, "nodes": nodes}

    # -- showing -------------------------------------------------------------------------------

    def _notebook_line(self) -> str:
        line = f"notebook {os.path.basename(self.record.notebook or '')}"
        if self.notebook_cell is not None:
            index, count = self.notebook_cell
            line += f": cell {index + 1}/{count}"
        return line + f", {_seconds(time.time() - self.started)}"

    def _redraw(self) -> None:
        from clearnb.pipeline.progress import progress_lines

        columns, rows = _terminal_size()
        width = max(20, columns - 1)
        lines = [self._notebook_line()[:width]]
        if self.state is not None:
            height = max(3, rows - 2)
            lines += progress_lines(self.state, style=self._style, width=width, height=height)
        else:
            lines.append("  (waiting for the notebook to start a pipeline)")
        moves = f"\x1b[{self._drawn}F" if self._drawn else ""
        text = moves + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J"
        click.echo(text, nl=False, err=True)
        self._drawn = len(lines)

    def _log_changes(
        self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        from clearnb.pipeline.progress import change_line, status_changes, step_names

        if after is None:
            return
        clock = f"[{_seconds(time.time() - self.started):>7}]"
        name = after.get("name") or "pipeline"
        if before is None:
            names = step_names(after)
            listed = ", ".join(names) if names else "no steps yet"
            click.echo(f"{clock} pipeline {name}: {len(names)} steps ({listed})", err=True)
        status = str(after.get("status") or "pending")
        changed = status != str((before or {}).get("status") or "pending")
        pipeline_line = f"{clock} pipeline {name}: {self._style(status, status)}"
        if changed and status not in PIPELINE_FINAL:
            click.echo(pipeline_line, err=True)
        for step, old, new in status_changes(before, after):
            if old is None and new == "pending":
                continue
            click.echo(f"{clock} {change_line(after, step, style=self._style)}", err=True)
        if changed and status in PIPELINE_FINAL:
            click.echo(pipeline_line, err=True)


def _report_run(
    record: TaskRecord, state: Mapping[str, Any] | None, *, interrupted: bool = False
) -> int:
    """Print the outcome of ``clearnb run``; return its exit code."""
    from clearnb.pipeline.progress import pipeline_headline, summary_lines

    style = _terminal_style()
    click.echo(f"task     {record.id}  ({record.project}/{record.name})")
    click.echo("notebook " + style(record.status, record.status))
    if record.error:
        click.echo(click.style(f"error    {record.error.get('reason', '')}", fg="red"))
    if record.output_notebook and record.status != "completed":
        click.echo(f"output   {record.output_notebook}")
    if not state and interrupted:
        click.echo("The run was interrupted before the notebook started a pipeline.")
        return 130
    if not state:
        click.echo(
            "The notebook did not start a pipeline: no PipelineController recorded its steps "
            "in this run. Run a notebook that builds and starts one, or use "
            "`clearnb task run` for a plain notebook."
        )
        return 1
    status = str(state.get("status") or "pending")
    shown = {**state, "status": _effective_status(record, state)}
    click.echo("")
    click.echo(pipeline_headline(shown, style=style))
    for line in summary_lines(state, style=style):
        click.echo("  " + line)
    return 0 if status == "completed" and record.status == "completed" else 1


def _terminal_size() -> tuple[int, int]:
    """Columns and rows of the terminal the live view is drawn on (stderr)."""
    if not os.environ.get("COLUMNS"):
        try:
            size = os.get_terminal_size(sys.stderr.fileno())
            if size.columns > 0 and size.lines > 0:
                return size.columns, size.lines
        except (OSError, ValueError):
            pass
    size = shutil.get_terminal_size()
    return size.columns, size.lines


def _recovered(store: Store, record: TaskRecord) -> TaskRecord:
    """``record``, settled first if it is a pipeline run whose controller process died."""
    state = _pipeline_state(record)
    if state.get("status") in (None, *PIPELINE_FINAL):
        return record
    from clearnb.store.pipelines import recover

    return store.get_task(record.id) if recover(store, record.id) else record


def _pipeline_state(record: TaskRecord) -> dict[str, Any]:
    from clearnb.store.pipelines import run_document

    return dict(run_document(record) or {})


def _effective_status(record: TaskRecord, state: Mapping[str, Any]) -> str:
    """The pipeline's status; a pipeline still 'running' in a task that ended has stopped."""
    status = str(state.get("status") or record.status)
    if status not in PIPELINE_FINAL and record.status in PIPELINE_FINAL and state:
        return "failed" if record.status == "failed" else "aborted"
    return status


def _colour(status: str) -> str | None:
    from clearnb.pipeline.progress import TERMINAL_COLOURS

    return TERMINAL_COLOURS.get(status)


def _terminal_style() -> Callable[[str, str], str]:
    if os.environ.get("NO_COLOR"):
        return lambda text, status: text
    return lambda text, status: click.style(text, fg=_colour(status))


def _seconds(seconds: float) -> str:
    from clearnb.pipeline.progress import format_seconds

    return format_seconds(seconds)

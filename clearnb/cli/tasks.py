"""``clearnb task ...``: run a notebook as a task; list, show, enqueue and abort tasks."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from clearnb.cli.format import (
    STATUS_COLOURS,
    CommandError,
    CommandUsageError,
    duration_text,
    echo,
    printable,
    printable_text,
    size_text,
    when_text,
)
from clearnb.cli.lookup import backend_or_exit, task_or_exit
from clearnb.cli.options import memory_limit_option, parameter_option
from clearnb.errors import ClearnbError, StoreError

if TYPE_CHECKING:
    from clearnb.store.records import ReportRecord

SHOWN_REPORTS = 50
"""Reports ``clearnb task show`` lists (the latest); ``--json`` gives them all."""


@click.group()
def task() -> None:
    """Run notebooks as tasks; list and show tasks."""


@task.command("run")
@click.argument("notebook", type=click.Path(dir_okay=False))
@parameter_option
@click.option(
    "--project",
    "project_name",
    default=None,
    help="Project (default: the one the notebook's Task.init names, else 'default').",
)
@click.option(
    "--name",
    "task_name",
    default=None,
    help="Task name (default: the one the notebook's Task.init names, else the file's).",
)
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
    project_name: str | None,
    task_name: str | None,
    time_limit: float | None,
    memory_limit: str | None,
    cwd: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run NOTEBOOK (or a Python script, as a notebook) as a new task, with overrides."""
    from clearnb import events
    from clearnb.events import RunEvent
    from clearnb.execution.runner import NotebookRunner

    def progress(event: RunEvent) -> None:
        if quiet:
            return
        if event.kind == events.CELL_STARTED and event.payload.get("cell_type") == "code":
            index, count = event.payload["index"], event.payload["count"]
            echo(f"  cell {index + 1}/{count} ...", err=True)
        elif event.kind == events.TASK_STARTED:
            echo(f"task {event.task_id} started", err=True)

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
    except StoreError as exc:  # the store, not the command line, is at fault: no usage
        raise CommandError(str(exc)) from exc
    except ClearnbError as exc:
        raise CommandUsageError(str(exc)) from exc
    if as_json:
        echo(json.dumps(_task_dict(result.record), indent=2, default=str))
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

    store = backend_or_exit(Backend).store
    store.expire_leases()  # a task whose agent died shows failed, not running
    records = store.find_tasks(project=project, name=name, status=status, limit=limit)
    if as_json:
        echo(json.dumps([_task_dict(r) for r in records], indent=2, default=str))
        return
    if not records:
        echo("No tasks yet. Run one with: clearnb task run NOTEBOOK")
        return
    header = f"{'ID':32}  {'STATUS':9}  {'STARTED':19}  {'DURATION':>8}  PROJECT/NAME"
    echo(header)
    for r in records:
        started = when_text(r.started or r.created)
        duration = duration_text(r.started, r.completed)
        status_text = click.style(f"{r.status:9}", fg=STATUS_COLOURS.get(r.status))
        echo(
            f"{printable(r.id):32}  {status_text}  {started:19}  {duration:>8}  "
            f"{printable(r.project)}/{printable(r.name)}"
        )


@task.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(task_id: str, as_json: bool) -> None:
    """Show a task: parameters, artifacts, reports, status, output notebook and error."""
    from clearnb.backend import Backend
    from clearnb.reports import summary

    backend = backend_or_exit(Backend)
    store = backend.store
    store.expire_leases()
    record = task_or_exit(store, task_id)
    task_id = record.id
    models = _models_of(backend, record)
    if as_json:
        data = _task_dict(record)
        data["models"] = models
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
        data["reports"] = [
            {
                "kind": r.kind,
                "title": r.title,
                "series": r.series,
                "iteration": r.iteration,
                "summary": summary(r.kind, r.payload),
                "payload": r.payload,
            }
            for r in store.get_reports(task_id)
            if r.kind != "log"
        ]
        echo(json.dumps(data, indent=2, default=str))
        return
    _print_task(record, verbose=True)
    _print_models(models)
    artifacts = store.get_artifacts(task_id)
    if artifacts:
        echo("artifacts:")
        for name, a in artifacts.items():
            echo(
                f"  {printable(name):24} {printable(a.type):24} {size_text(a.size):>9}  "
                f"{printable(a.preview)}"
            )
            echo(f"  {'':24} {printable(a.url)}")
    every = store.get_reports(task_id)
    _print_reports([r for r in every if r.kind != "log"])
    logs = {r.title: r.payload.get("text", "") for r in every if r.kind == "log"}
    for stream in ("stdout", "stderr"):
        text = logs.get(stream, "")
        if text:
            tail = "\n".join(text.rstrip().splitlines()[-10:])
            echo(f"{stream} (last lines):")
            echo("  " + tail.replace("\n", "\n  "))


def _print_reports(reports: list[ReportRecord]) -> None:
    """A line per report (the latest :data:`SHOWN_REPORTS`): kind, title / series,
    iteration and what it holds."""
    from clearnb.reports import summary

    if not reports:
        return
    echo("reports:")
    hidden = len(reports) - SHOWN_REPORTS
    if hidden > 0:
        echo(f"  ({hidden} earlier reports not shown; --json lists them all)")
    for r in reports[-SHOWN_REPORTS:]:
        where = printable(f"{r.title} / {r.series}" if r.series else r.title)
        echo(
            f"  {r.kind:16} {where:32} it {r.iteration:<6} {printable(summary(r.kind, r.payload))}"
        )


def _print_task(record: Any, verbose: bool) -> None:
    colour = STATUS_COLOURS.get(record.status)
    echo(f"task     {printable(record.id)}")
    echo(f"name     {printable(record.project)}/{printable(record.name)}")
    echo("status   " + click.style(record.status, fg=colour, bold=True))
    if record.started:
        took = duration_text(record.started, record.completed)
        echo(f"started  {when_text(record.started)}  ({took})")
    if record.queue and record.status in ("queued", "running"):
        where = f" on agent {printable(record.worker)}" if record.worker else ""
        echo(f"queue    {printable(record.queue)}{where}")
    if record.notebook:
        echo(f"notebook {printable(record.notebook)}")
    if record.output_notebook:
        echo(f"output   {printable(record.output_notebook)}")
    if verbose and record.parameters:
        overridden = set(record.runtime.get("overrides", []))
        echo("parameters:")
        for section, values in record.parameters.items():
            for key, value in values.items():
                mark = " *" if f"{section}/{key}" in overridden else ""
                echo(f"  {printable(section)}/{printable(key)} = {printable(repr(value))}{mark}")
        if overridden:
            echo("  (* overridden for this run)")
    if record.error:
        echo(click.style(f"error    {printable_text(record.error.get('reason', ''))}", fg="red"))
        if verbose and record.error.get("traceback"):
            lines = "\n".join(record.error["traceback"][-6:]).splitlines()
            echo("\n".join(f"  {line}" for line in lines))


def _print_models(models: dict[str, list[dict[str, Any]]]) -> None:
    """One line per model: how the task uses it, its name there, the model, its weights."""
    if not (models["input"] or models["output"]):
        return
    echo("models:")
    for kind, listed in models.items():
        for m in listed:
            size = size_text(m["size"]) if m["size"] else "-"
            framework = m["framework"] or "-"
            echo(
                f"  {kind:6} {printable(m['name']):20} {printable(m['model_name']):20} "
                f"{printable(framework):12} {size:>9}  "
                f"{m['id']}  {printable(m['url'] or '(no weights yet)')}"
            )


def _models_of(backend: Any, record: Any) -> dict[str, list[dict[str, Any]]]:
    """The task's input and output models, each with the name the task gives it."""
    from clearnb.task import Task

    found = Task.from_record(record, backend).models
    return {
        kind: [
            {
                "name": name,
                "id": model.record.id,
                "model_name": model.name,
                "framework": model.framework,
                "url": model.url,
                "size": model.record.size,
                "hash": model.record.hash,
            }
            for name, model in zip(found[kind].keys(), found[kind], strict=True)
        ]
        for kind in ("input", "output")
    }


def _task_dict(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)


@task.command("enqueue")
@click.argument("task_id")
@click.option("--queue", "queue_name", required=True, help="The queue an agent serves.")
@click.option("--force", is_flag=True, help="Reset a task that already ended and run it again.")
def enqueue_command(task_id: str, queue_name: str, force: bool) -> None:
    """Send task TASK_ID (a draft, e.g. a clone) to a queue for an agent to run."""
    import warnings

    from clearnb.backend import Backend
    from clearnb.executors.queue import QueueWarning, enqueue

    backend = backend_or_exit(Backend)
    task_id = task_or_exit(backend.store, task_id).id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QueueWarning)
        try:
            record = enqueue(backend, task_id, queue_name, force=force)
        except ClearnbError as exc:
            raise CommandError(str(exc)) from exc
    echo(f"task {record.id} ({printable(record.name)}) queued on {printable(repr(queue_name))}")
    for warning in caught:
        if issubclass(warning.category, QueueWarning):
            echo(click.style(f"warning: {warning.message}", fg="yellow"), err=True)


@task.command("abort")
@click.argument("task_id")
@click.option("--reason", default="aborted from the command line", show_default=True)
def abort_command(task_id: str, reason: str) -> None:
    """Stop task TASK_ID: out of its queue, or its kernel stopped by the agent running it."""
    from clearnb.backend import Backend

    store = backend_or_exit(Backend).store
    before = task_or_exit(store, task_id)
    task_id = before.id
    record = store.request_abort(task_id, reason)
    if before.status in ("created", "queued"):
        echo(f"task {task_id} aborted (it was {before.status})")
    elif before.status == "running":
        where = f"agent {printable(record.worker)}" if record.worker else "the process running it"
        echo(f"task {task_id}: asked {where} to stop it")
    else:
        echo(f"task {task_id} already ended {before.status}; nothing to stop")

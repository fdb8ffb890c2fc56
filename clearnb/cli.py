"""The ``clearnb`` command: run notebooks as tasks and inspect them from a terminal."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

from clearnb.errors import ClearnbError

STATUS_COLOURS = {
    "completed": "green",
    "failed": "red",
    "aborted": "yellow",
    "running": "cyan",
    "queued": "blue",
    "created": "white",
}


@click.group()
@click.version_option(package_name="clearnb")
def main() -> None:
    """clearnb: pipelines of Jupyter notebooks without a server."""


@main.group()
def task() -> None:
    """Run notebooks as tasks; list and show tasks."""


@task.command("run")
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Override a parameter: NAME or Section/NAME, typed like the notebook's default.",
)
@click.option("--project", "project_name", default="default", show_default=True)
@click.option("--name", "task_name", default=None, help="Task name (default: notebook name).")
@click.option("--time-limit", type=float, default=None, help="Seconds the run may take.")
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
    try:
        record = store.get_task(task_id)
    except ClearnbError as exc:
        raise click.ClickException(str(exc)) from exc
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

"""``clearnb pipeline ls`` and ``show``: pipeline runs and their steps, from the store."""

from __future__ import annotations

import json

import click

from clearnb.cli.format import (
    CommandError,
    duration_text,
    echo,
    printable,
    printable_text,
    seconds_text,
    status_colour,
    terminal_style,
    when_text,
)
from clearnb.cli.lookup import backend_or_exit, task_or_exit
from clearnb.cli.runs import effective_status, pipeline_state, recovered
from clearnb.status import PIPELINE_FINAL


@click.group()
def pipeline() -> None:
    """List pipeline runs and show their steps."""


@pipeline.command("ls")
@click.option("--project", default=None, help="Only pipelines of this project.")
@click.option("--limit", default=20, show_default=True, help="At most this many (newest first).")
def pipeline_ls_command(project: str | None, limit: int) -> None:
    """List pipeline runs, newest first."""
    from clearnb.backend import Backend
    from clearnb.pipeline.progress import done_text, elapsed

    store = backend_or_exit(Backend).store
    found = []
    for record in store.find_tasks(task_type="controller"):
        record = recovered(store, record)
        state = pipeline_state(record)
        if project is not None and project not in (record.project, state.get("project")):
            continue
        found.append((record, state))
        if len(found) >= limit:
            break
    if not found:
        echo("No pipelines yet. Run one with: clearnb run NOTEBOOK")
        return
    header = f"{'ID':32}  {'STATUS':9}  {'STARTED':19}  {'DURATION':>8}  {'STEPS':14}  PROJECT/NAME"
    echo(header)
    for record, state in found:
        status = effective_status(record, state)
        started = state.get("started") or record.started
        took = elapsed(state) if state.get("started") else None
        duration = (
            duration_text(record.started, record.completed) if took is None else seconds_text(took)
        )
        steps = done_text(state) if state.get("nodes") else "-"
        name = printable(
            f"{state.get('project') or record.project}/{state.get('name') or record.name}"
        )
        status_text = click.style(f"{status:9}", fg=status_colour(status))
        echo(
            f"{record.id:32}  {status_text}  {when_text(started):19}  {duration:>8}  "
            f"{steps:14}  {name}"
        )


@pipeline.command("show", short_help="Show a pipeline run and its steps.")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline's state as JSON.")
def pipeline_show_command(task_id: str, as_json: bool) -> None:
    """Show a pipeline run: its status, arguments, and every step with its parameters."""
    from clearnb.backend import Backend
    from clearnb.pipeline.progress import pipeline_headline, resolved_lines, summary_lines

    store = backend_or_exit(Backend).store
    record = recovered(store, task_or_exit(store, task_id))
    state = pipeline_state(record)
    if record.task_type != "controller" and not state:
        raise CommandError(
            f"Task {task_id} is a {record.task_type} task, not a pipeline. "
            f"Show it with: clearnb task show {task_id}"
        )
    if as_json:
        echo(json.dumps(state, indent=2, default=str))
        return
    status = effective_status(record, state)
    echo(f"pipeline {printable(state.get('name') or record.name)}")
    echo(f"task     {record.id}")
    project = state.get("project") or record.project
    version = f" (version {printable(state['version'])})" if state.get("version") else ""
    echo(f"project  {printable(project)}{version}")
    echo("status   " + click.style(status, fg=status_colour(status), bold=True))
    started = state.get("started") or record.started
    if started:
        ended = state.get("ended") or (record.completed if status in PIPELINE_FINAL else None)
        echo(f"started  {when_text(started)}  ({duration_text(started, ended)})")
    if record.error:
        echo(click.style(f"error    {printable_text(record.error.get('reason', ''))}", fg="red"))
    if not state.get("nodes"):
        echo("The pipeline has not recorded any step yet.")
        return
    arguments = record.parameters.get("Args") or {}
    if arguments:
        echo("arguments:")
        for key, value in arguments.items():
            echo(f"  {printable(key)} = {printable(repr(value))}")
    echo("")
    echo(pipeline_headline({**state, "status": status}, style=terminal_style()))
    for line in summary_lines(state, style=terminal_style()):
        echo("  " + line)
    parameters = resolved_lines(state)
    if parameters:
        echo("")
        echo("step parameters:")
        for line in parameters:
            echo("  " + line)
    dag = store.get_artifacts(record.id).get("pipeline_dag")
    if dag is not None:
        echo("")
        echo(f"DAG picture: {printable(dag.url)}")

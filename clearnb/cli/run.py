"""``clearnb run``: run a pipeline notebook and follow its steps live, then report them."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from clearnb.cli.format import (
    CommandError,
    CommandUsageError,
    echo,
    printable,
    printable_block,
    printable_text,
    seconds_text,
    terminal_size,
    terminal_style,
)
from clearnb.cli.options import memory_limit_option, parameter_option
from clearnb.cli.runs import effective_status, pipeline_state
from clearnb.errors import ClearnbError, StoreError
from clearnb.status import PIPELINE_FINAL

if TYPE_CHECKING:
    from clearnb.store import Store
    from clearnb.store.records import TaskRecord
    from clearnb.task import Task


POLL_SECONDS = 0.25
"""How often ``clearnb run`` reads the pipeline's state from the store."""


@click.command("run", short_help="Run a pipeline notebook and follow its steps.")
@click.argument("notebook", type=click.Path(dir_okay=False))
@parameter_option
@click.option("--project", "project_name", default=None, help="Project of the notebook's task.")
@click.option("--name", "task_name", default=None, help="Task name (default: notebook name).")
@click.option("--time-limit", type=float, default=None, help="Seconds the run may take.")
@memory_limit_option
@click.option(
    "--executor",
    default=None,
    metavar="WHERE",
    help="Where the pipeline's steps run: local, dask (worker processes here) or "
    "dask://HOST:PORT (a running scheduler); sets CLEARNB_EXECUTOR for the notebook.",
)
def run_pipeline_command(
    notebook: str,
    parameters: tuple[tuple[str, str], ...],
    project_name: str | None,
    task_name: str | None,
    time_limit: float | None,
    memory_limit: str | None,
    executor: str | None,
) -> None:
    """Run a pipeline NOTEBOOK (one that starts a PipelineController); follow its steps.

    Shows one line per step while the pipeline runs, then a table of the steps. Exits 0
    if the pipeline and the notebook completed, 1 otherwise, 130 on Ctrl-C.
    """
    from clearnb import events
    from clearnb.events import RunEvent
    from clearnb.execution.limits import parse_memory_limit
    from clearnb.execution.runner import NotebookRunner, RunHandle
    from clearnb.executors.choice import EXECUTOR_ENV, executor_choice

    try:
        parse_memory_limit(memory_limit)
        if executor is not None:
            executor_choice(executor)
            # the notebook's kernel inherits this process's environment
            os.environ[EXECUTOR_ENV] = executor
        runner = NotebookRunner(pool_size=0)
        record = runner.prepare(
            notebook, dict(parameters), project_name=project_name, task_name=task_name
        )
    except StoreError as exc:  # the store, not the command line, is at fault: no usage
        raise CommandError(str(exc)) from exc
    except ClearnbError as exc:
        raise CommandUsageError(str(exc)) from exc
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
        echo("interrupted: stopping the notebook's kernel ...", err=True)
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
        raise CommandError(f"the run of {notebook} broke: {type(error).__name__}: {error}")
    task: Task = outcome["task"]
    sys.exit(_report_run(task.record, view.state))


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
        self._style = terminal_style()

    def start(self) -> None:
        where = printable(f"{self.record.project}/{self.record.name}")
        echo(
            f"task {self.record.id} ({where}): running {printable(self.record.notebook)}", err=True
        )

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
        state = pipeline_state(record)
        if state:
            return state
        children = self.store.find_tasks(task_type="controller", parent=self.record.id, limit=1)
        if children:
            return pipeline_state(children[0]) or None
        return None

    def _with_cell_progress(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state, with the running steps' progress taken from their newest cell events."""
        from clearnb import events

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
        line = f"notebook {printable(os.path.basename(self.record.notebook or ''))}"
        if self.notebook_cell is not None:
            index, count = self.notebook_cell
            line += f": cell {index + 1}/{count}"
        return line + f", {seconds_text(time.time() - self.started)}"

    def _redraw(self) -> None:
        from clearnb.pipeline.progress import progress_lines

        columns, rows = terminal_size()
        width = max(20, columns - 1)
        lines = [self._notebook_line()[:width]]
        if self.state is not None:
            height = max(3, rows - 2)
            lines += progress_lines(self.state, style=self._style, width=width, height=height)
        else:
            lines.append("  (waiting for the notebook to start a pipeline)")
        moves = f"\x1b[{self._drawn}F" if self._drawn else ""
        # the view's own cursor moves around lines whose user text is already escaped
        shown = "".join(f"\x1b[2K{printable_block(line)}\n" for line in lines)
        click.echo(moves + shown + "\x1b[J", nl=False, err=True)
        self._drawn = len(lines)

    def _log_changes(
        self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        from clearnb.pipeline.progress import (
            change_line,
            status_changes,
            step_names,
            warning_lines,
        )

        if after is None:
            return
        clock = f"[{seconds_text(time.time() - self.started):>7}]"
        name = printable(after.get("name") or "pipeline")
        if before is None:
            names = step_names(after)
            listed = ", ".join(printable(n) for n in names) if names else "no steps yet"
            echo(f"{clock} pipeline {name}: {len(names)} steps ({listed})", err=True)
        status = str(after.get("status") or "pending")
        changed = status != str((before or {}).get("status") or "pending")
        pipeline_line = f"{clock} pipeline {name}: {self._style(status, status)}"
        if changed and status not in PIPELINE_FINAL:
            echo(pipeline_line, err=True)
        for line in warning_lines(after, before):
            echo(f"{clock} {click.style(line, fg='yellow')}", err=True)
        for step, old, new in status_changes(before, after):
            if old is None and new == "pending":
                continue
            echo(f"{clock} {change_line(after, step, style=self._style)}", err=True)
        if changed and status in PIPELINE_FINAL:
            echo(pipeline_line, err=True)


def _report_run(
    record: TaskRecord, state: Mapping[str, Any] | None, *, interrupted: bool = False
) -> int:
    """Print the outcome of ``clearnb run``; return its exit code."""
    from clearnb.pipeline.progress import pipeline_headline, summary_lines, warning_lines

    style = terminal_style()
    echo(f"task     {record.id}  ({printable(record.project)}/{printable(record.name)})")
    echo("notebook " + style(record.status, record.status))
    if record.error:
        echo(click.style(f"error    {printable_text(record.error.get('reason', ''))}", fg="red"))
    if record.output_notebook and record.status != "completed":
        echo(f"output   {printable(record.output_notebook)}")
    if not state and interrupted:
        echo("The run was interrupted before the notebook started a pipeline.")
        return 130
    if not state:
        echo(
            "The notebook did not start a pipeline: no PipelineController recorded its steps "
            "in this run. Run a notebook that builds and starts one, or use "
            "`clearnb task run` for a plain notebook."
        )
        return 1
    status = str(state.get("status") or "pending")
    shown = {**state, "status": effective_status(record, state)}
    echo("")
    echo(pipeline_headline(shown, style=style))
    for line in summary_lines(state, style=style):
        echo("  " + line)
    for line in warning_lines(state):
        echo(click.style("  " + line, fg="yellow"))
    return 0 if status == "completed" and record.status == "completed" else 1

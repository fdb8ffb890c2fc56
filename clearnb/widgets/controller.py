"""The controller widget: run, watch and inspect a pipeline inside the notebook that runs it.

A toolbar (Run, Stop, Retry failed, Run only this step, Run from this step down, Force
re-run), the DAG canvas, and a details panel for the selected step. The controller's
events arrive on its background thread; they only mark the view dirty, and a small thread
pushes the state to the front end at most ten times a second, so a burst of events never
floods it and the kernel stays free for other cells.
"""

from __future__ import annotations

import base64
import html
import io
import os
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from clearnb.backend import Backend
from clearnb.cli.format import when_text
from clearnb.cli.runs import effective_status
from clearnb.events import PipelineEvent
from clearnb.pipeline import progress
from clearnb.store import pipelines as runs
from clearnb.widgets.dag import DagCanvas
from clearnb.widgets.reports import PictureCache, reports_html

if TYPE_CHECKING:
    from clearnb.pipeline.controller import PipelineController
    from clearnb.store.records import TaskRecord

TABLE_STYLE = "border-collapse:collapse;text-align:left;font-size:12px;margin:4px 0 8px 0"
REFRESH_INTERVAL = 0.1
"""Least seconds between two updates sent to the front end."""
EARLIER_STYLE = (
    "background:var(--jp-warn-color3,#fff7ed);color:var(--jp-ui-font-color1,#7c2d12);"
    "padding:1px 6px;border-radius:3px;font-size:12px"
)
"""The mark of an earlier run shown in place of the live one."""

FINAL = ("completed", "failed", "aborted")


class PipelineWidget(widgets.VBox):  # type: ignore[misc]
    """Build-free view and controls of one :class:`PipelineController`."""

    def __init__(self, pipeline: PipelineController) -> None:
        self.pipeline = pipeline
        self.canvas = DagCanvas()
        self.title = widgets.HTML()
        self.run_button = self._button("Run", "play", "Run the pipeline", self._run)
        self.stop_button = self._button("Stop", "stop", "Abort the running steps", self._stop)
        self.retry_button = self._button(
            "Retry failed", "redo", "Run again what failed, was aborted or skipped", self._retry
        )
        self.step_button = self._button(
            "Run only this step", "step-forward", "Run the selected step again", self._run_step
        )
        self.below_button = self._button(
            "Run from this step down",
            "angle-double-down",
            "Run the selected step and every step below it",
            self._run_below,
        )
        self.force_button = self._button(
            "Force re-run", "bolt", "Run every step, ignoring the cache", self._force
        )
        self.message = widgets.HTML()
        self.details = widgets.HTML(layout=widgets.Layout(padding="4px 8px"))
        self.pictures = PictureCache()
        from clearnb.widgets.builder import StepBuilder

        self.builder = StepBuilder(pipeline, on_change=self.refresh)
        self.history = widgets.Dropdown(description="run", options=[("this run (live)", "")])
        self.history.observe(self._on_history, names="value")
        history_box = widgets.VBox(
            [
                widgets.HTML("Earlier runs of this pipeline: pick one to see its DAG and steps."),
                self.history,
            ]
        )
        self.tabs = widgets.Tab(children=[self.details, self.builder, history_box])
        for index, title in enumerate(("Step", "Build", "History")):
            self.tabs.set_title(index, title)
        toolbar = widgets.HBox(
            [
                self.run_button,
                self.stop_button,
                self.retry_button,
                self.step_button,
                self.below_button,
                self.force_button,
            ],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        super().__init__(
            [self.title, toolbar, self.message, self.canvas, self.tabs],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("cnb-widget")
        self._dirty = threading.Event()
        self._closed = False
        self.canvas.observe(self._on_select, names="selected")
        pipeline.add_listener(self._on_event)
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="clearnb widget", daemon=True
        )
        self._refresher.start()
        self.refresh()

    # -- view ------------------------------------------------------------------------------

    @staticmethod
    def _button(label: str, icon: str, tooltip: str, action: Any) -> widgets.Button:
        button = widgets.Button(
            description=label, icon=icon, tooltip=tooltip, layout=widgets.Layout(width="auto")
        )
        button.on_click(lambda _: action())
        return button

    def refresh(self) -> None:
        """Send the pipeline's current state (or the chosen earlier run's) to the front end."""
        self._refresh_history()
        state = self._viewed_state()
        self.canvas.show(state["nodes"], state["order"])
        earlier = ""
        if self.history.value:
            when = when_text(state.get("started"))
            earlier = (
                f" <span class='cnb-earlier-run' style='{EARLIER_STYLE}'>earlier run "
                f"{html.escape(self.history.value[:8])} of {html.escape(when)}: view only; "
                "choose “this run (live)” to run</span>"
            )
        self.title.value = (
            f"<b style='font-size:15px'>{html.escape(state['project'])} / "
            f"{html.escape(state['name'])}</b> &nbsp; "
            f"<span class='cnb-run-status'>{html.escape(progress.pipeline_headline(state))}</span>"
            + earlier
            + dashboard_html(self.pipeline.dashboard_link)
        )
        self._update_buttons(state)
        if self.canvas.selected:
            self._show_details(self.canvas.selected)
        elif not self.details.value:
            self.details.value = "<i class='cnb-hint'>Click a step to see its details.</i>"

    def _update_buttons(self, state: dict[str, Any]) -> None:
        running = self.pipeline.is_running() or bool(self.history.value)
        nodes = state["nodes"].values()
        ran = any(n.get("executed") for n in nodes)
        unfinished = any(n.get("status") in ("failed", "aborted", "skipped") for n in nodes)
        selected = bool(self.canvas.selected)
        self.run_button.disabled = running
        self.force_button.disabled = running
        self.stop_button.disabled = not self.pipeline.is_running()
        self.retry_button.disabled = running or not (ran and unfinished)
        self.step_button.disabled = running or not (ran and selected)
        self.below_button.disabled = running or not (ran and selected)

    def _on_event(self, event: PipelineEvent) -> None:
        self._dirty.set()

    def _refresh_loop(self) -> None:
        while not self._closed:
            self._dirty.wait()
            if self._closed:
                return
            self._dirty.clear()
            try:
                self.refresh()
            except Exception as exc:  # the view must never stop the run
                self.message.value = f"<span style='color:#b91c1c'>{html.escape(str(exc))}</span>"
            threading.Event().wait(REFRESH_INTERVAL)

    def close(self) -> None:
        """Stop following the pipeline and close the widget."""
        self._closed = True
        self._dirty.set()
        self.pipeline.remove_listener(self._on_event)
        super().close()

    # -- controls -------------------------------------------------------------------------

    def _act(self, action: Any) -> None:
        try:
            action()
            self.message.value = ""
        except Exception as exc:  # show the reason where the user looks
            self.message.value = (
                f"<pre style='color:#b91c1c;white-space:pre-wrap'>{html.escape(str(exc))}</pre>"
            )
        self.refresh()

    def _run(self) -> None:
        self._act(self.pipeline.start)

    def _force(self) -> None:
        self._act(lambda: self.pipeline.start(force=True))

    def _retry(self) -> None:
        self._act(self.pipeline.retry_failed)

    def _run_step(self) -> None:
        self._act(lambda: self.pipeline.run_step(self.canvas.selected))

    def _run_below(self) -> None:
        self._act(lambda: self.pipeline.run_from_step(self.canvas.selected))

    def _stop(self) -> None:
        self._act(lambda: self.pipeline.abort("stopped from the widget"))

    # -- details --------------------------------------------------------------------------

    def _on_select(self, change: dict[str, Any]) -> None:
        self.builder.selected = change["new"]
        if change["new"]:
            self._show_details(change["new"])
        else:
            self.details.value = "<i class='cnb-hint'>Click a step to see its details.</i>"
        self._update_buttons(self.pipeline.state())

    def _show_details(self, name: str) -> None:
        self.details.value = step_details(self.pipeline, name, self._viewed_state(), self.pictures)

    # -- history --------------------------------------------------------------------------

    def _runs(self) -> list[TaskRecord]:
        return runs.find_runs(
            self.pipeline.store, project=self.pipeline.project, name=self.pipeline.name
        )

    def _refresh_history(self) -> None:
        options: list[tuple[str, str]] = [("this run (live)", "")]
        for record in self._runs():
            options.append((history_label(record), record.id))
        if options != list(self.history.options):
            current = self.history.value
            self.history.options = options
            self.history.value = current if current in {value for _, value in options} else ""

    def _viewed_state(self) -> dict[str, Any]:
        if self.history.value:
            record = self.pipeline.store.get_task(self.history.value)
            state: dict[str, Any] = runs.run_document(record) or self.pipeline.state()
            return state
        return self.pipeline.state()

    def _on_history(self, change: dict[str, Any]) -> None:
        self.refresh()


def history_label(record: TaskRecord) -> str:
    """One earlier run in the history list: when it started, its status, how long, its id."""
    state = runs.run_document(record) or {}
    status = effective_status(record, state)
    took = progress.format_seconds(progress.elapsed(state)) if state.get("started") else "-"
    return f"{when_text(state.get('started') or record.created)}  {status}  {took}  {record.id[:8]}"


def dashboard_html(link: str | None) -> str:
    """A link to the Dask dashboard of the cluster the steps run on ("" when not on Dask)."""
    if not link:
        return ""
    href = html.escape(link, quote=True)
    return (
        f" &nbsp; <a class='cnb-dashboard' href='{href}' target='_blank' rel='noopener' "
        f"title='{href}'>Dask dashboard</a>"
    )


def step_details(
    pipeline: PipelineController,
    name: str,
    viewed: dict[str, Any] | None = None,
    pictures: PictureCache | None = None,
) -> str:
    """HTML describing one step: status, parameters, artifacts, metrics, reports, logs,
    error; the reports' pictures are drawn once into ``pictures``, if given."""
    state = (viewed or pipeline.state())["nodes"].get(name)
    if state is None:
        return ""
    parts = [
        f"<div class='cnb-details' data-step='{html.escape(name)}'>",
        f"<h4 style='margin:6px 0'>{html.escape(name)} "
        f"<small>({html.escape(state['status'])})</small></h4>",
    ]
    error = (state.get("error") or {}).get("reason")
    if error:
        parts.append(f"<p class='cnb-error' style='color:#b91c1c'>{html.escape(error)}</p>")
    parts.extend(
        f"<p class='cnb-warning' style='color:#b45309'>&#9888; {html.escape(message)}</p>"
        for message in state.get("warnings") or []
    )
    task_id = state.get("executed")
    overridden = {key: value for key, value in (state.get("resolved") or {}).items()}
    written = state.get("parameters") or {}
    store = pipeline.store
    record = None
    if task_id:
        try:
            record = store.get_task(task_id)
        except Exception:  # a task deleted meanwhile: show what the state has
            record = None
    rows = []
    values: dict[str, Any] = {}
    if record is not None:
        for section, params in record.parameters.items():
            for key, value in params.items():
                values[f"{section}/{key}"] = value
    for key, value in {**written, **overridden}.items():
        values.setdefault(key, value)
    for key, value in values.items():
        mark = key in written or key in overridden
        shown = overridden.get(key, value)
        reference = (
            written.get(key)
            if isinstance(written.get(key), str) and "${" in str(written.get(key))
            else ""
        )
        rows.append(
            f"<tr class='{'cnb-overridden' if mark else ''}'><td>{'★ ' if mark else ''}"
            f"{html.escape(key)}</td><td><code>{html.escape(repr(shown))}</code>"
            f"{' ← ' + html.escape(reference) if reference else ''}</td></tr>"
        )
    if rows:
        parts.append(
            f"<table class='cnb-parameters' style='{TABLE_STYLE}'>"
            "<tr><th>parameter</th><th>value</th></tr>"
            + "".join(rows)
            + "</table><small>★ overridden by the pipeline</small>"
        )
    if record is not None:
        artifacts = store.get_artifacts(record.id)
        if artifacts:
            parts.append(
                f"<table class='cnb-artifacts' style='{TABLE_STYLE}'><tr><th>artifact</th>"
                "<th>type</th><th>size</th><th>preview</th></tr>"
            )
            for artifact_name, artifact in artifacts.items():
                parts.append(
                    f"<tr><td>{html.escape(artifact_name)}</td>"
                    f"<td>{html.escape(artifact.type)}</td><td>{artifact.size:,} B</td>"
                    f"<td>{html.escape(artifact.preview)}</td></tr>"
                )
            parts.append("</table>")
            executed = artifacts.get("notebook")
            if executed is not None and os.path.exists(executed.url):
                link = os.path.relpath(executed.url, os.getcwd())
                parts.append(
                    f"<p><a class='cnb-notebook-link' href='{html.escape(link)}' target='_blank'"
                    " style='color:#1d4ed8;text-decoration:underline'>"
                    "open the executed notebook</a></p>"
                )
        plot = _metrics_png(store, record.id)
        if plot:
            parts.append(
                f"<img class='cnb-metrics' style='max-width:100%;height:auto' "
                f"src='data:image/png;base64,{plot}'/>"
            )
        storage = Backend.for_config(pipeline.config).artifacts
        parts.append(reports_html(store, storage, record.id, pictures))
        logs = {r.title: r.payload.get("text", "") for r in store.get_reports(record.id, "log")}
        for stream in ("stdout", "stderr"):
            text = logs.get(stream, "")
            if text:
                tail = "\n".join(text.rstrip().splitlines()[-8:])
                parts.append(
                    f"<details><summary>{stream}</summary><pre>{html.escape(tail)}</pre></details>"
                )
    parts.append("</div>")
    return "".join(parts)


def _metrics_png(store: Any, task_id: str) -> str:
    """The task's reported scalars as a small line plot (base64 PNG), or ''."""
    scalars = store.get_scalars(task_id)
    if not scalars:
        return ""
    from matplotlib.figure import Figure

    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in scalars:
        xs, ys = series.setdefault(f"{row.title} / {row.series}", ([], []))
        xs.append(row.iteration)
        ys.append(row.value)
    figure = Figure(figsize=(4.8, 2.4), dpi=90)
    axes = figure.subplots()
    for label, (xs, ys) in series.items():
        axes.plot(xs, ys, marker="o" if len(xs) < 3 else None, label=label)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")

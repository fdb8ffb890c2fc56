"""The controller widget: run, watch and inspect a pipeline inside the notebook that runs it.

A toolbar (Run, Stop, Retry failed, Run only this step, Run from this step down, Force
re-run), the DAG canvas, and a details panel for the selected step. The controller's
events arrive on its background thread; they only mark the view dirty, and a small thread
pushes the state to the front end at most ten times a second, so a burst of events never
floods it and the kernel stays free for other cells.
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from clearnb.cli.format import when_text
from clearnb.cli.runs import effective_status
from clearnb.events import PipelineEvent
from clearnb.pipeline import progress
from clearnb.store import pipelines as runs
from clearnb.widgets.dag import DagCanvas
from clearnb.widgets.details import step_details
from clearnb.widgets.reports import PictureCache

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
        if self.builder.code.value:  # the code shown follows the definition
            self.builder.show_code()
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

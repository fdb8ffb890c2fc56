"""The widget's details of one step: parameters, artifacts, figures, metrics, reports,
logs and the error with its traceback, as HTML themed by JupyterLab's CSS variables."""

from __future__ import annotations

import base64
import functools
import html
import io
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearnb.artifacts.storage import CAPTURED_FIGURE
from clearnb.backend import Backend
from clearnb.cli.format import size_text
from clearnb.pipeline.functions import ARTIFACT_MARKER
from clearnb.widgets.reports import PictureCache, reports_html, thumbnail_of

if TYPE_CHECKING:
    from clearnb.pipeline.controller import PipelineController
    from clearnb.store import Store
    from clearnb.store.records import ArtifactRecord, TaskRecord

TABLE_STYLE = (
    "border-collapse:collapse;text-align:left;font-size:12px;margin:4px 0 8px 0;"
    "table-layout:auto;max-width:100%"
)
CELL_STYLE = "padding:1px 6px;vertical-align:top;overflow-wrap:anywhere"
NOWRAP = "padding:1px 6px;vertical-align:top;white-space:nowrap"
ERROR_STYLE = "color:var(--jp-error-color1,#b91c1c)"
WARNING_STYLE = "color:var(--jp-warn-color1,#b45309)"
PRE_STYLE = (
    "white-space:pre-wrap;overflow-wrap:anywhere;font-size:11px;max-height:320px;overflow:auto;"
    "background:var(--jp-layout-color2,#f5f5f5);color:var(--jp-ui-font-color1,#111);"
    "padding:4px 6px;margin:2px 0"
)
LINK_STYLE = "color:var(--jp-content-link-color,#1d4ed8);text-decoration:underline"
COPIES_FOLDER = "clearnb-runs"
"""Folder beside the notebook for copies of executed notebooks Jupyter would not open
where they are (``.clearnb/`` is a hidden folder, which Jupyter does not serve)."""
LOG_LINES = 8


def step_details(
    pipeline: PipelineController,
    name: str,
    viewed: dict[str, Any] | None = None,
    pictures: PictureCache | None = None,
) -> str:
    """HTML describing one step: status, error and traceback, parameters, artifacts,
    figures, metrics, reports and logs; pictures are drawn once into ``pictures``."""
    state = (viewed or pipeline.state())["nodes"].get(name)
    if state is None:
        return ""
    store = pipeline.store
    record = _task(store, state.get("executed"))
    parts = [
        f"<div class='cnb-details' data-step='{html.escape(name)}'>",
        f"<h4 style='margin:6px 0'>{html.escape(name)} "
        f"<small>({html.escape(state['status'])})</small></h4>",
    ]
    parts.append(_error(state, record))
    parts.extend(
        f"<p class='cnb-warning' style='{WARNING_STYLE}'>&#9888; {html.escape(message)}</p>"
        for message in state.get("warnings") or []
    )
    parts.append(_parameters(state, record))
    if record is not None:
        storage = Backend.for_config(pipeline.config).artifacts
        artifacts = store.get_artifacts(record.id)
        reported = {
            str(r.payload.get("artifact"))
            for r in store.get_reports(record.id)
            if r.kind in ("image", "figure")
        }
        parts.append(_artifacts(artifacts, reported))
        parts.append(_figures(artifacts, storage, pictures or PictureCache()))
        parts.append(_notebook_link(artifacts.get("notebook")))
        parts.append(_metrics(store, record.id))
        parts.append(reports_html(store, storage, record.id, pictures))
        parts.append(_logs(store, record.id))
    parts.append("</div>")
    return "".join(part for part in parts if part)


def _task(store: Store, task_id: Any) -> TaskRecord | None:
    if not task_id:
        return None
    try:
        return store.get_task(str(task_id))
    except Exception:  # a task deleted meanwhile: show what the state has
        return None


def _error(state: Mapping[str, Any], record: TaskRecord | None) -> str:
    reason = (state.get("error") or {}).get("reason")
    if not reason:
        return ""
    text = f"<p class='cnb-error' style='{ERROR_STYLE}'>{html.escape(str(reason))}</p>"
    lines = (record.error or {}).get("traceback") if record is not None else None
    if lines:
        trace = "\n".join(str(line).rstrip("\n") for line in lines)
        text += (
            "<details class='cnb-traceback' open><summary>traceback</summary>"
            f"<pre style='{PRE_STYLE}'>{html.escape(trace)}</pre></details>"
        )
    return text


def shown_value(value: Any) -> str:
    """A parameter's value as the details show it: an artifact another step passes is
    named as such, anything else is its ``repr``."""
    if isinstance(value, dict) and set(value) == {ARTIFACT_MARKER}:
        marker = value[ARTIFACT_MARKER]
        return f"artifact {marker.get('name')!r} of task {str(marker.get('task'))[:8]}"
    return repr(value)


def _parameters(state: Mapping[str, Any], record: TaskRecord | None) -> str:
    overridden = dict(state.get("resolved") or {})
    written = state.get("parameters") or {}
    values: dict[str, Any] = {}
    if record is not None:
        for section, params in record.parameters.items():
            for key, value in params.items():
                values[f"{section}/{key}"] = value
    for key, value in {**written, **overridden}.items():
        values.setdefault(key, value)
    if not values:
        return ""
    rows = []
    for key, value in values.items():
        mark = key in written or key in overridden
        reference = written.get(key) if "${" in str(written.get(key, "")) else ""
        arrow = f" ← {html.escape(str(reference))}" if reference else ""
        rows.append(
            f"<tr class='{'cnb-overridden' if mark else ''}'>"
            f"<td style='{NOWRAP}'>{'★ ' if mark else ''}{html.escape(key)}</td>"
            f"<td style='{CELL_STYLE}'><code>{html.escape(shown_value(overridden.get(key, value)))}"
            f"</code>{arrow}</td></tr>"
        )
    return (
        f"<table class='cnb-parameters' style='{TABLE_STYLE}'>"
        "<tr><th>parameter</th><th>value</th></tr>" + "".join(rows) + "</table>"
        "<small>★ overridden by the pipeline</small>"
    )


def _artifacts(artifacts: Mapping[str, ArtifactRecord], reported: set[str]) -> str:
    """The table of artifacts; figures (captured or reported) show as pictures instead."""
    listed = {
        name: a
        for name, a in artifacts.items()
        if name not in reported and not CAPTURED_FIGURE.fullmatch(name)
    }
    if not listed:
        return ""
    rows = "".join(
        f"<tr><td style='{NOWRAP}'>{html.escape(name)}</td>"
        f"<td style='{CELL_STYLE};max-width:16em'>{html.escape(a.type)}</td>"
        f"<td style='{NOWRAP};text-align:right'>{size_text(a.size)}</td>"
        f"<td style='{CELL_STYLE}'>{html.escape(a.preview)}</td></tr>"
        for name, a in listed.items()
    )
    return (
        f"<table class='cnb-artifacts' style='{TABLE_STYLE}'><tr><th>artifact</th>"
        f"<th>type</th><th>size</th><th>preview</th></tr>{rows}</table>"
    )


def _figures(artifacts: Mapping[str, ArtifactRecord], storage: Any, pictures: PictureCache) -> str:
    figures = [a for name, a in artifacts.items() if CAPTURED_FIGURE.fullmatch(name)]
    if not figures:
        return ""
    parts = ["<div class='cnb-figures' style='display:flex;flex-wrap:wrap;gap:6px'>"]
    for record in figures:
        draw = functools.partial(thumbnail_of, record, storage)
        picture = pictures.get(f"image|{record.hash}", draw)
        body = (
            f"<img src='data:image/png;base64,{picture}' style='max-height:120px'/>"
            if picture
            else ""
        )
        parts.append(
            f"<figure class='cnb-figure' style='margin:0'>{body}"
            f"<figcaption style='font-size:11px'>{html.escape(record.name)}</figcaption></figure>"
        )
    parts.append("</div>")
    return "".join(parts)


def served_copy(executed: str | os.PathLike[str], folder: Path | None = None) -> Path | None:
    """A path Jupyter serves for the executed notebook: a copy in ``folder/clearnb-runs/``
    (made once, renewed when the notebook changes) when it lies in a hidden folder under
    ``folder`` (the kernel's working folder, e.g. ``.clearnb/``), else the notebook itself."""
    source = Path(executed)
    if not source.is_file():
        return None
    here = (folder or Path.cwd()).resolve()
    resolved = source.resolve()
    if here not in resolved.parents or not any(
        part.startswith(".") for part in resolved.relative_to(here).parts
    ):
        return resolved  # served where it is (or outside this folder: nothing to copy to)
    copy = here / COPIES_FOLDER / f"{resolved.parent.parent.name[:8]}-{resolved.name}"
    try:
        fresh = copy.is_file() and copy.stat().st_mtime >= resolved.stat().st_mtime
        if not fresh:
            copy.parent.mkdir(exist_ok=True)
            if copy.exists():
                copy.chmod(0o600)
            shutil.copyfile(resolved, copy)
            copy.chmod(0o400)
    except OSError:
        return None
    return copy


def _notebook_link(executed: ArtifactRecord | None) -> str:
    if executed is None:
        return ""
    served = served_copy(executed.url)
    if served is None:
        return ""
    link = os.path.relpath(served, Path.cwd())
    return (
        f"<p><a class='cnb-notebook-link' href='{html.escape(link)}' "
        f"data-path='{html.escape(link)}' target='_blank' style='{LINK_STYLE}'>"
        "open the executed notebook</a></p>"
    )


def _metrics(store: Store, task_id: str) -> str:
    """The task's scalars as small line plots, one axis per title (loss apart from accuracy)."""
    scalars = store.get_scalars(task_id)
    if not scalars:
        return ""
    from matplotlib.figure import Figure

    titles: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for row in scalars:
        xs, ys = titles.setdefault(row.title, {}).setdefault(row.series, ([], []))
        xs.append(row.iteration)
        ys.append(row.value)
    count = len(titles)
    figure = Figure(figsize=(4.8, 1.9 * count), dpi=90)
    axes = list(figure.subplots(count, 1, squeeze=False)[:, 0])
    for ax, (title, series) in zip(axes, titles.items(), strict=True):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 3 else None, label=label)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f"<img class='cnb-metrics' style='max-width:100%;height:auto' "
        f"src='data:image/png;base64,{data}'/>"
    )


def _logs(store: Store, task_id: str) -> str:
    logs = {r.title: r.payload.get("text", "") for r in store.get_reports(task_id, "log")}
    parts = []
    for stream in ("stdout", "stderr"):
        text = str(logs.get(stream, ""))
        if text:
            tail = "\n".join(text.rstrip().splitlines()[-LOG_LINES:])
            parts.append(
                f"<details><summary>{stream}</summary>"
                f"<pre style='{PRE_STYLE}'>{html.escape(tail)}</pre></details>"
            )
    return "".join(parts)

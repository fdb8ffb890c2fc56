"""The reports section of the widget's step details: plots, images, media, tables, text.

The details are rebuilt on every refresh of a selected step (up to ten times a second while
it runs), so what costs time is bounded: only the latest few plots and images are drawn,
each picture once (kept in a :class:`PictureCache` of the widget), tables show their first
rows, and a list gives every report in one line.
"""

from __future__ import annotations

import base64
import functools
import html
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clearnb.plot.reports import plot_groups, report_png, thumbnail_png
from clearnb.reports import summary

if TYPE_CHECKING:
    from clearnb.artifacts import ArtifactStorage
    from clearnb.store import Store
    from clearnb.store.records import ArtifactRecord, ReportRecord

DRAWN_PLOTS = 8
"""Plots drawn (the latest); the others are listed."""
SHOWN_IMAGES = 8
"""Images (and figures) shown as thumbnails (the latest)."""
THUMBNAIL_BYTES = 20_000_000
"""Image files larger than this are listed, not read for a thumbnail."""
SHOWN_TABLES = 3
TABLE_ROWS = 8
SHOWN_TEXTS = 12
LISTED_REPORTS = 50
"""Reports in the one-line-each list (the latest)."""
PICTURES_KEPT = 64

STYLE = "border-collapse:collapse;text-align:left;font-size:12px;margin:4px 0 8px 0"
IMAGE_STYLE = "max-height:120px;min-height:48px;image-rendering:pixelated"
PLOT_STYLE = "max-width:100%;height:auto"
"""A plot shrinks with a narrow panel instead of running out of it."""
"""Thumbnails fit 120 px; tiny images are shown larger, with sharp pixels."""


class PictureCache:
    """The pictures (base64 PNG) drawn for the details, by key; the oldest are dropped
    past :data:`PICTURES_KEPT`, so a long session does not grow without bound."""

    def __init__(self, size: int = PICTURES_KEPT) -> None:
        self.size = size
        self.pictures: OrderedDict[str, str | None] = OrderedDict()

    def get(self, key: str, draw: Callable[[], bytes | None]) -> str | None:
        """The picture of ``key``, drawn by ``draw()`` (PNG bytes or None) the first time."""
        if key in self.pictures:
            self.pictures.move_to_end(key)
            return self.pictures[key]
        png = draw()
        picture = base64.b64encode(png).decode("ascii") if png else None
        self.pictures[key] = picture
        while len(self.pictures) > self.size:
            self.pictures.popitem(last=False)
        return picture


def reports_html(
    store: Store,
    artifacts: ArtifactStorage,
    task_id: str,
    pictures: PictureCache | None = None,
) -> str:
    """HTML of the task's reports (``log`` reports excepted), or '' when it has none."""
    every = [r for r in store.get_reports(task_id) if r.kind != "log"]
    if not every:
        return ""
    pictures = pictures if pictures is not None else PictureCache()
    stored = store.get_artifacts(task_id)
    parts = ["<div class='cnb-reports'>"]
    parts.append(_plots(task_id, every, pictures))
    parts.append(_images(every, stored, artifacts, pictures))
    parts.append(_media(every, stored))
    parts.append(_tables(every))
    parts.append(_texts(every))
    parts.append(_listing(every))
    parts.append("</div>")
    return "".join(parts)


def _caption(report: ReportRecord) -> str:
    where = f"{report.title} / {report.series}" if report.series else report.title
    return f"{where} (it {report.iteration})"


def _plots(task_id: str, reports: Sequence[ReportRecord], pictures: PictureCache) -> str:
    groups = plot_groups(reports)
    if not groups:
        return ""
    parts = ["<div class='cnb-report-plots' style='display:flex;flex-wrap:wrap;gap:4px'>"]
    for group in groups[-DRAWN_PLOTS:]:
        key = (
            "plot|"
            + task_id
            + "|"
            + "|".join(f"{r.kind}:{r.title}:{r.series}:{r.iteration}:{r.timestamp}" for r in group)
        )
        picture = pictures.get(key, functools.partial(report_png, group))
        first = group[0]
        label = html.escape(f"{first.kind}: {_caption(first)}")
        if picture:
            parts.append(
                f"<img class='cnb-report-plot' data-kind='{html.escape(first.kind)}' "
                f"title='{label}' alt='{label}' style='{PLOT_STYLE}' "
                f"src='data:image/png;base64,{picture}'/>"
            )
        else:
            parts.append(
                f"<span class='cnb-report-plot' data-kind='{html.escape(first.kind)}'>"
                f"{label}: {html.escape(summary(first.kind, first.payload))}</span>"
            )
    parts.append("</div>")
    hidden = len(groups) - DRAWN_PLOTS
    if hidden > 0:
        parts.append(
            f"<small>{hidden} earlier plots not drawn; the list below and "
            "<code>clearnb task show</code> name them all.</small>"
        )
    return "".join(parts)


def thumbnail_of(record: ArtifactRecord, artifacts: ArtifactStorage) -> bytes | None:
    """A small PNG of the image artifact's file, unless it is too large or unreadable."""
    if record.size > THUMBNAIL_BYTES:
        return None
    try:
        local = artifacts.local_copy(record)
    except Exception:  # a missing or altered file: list the report, draw nothing
        return None
    return thumbnail_png(local)


def _images(
    reports: Sequence[ReportRecord],
    stored: dict[str, ArtifactRecord],
    artifacts: ArtifactStorage,
    pictures: PictureCache,
) -> str:
    images = [r for r in reports if r.kind in ("image", "figure")][-SHOWN_IMAGES:]
    if not images:
        return ""
    parts = ["<div class='cnb-report-images' style='display:flex;flex-wrap:wrap;gap:6px'>"]
    for report in images:
        caption = html.escape(_caption(report))
        record = stored.get(str(report.payload.get("artifact")))
        picture = None
        where = report.payload.get("url")
        if record is not None:
            where = record.url
            draw = functools.partial(thumbnail_of, record, artifacts)
            picture = pictures.get(f"image|{record.hash}", draw)
        body = (
            f"<img src='data:image/png;base64,{picture}' alt='{caption}' style='{IMAGE_STYLE}'/>"
            if picture
            else f"<code>{html.escape(str(where or summary(report.kind, report.payload)))}</code>"
        )
        parts.append(
            f"<figure class='cnb-report-image' data-kind='{report.kind}' style='margin:0'>"
            f"{body}<figcaption style='font-size:11px'>{caption}</figcaption></figure>"
        )
    parts.append("</div>")
    return "".join(parts)


def _link(url: str) -> str:
    """A link to ``url``: a local file relative to the working folder (as Jupyter serves
    it), anything else as it is."""
    target = url
    if "://" not in url and os.path.exists(url):
        target = os.path.relpath(url, os.getcwd())
    return (
        f"<a href='{html.escape(target)}' target='_blank' "
        f"style='color:#1d4ed8;text-decoration:underline'>{html.escape(os.path.basename(url))}</a>"
    )


def _media(reports: Sequence[ReportRecord], stored: dict[str, ArtifactRecord]) -> str:
    media = [r for r in reports if r.kind == "media"]
    if not media:
        return ""
    rows = []
    for report in media[-SHOWN_IMAGES:]:
        record = stored.get(str(report.payload.get("artifact")))
        url = record.url if record is not None else str(report.payload.get("url") or "")
        rows.append(
            f"<tr class='cnb-report-media'><td>{html.escape(_caption(report))}</td>"
            f"<td>{html.escape(str(report.payload.get('content_type', '')))}</td>"
            f"<td>{_link(url) if url else ''}</td></tr>"
        )
    return (
        f"<table class='cnb-report-media-list' style='{STYLE}'><tr><th>media</th>"
        "<th>type</th><th>file</th></tr>" + "".join(rows) + "</table>"
    )


def _tables(reports: Sequence[ReportRecord]) -> str:
    parts = []
    for report in [r for r in reports if r.kind == "table"][-SHOWN_TABLES:]:
        columns = report.payload.get("columns") or []
        rows = (report.payload.get("rows") or [])[:TABLE_ROWS]
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        total = report.payload.get("total_rows", len(rows))
        more = f"<small>{len(rows)} of {total} rows</small>" if total > len(rows) else ""
        parts.append(
            f"<div class='cnb-report-table'><b>{html.escape(_caption(report))}</b>"
            f"<table style='{STYLE}'><tr>{head}</tr>{body}</table>{more}</div>"
        )
    return "".join(parts)


def _texts(reports: Sequence[ReportRecord]) -> str:
    texts = [r for r in reports if r.kind == "text"][-SHOWN_TEXTS:]
    if not texts:
        return ""
    lines = "\n".join(f"[{r.title}] {r.payload.get('text', '')}" for r in texts)
    return f"<pre class='cnb-report-text' style='font-size:11px'>{html.escape(lines)}</pre>"


def _listing(reports: Sequence[ReportRecord]) -> str:
    shown = reports[-LISTED_REPORTS:]
    rows = "".join(
        f"<tr data-kind='{html.escape(r.kind)}'><td>{html.escape(r.kind)}</td>"
        f"<td>{html.escape(r.title)}</td><td>{html.escape(r.series)}</td>"
        f"<td>{r.iteration}</td><td>{html.escape(summary(r.kind, r.payload))}</td></tr>"
        for r in shown
    )
    hidden = len(reports) - len(shown)
    note = f"<small>{hidden} earlier reports not listed</small>" if hidden > 0 else ""
    return (
        f"<details class='cnb-report-list'><summary>reports ({len(reports)})</summary>"
        f"<table style='{STYLE}'><tr><th>kind</th><th>title</th><th>series</th>"
        f"<th>iteration</th><th>summary</th></tr>{rows}</table>{note}</details>"
    )

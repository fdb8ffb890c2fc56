"""``task.get_logger()``: scalars, text, tables, plots, figures, images and media reported
with a task, under ClearML's names and arguments.

The payload of each report is built by :mod:`clearnb.reports`; this module is the facade
that stores it (and the pictures and files, as artifacts) with the task.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clearnb import reports
from clearnb.backend import Backend
from clearnb.compat import UNUSED_KEY, unused_arguments, warn_unused
from clearnb.config import Config
from clearnb.current import CURRENT, attached_task_id, watch_cells
from clearnb.reports import MAX_TABLE_ROWS, SeriesInfo
from clearnb.scratch import scratch_folder
from clearnb.store.records import ArtifactRecord, ReportRecord, ScalarRecord

log = logging.getLogger(__name__)

SCALAR_BATCH = 500
"""Reported scalars written to the store together (at most)."""
SCALAR_INTERVAL = 1.0
"""Seconds a reported scalar may wait before it is written."""

__all__ = ["MAX_TABLE_ROWS", "SCALAR_BATCH", "SCALAR_INTERVAL", "Logger", "SeriesInfo"]


class Logger:
    """Reports to one task (``task_id``, in ``backend``'s store), as ClearML's Logger does.

    Get one with ``task.get_logger()`` or :meth:`current_logger`. Arguments that only
    tune ClearML's plotly charts (``extra_layout``, ``data_args``, ...) are kept with the
    report and named in a :class:`~clearnb.errors.CompatibilityWarning`.
    """

    SeriesInfo = SeriesInfo
    """One line of :meth:`report_line_plot` (ClearML's ``Logger.SeriesInfo``)."""

    def __init__(self, task_id: str, backend: Backend) -> None:
        self.task_id = task_id
        self._backend = backend
        self._store = backend.store
        self._lock = threading.Lock()
        self._pending: list[ScalarRecord] = []
        self._last_write = float("-inf")  # the first value is written at once

    @classmethod
    def current_logger(cls) -> Logger:
        """The logger of the current task (``Task.init`` must have run, or clearnb runs
        this notebook)."""
        with CURRENT.lock:
            task = CURRENT.task
            if task is None:
                task_id = attached_task_id()
                if task_id is None:
                    raise RuntimeError("No current task: call Task.init(...) first.")
                early = CURRENT.logger
                if early is None or early.task_id != task_id:
                    # the run's task is attached by Task.init, which takes this logger over
                    early = cls(task_id, Backend.for_config(Config.from_env()))
                    CURRENT.logger = early
                    watch_cells(early.flush)
                return early
        return task.get_logger()

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        """Record ``value`` of ``title``/``series`` at ``iteration``.

        Scalars are written in batches (every ``SCALAR_BATCH`` values or
        ``SCALAR_INTERVAL`` seconds, at the end of every notebook cell, and by :meth:`flush`),
        so a training loop reporting every iteration does not wait on the store.
        """
        record = ScalarRecord(self.task_id, str(title), str(series), int(iteration), float(value))
        with self._lock:
            self._pending.append(record)
            due = (
                len(self._pending) >= SCALAR_BATCH
                or time.monotonic() - self._last_write >= SCALAR_INTERVAL
            )
        if due:
            self.flush()

    def report_single_value(self, name: str, value: float) -> None:
        """Record one summary value (a scalar of the ``Summary`` title)."""
        self.report_scalar("Summary", name, value, 0)

    # -- text and tables -------------------------------------------------------------

    def report_text(
        self,
        msg: str,
        level: int = logging.INFO,
        print_console: bool = True,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Record a line of text at ``level`` (and print it, by default)."""
        if print_console:
            print(msg)
        given: dict[str, Any] = {"args": list(args)} if args else {}
        given.update(kwargs)
        self._add(
            "text",
            logging.getLevelName(level),
            "",
            0,
            {"text": str(msg), "level": level},
            unused_arguments(given),
            "report_text",
            "a text report keeps its message and level",
        )

    def report_table(
        self,
        title: str,
        series: str,
        iteration: int | None = None,
        table_plot: Any = None,
        csv: str | None = None,
        url: str | None = None,
        extra_layout: dict[str, Any] | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> None:
        """Record a table: a pandas DataFrame or a list of rows (first row the header) as
        ``table_plot``, a CSV file or text as ``csv``, or a CSV file at ``url`` (any
        fsspec URL); exactly one of them."""
        reports.only_one("report_table", table_plot=table_plot, csv=csv, url=url)
        if url:
            from clearnb.storage import StorageManager

            csv = StorageManager.get_local_copy(url, extract_archive=False)
        self._add(
            "table",
            title,
            series,
            iteration,
            reports.table(table_plot, csv),
            unused_arguments({"extra_layout": extra_layout, "extra_data": extra_data}),
            "report_table",
            reports.LAYOUT_WHY,
        )

    # -- plots -----------------------------------------------------------------------

    def report_histogram(
        self,
        title: str,
        series: str,
        values: Any,
        iteration: int | None = None,
        labels: Sequence[str] | None = None,
        xlabels: Sequence[str] | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        mode: str | None = None,
        data_args: dict[str, Any] | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """Record a histogram already counted: ``values`` has one bar per value (a row of
        them per series, named by ``labels``; ``xlabels`` names the bars). ``mode``
        (``group``, ``stack`` or ``relative``) says how several rows are drawn."""
        self._add(
            "histogram",
            title,
            series,
            iteration,
            reports.histogram(values, labels, xlabels, xaxis, yaxis, mode),
            unused_arguments({"data_args": data_args, "extra_layout": extra_layout}),
            "report_histogram",
            reports.LAYOUT_WHY,
        )

    def report_vector(
        self,
        title: str,
        series: str,
        values: Any,
        iteration: int | None = None,
        labels: Sequence[str] | None = None,
        xlabels: Sequence[str] | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        mode: str | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """:meth:`report_histogram` under its older name (deprecated, as in ClearML)."""
        _deprecated("report_vector", "report_histogram")
        self._add(
            "histogram",
            title,
            series,
            iteration,
            reports.histogram(values, labels, xlabels, xaxis, yaxis, mode),
            unused_arguments({"extra_layout": extra_layout}),
            "report_vector",
            reports.LAYOUT_WHY,
        )

    def report_scatter2d(
        self,
        title: str,
        series: str,
        scatter: Any,
        iteration: int | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        labels: Sequence[str] | None = None,
        mode: str = "lines",
        comment: str | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """Record ``(x, y)`` points (rows of a numpy array or pairs) as one series;
        ``labels`` names each point, ``mode`` is ``lines``, ``markers`` or
        ``lines+markers``. Series reported with the same title and iteration are drawn
        together."""
        self._add(
            "scatter2d",
            title,
            series,
            iteration,
            reports.scatter2d(series, scatter, xaxis, yaxis, labels, mode, comment),
            unused_arguments({"extra_layout": extra_layout}),
            "report_scatter2d",
            reports.LAYOUT_WHY,
        )

    def report_line_plot(
        self,
        title: str,
        series: Sequence[reports.SeriesInfo | Mapping[str, Any]],
        xaxis: str,
        yaxis: str,
        mode: str = "lines",
        iteration: int | None = None,
        reverse_xaxis: bool = False,
        comment: str | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """Record several lines (:class:`SeriesInfo`, or dicts of its fields) in one plot
        (deprecated in ClearML for :meth:`report_scatter2d`, and recorded all the same)."""
        _deprecated("report_line_plot", "report_scatter2d")
        payload = reports.line_plot(series, xaxis, yaxis, mode, reverse_xaxis, comment)
        first = payload["series"][0]["name"] if payload["series"] else ""
        self._add(
            "line",
            title,
            first,
            iteration,
            payload,
            unused_arguments({"extra_layout": extra_layout}),
            "report_line_plot",
            reports.LAYOUT_WHY,
        )

    def report_scatter3d(
        self,
        title: str,
        series: str,
        scatter: Any,
        iteration: int | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        zaxis: str | None = None,
        labels: Sequence[Any] | None = None,
        mode: str = "markers",
        fill: bool = False,
        comment: str | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """Record ``(x, y, z)`` points, or a list of such series, in a 3D plot."""
        unused = unused_arguments({"fill": fill, "extra_layout": extra_layout}, {"fill": False})
        why = reports.LAYOUT_WHY
        if "fill" in unused:
            why = f"the 3D drawings here do not fill under a line, and {why}"
        self._add(
            "scatter3d",
            title,
            series,
            iteration,
            reports.scatter3d(series, scatter, xaxis, yaxis, zaxis, labels, mode, comment),
            unused,
            "report_scatter3d",
            why,
        )

    def report_confusion_matrix(
        self,
        title: str,
        series: str,
        matrix: Any,
        iteration: int | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        xlabels: Sequence[str] | None = None,
        ylabels: Sequence[str] | None = None,
        yaxis_reversed: bool = False,
        comment: str | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """Record a matrix drawn as a heat map with its values; row 0 is at the bottom,
        or at the top with ``yaxis_reversed``."""
        payload = reports.matrix(
            matrix, xaxis, yaxis, xlabels, ylabels, comment, "report_confusion_matrix"
        )
        payload["yaxis_reversed"] = bool(yaxis_reversed)
        self._add(
            "confusion_matrix",
            title,
            series,
            iteration,
            payload,
            unused_arguments({"extra_layout": extra_layout}),
            "report_confusion_matrix",
            reports.LAYOUT_WHY,
        )

    def report_matrix(
        self,
        title: str,
        series: str,
        matrix: Any,
        iteration: int | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        xlabels: Sequence[str] | None = None,
        ylabels: Sequence[str] | None = None,
        yaxis_reversed: bool = False,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """:meth:`report_confusion_matrix` under its older name (deprecated, as in ClearML)."""
        _deprecated("report_matrix", "report_confusion_matrix")
        payload = reports.matrix(matrix, xaxis, yaxis, xlabels, ylabels, None, "report_matrix")
        payload["yaxis_reversed"] = bool(yaxis_reversed)
        self._add(
            "confusion_matrix",
            title,
            series,
            iteration,
            payload,
            unused_arguments({"extra_layout": extra_layout}),
            "report_matrix",
            reports.LAYOUT_WHY,
        )

    def report_surface(
        self,
        title: str,
        series: str,
        matrix: Any,
        iteration: int | None = None,
        xaxis: str | None = None,
        yaxis: str | None = None,
        zaxis: str | None = None,
        xlabels: Sequence[str] | None = None,
        ylabels: Sequence[str] | None = None,
        camera: Sequence[float] | None = None,
        comment: str | None = None,
        extra_layout: dict[str, Any] | None = None,
    ) -> None:
        """Record a matrix of heights drawn as a 3D surface, seen from ``camera`` (an
        ``(x, y, z)`` position; default ``(1, 1, 1)``)."""
        payload = reports.matrix(matrix, xaxis, yaxis, xlabels, ylabels, comment, "report_surface")
        if camera is not None and len(camera) != 3:
            raise ValueError(f"report_surface: camera is an (x, y, z) position, not {camera!r}.")
        payload["zaxis"] = zaxis
        payload["camera"] = None if camera is None else [float(c) for c in camera]
        self._add(
            "surface",
            title,
            series,
            iteration,
            payload,
            unused_arguments({"extra_layout": extra_layout}),
            "report_surface",
            reports.LAYOUT_WHY,
        )

    def report_plotly(
        self, title: str, series: str, figure: Any, iteration: int | None = None
    ) -> None:
        """Record a plotly figure (a ``plotly`` Figure or a plotly.js dict) as its JSON."""
        self._add("plotly", title, series, iteration, reports.plotly_figure(figure))

    # -- pictures and files ----------------------------------------------------------

    def report_matplotlib_figure(
        self,
        title: str,
        series: str,
        figure: Any,
        iteration: int | None = None,
        report_image: bool = False,
        report_interactive: bool = True,
    ) -> None:
        """Store a matplotlib figure as a PNG artifact and record it under title/series.

        ``figure`` may also be the ``matplotlib.pyplot`` module: its current figure is
        stored. The figure is always kept as a picture (what ClearML does when
        ``report_interactive`` is false or its conversion fails); ``report_image``
        records it as an image report (ClearML's debug sample) instead of a figure.
        """
        if callable(getattr(figure, "gcf", None)):
            figure = figure.gcf()
        name = reports.artifact_name(f"{title}_{series}_{int(iteration or 0)}")
        stored = self._save(name, figure, title, series, iteration, "figure")
        if report_image:
            payload = {"artifact": name, "content_type": "image/png", "size": stored.size}
            self._add("image", title, series, iteration, payload)
        else:
            self._add("figure", title, series, iteration, {"artifact": name})

    def report_image(
        self,
        title: str,
        series: str,
        iteration: int | None = None,
        local_path: str | None = None,
        image: Any = None,
        matrix: Any = None,
        max_image_history: int | None = None,
        delete_after_upload: bool = False,
        url: str | None = None,
    ) -> None:
        """Record an image: a file at ``local_path`` (stored as it is), a PIL image or a
        numpy array as ``image`` (stored as PNG), or one already stored at ``url``;
        exactly one of them. ``delete_after_upload`` removes ``local_path`` once stored.
        """
        reports.only_one("report_image", local_path=local_path, url=url, image=image, matrix=matrix)
        if matrix is not None:
            warnings.warn(
                "report_image: matrix= is deprecated; pass the array as image=.",
                DeprecationWarning,
                stacklevel=2,
            )
            image = matrix
        unused = unused_arguments({"max_image_history": max_image_history})
        why = "every reported image is kept"
        if url:
            payload: dict[str, Any] = {"url": url, "content_type": reports.content_type(url)}
            self._add("image", title, series, iteration, payload, unused, "report_image", why)
            return
        name = reports.artifact_name(f"image_{title}_{series}_{int(iteration or 0)}")
        if local_path:
            path = _local_file("report_image", local_path)
            stored = self._save(name, str(path), title, series, iteration, "file")
            payload = {
                "artifact": name,
                "file": path.name,
                "content_type": reports.content_type(path.name),
                "size": stored.size,
                **reports.image_info(path),
            }
            if delete_after_upload:
                path.unlink(missing_ok=True)
        else:
            picture = reports.image_value(image)
            stored = self._save(name, picture, title, series, iteration, "figure")
            payload = {
                "artifact": name,
                "content_type": "image/png",
                "size": stored.size,
                **reports.image_info(picture),
            }
        self._add("image", title, series, iteration, payload, unused, "report_image", why)

    def report_media(
        self,
        title: str,
        series: str,
        iteration: int | None = None,
        local_path: str | None = None,
        stream: Any = None,
        file_extension: str | None = None,
        max_history: int | None = None,
        delete_after_upload: bool = False,
        url: str | None = None,
    ) -> None:
        """Record a media file (audio, video, HTML, ...): a file at ``local_path``, the
        content of ``stream`` (bytes or text; ``file_extension`` says its type), or one
        already stored at ``url``; exactly one of them. It is stored as an artifact and
        its content type recorded; ``delete_after_upload`` removes ``local_path`` once
        stored."""
        reports.only_one("report_media", local_path=local_path, url=url, stream=stream)
        if stream is not None and not file_extension:
            raise ValueError(
                "report_media: a stream needs file_extension= (e.g. '.mp4') to say its type."
            )
        suffix = "." + file_extension.lstrip(".") if file_extension else ""
        unused = unused_arguments({"max_history": max_history})
        why = "every reported media file is kept"
        if url:
            kind_of = reports.content_type(f"media{suffix}" if suffix else url)
            payload: dict[str, Any] = {"url": url, "content_type": kind_of}
            self._add("media", title, series, iteration, payload, unused, "report_media", why)
            return
        name = reports.artifact_name(f"media_{title}_{series}_{int(iteration or 0)}")
        with scratch_folder(self._backend.config.cache_dir, "media") as scratch:
            if local_path:
                path = _local_file("report_media", local_path)
                source = path
                if suffix and path.suffix != suffix:
                    source = Path(scratch) / f"{path.stem}{suffix}"
                    shutil.copyfile(path, source)
            else:
                data = stream.getvalue() if hasattr(stream, "getvalue") else stream.read()
                source = Path(scratch) / f"{reports.artifact_name(f'{title}_{series}')}{suffix}"
                source.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
            stored = self._save(name, str(source), title, series, iteration, "file")
        if local_path and delete_after_upload:
            Path(local_path).expanduser().unlink(missing_ok=True)
        payload = {
            "artifact": name,
            "file": source.name,
            "content_type": reports.content_type(source.name),
            "size": stored.size,
        }
        self._add("media", title, series, iteration, payload, unused, "report_media", why)

    # -- storing ---------------------------------------------------------------------

    def _save(
        self,
        name: str,
        value: Any,
        title: str,
        series: str,
        iteration: int | None,
        codec: str,
    ) -> ArtifactRecord:
        """Store ``value`` as artifact ``name`` of the task with ``codec``; its record."""
        stored = self._backend.artifacts.save(
            self.task_id,
            name,
            value,
            codec=codec,
            metadata={"title": title, "series": series, "iteration": int(iteration or 0)},
        )
        self._store.put_artifact(stored)
        return stored

    def _add(
        self,
        kind: str,
        title: str,
        series: str,
        iteration: int | None,
        payload: dict[str, Any],
        unused: Mapping[str, Any] | None = None,
        method: str = "",
        why: str = "",
    ) -> None:
        """Store a report; the ``unused`` arguments of ``method`` go with its payload and
        are named (with ``why``) in a warning pointing at the caller of ``method``."""
        if unused:
            payload[UNUSED_KEY] = dict(unused)
        self._store.add_report(
            ReportRecord(
                self.task_id,
                kind,
                title=str(title),
                series=str(series),
                iteration=int(iteration or 0),
                payload=payload,
            )
        )
        if unused:
            warn_unused(f"Logger.{method}", unused, why, stacklevel=4)

    def flush(self, wait: bool = False) -> bool:
        """Write the scalars reported since the last write."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._last_write = time.monotonic()
        if pending:
            self._store.add_scalars(pending)
        return True


def _deprecated(method: str, instead: str) -> None:
    warnings.warn(
        f"Logger.{method} is deprecated (as in ClearML); use Logger.{instead} instead.",
        DeprecationWarning,
        stacklevel=3,
    )


def _local_file(method: str, path: str) -> Path:
    local = Path(path).expanduser()
    if not local.is_file():
        raise FileNotFoundError(
            f"{method}: there is no file at {path} (relative paths start from {Path.cwd()})."
        )
    return local

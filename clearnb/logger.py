"""``task.get_logger()``: scalars, figures, tables and text reported with a task."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.current import CURRENT, attached_task_id, watch_cells
from clearnb.store.records import ReportRecord, ScalarRecord

log = logging.getLogger(__name__)

SCALAR_BATCH = 500
"""Reported scalars written to the store together (at most)."""
SCALAR_INTERVAL = 1.0
"""Seconds a reported scalar may wait before it is written."""
MAX_TABLE_ROWS = 1000
"""Rows of a reported table kept in the store; a larger table is cut, and says so."""


class Logger:
    """Reports to one task (``task_id``, in ``backend``'s store), as ClearML's Logger does.

    Get one with ``task.get_logger()`` or :meth:`current_logger`.
    """

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

    def report_text(
        self, msg: str, level: int = logging.INFO, print_console: bool = True, **_: Any
    ) -> None:
        """Record a line of text (and print it, by default)."""
        if print_console:
            print(msg)
        self._store.add_report(
            ReportRecord(
                self.task_id,
                "text",
                title=logging.getLevelName(level),
                payload={"text": str(msg), "level": level},
            )
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
        """Record a table: a pandas DataFrame, a list of rows (first row the header), or a CSV."""
        columns, rows = _table(table_plot, csv or url)
        truncated = len(rows) > MAX_TABLE_ROWS
        self._store.add_report(
            ReportRecord(
                self.task_id,
                "table",
                title=str(title),
                series=str(series),
                iteration=int(iteration or 0),
                payload={
                    "columns": columns,
                    "rows": rows[:MAX_TABLE_ROWS],
                    "total_rows": len(rows),
                    "truncated": truncated,
                },
            )
        )

    def report_matplotlib_figure(
        self,
        title: str,
        series: str,
        figure: Any,
        iteration: int | None = None,
        report_image: bool = False,
        report_interactive: bool = True,
    ) -> None:
        """Store a matplotlib figure as an image artifact and record it under title/series.

        ``figure`` may also be the ``matplotlib.pyplot`` module: its current figure is stored.
        """
        if callable(getattr(figure, "gcf", None)):
            figure = figure.gcf()
        name = _artifact_name(f"{title}_{series}_{int(iteration or 0)}")
        stored = self._backend.artifacts.save(
            self.task_id,
            name,
            figure,
            metadata={"title": title, "series": series, "iteration": int(iteration or 0)},
        )
        self._store.put_artifact(stored)
        self._store.add_report(
            ReportRecord(
                self.task_id,
                "figure",
                title=str(title),
                series=str(series),
                iteration=int(iteration or 0),
                payload={"artifact": name},
            )
        )

    def flush(self, wait: bool = False) -> bool:
        """Write the scalars reported since the last write."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._last_write = time.monotonic()
        if pending:
            self._store.add_scalars(pending)
        return True


def _artifact_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "figure"
    return cleaned[:150]


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (CSV text with long lines is not a path)."""
    from pathlib import Path

    if "\n" in text:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _table(table: Any, csv: str | None) -> tuple[list[str], list[list[Any]]]:
    if table is None and csv is not None:
        import csv as csv_module
        import io
        from pathlib import Path

        text = Path(csv).read_text() if _is_file(csv) else csv
        parsed = list(csv_module.reader(io.StringIO(text)))
        return (parsed[0], parsed[1:]) if parsed else ([], [])
    if hasattr(table, "to_dict") and hasattr(table, "columns"):
        frame = table.reset_index() if getattr(table.index, "name", None) else table
        columns = [str(c) for c in frame.columns]
        rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        return columns, rows
    if isinstance(table, Sequence) and table and isinstance(table[0], Sequence):
        header, *body = table
        return [str(c) for c in header], [[_plain(v) for v in row] for row in body]
    raise TypeError(
        "report_table needs table_plot= a pandas DataFrame or a list of rows (first row the "
        "header), or csv= a CSV path or text."
    )


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

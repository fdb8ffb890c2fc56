"""Reading a task's reported scalars, as ClearML's Task does.

Part of :class:`clearnb.task.Task`, working with the task through :class:`TaskFacts` only.
"""

from __future__ import annotations

import math

from clearnb.taskfacts import TaskFacts


class ReportedMetrics(TaskFacts):
    """The scalars a task reported: every value, or the last, smallest and largest."""

    def get_reported_scalars(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        """Reported scalars: ``{title: {series: {"x": iterations, "y": values}}}``."""
        self.flush()
        result: dict[str, dict[str, dict[str, list[float]]]] = {}
        for row in self.backend.store.get_scalars(self.id):
            series = result.setdefault(row.title, {}).setdefault(row.series, {"x": [], "y": []})
            series["x"].append(row.iteration)
            series["y"].append(row.value)
        return result

    def get_last_scalar_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last": v, "min": v, "max": v}}}``: each series' value at the
        last iteration reported, and its smallest and largest value (NaN left out of those
        unless it is the only value)."""
        self.flush()
        reported: dict[tuple[str, str], list[float]] = {}
        for row in self.backend.store.get_scalars(self.id):  # by title, series, iteration
            reported.setdefault((row.title, row.series), []).append(row.value)
        summary: dict[str, dict[str, dict[str, float]]] = {}
        for (title, series), values in reported.items():
            finite = [v for v in values if not math.isnan(v)] or values
            last = {"last": values[-1], "min": min(finite), "max": max(finite)}
            summary.setdefault(title, {})[series] = last
        return summary

"""Static matplotlib pictures of a pipeline: the DAG of its steps, coloured by status."""

from __future__ import annotations

from clearnb.plot.dag import STATUS_COLOURS, StatusStyle, figure_png, plot_pipeline

__all__ = ["STATUS_COLOURS", "StatusStyle", "figure_png", "plot_pipeline"]

"""One report of every kind, made through a real logger, for the tests of the views."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from clearnb import Logger

EXPECTED = {
    "text": ("INFO", "it 0", "epoch done"),
    "table": ("scores / final", "it 1", "2 rows x 2 columns"),
    "figure": ("curve / loss", "it 2", "artifact curve_loss_2"),
    "histogram": ("dist / counts", "it 3", "2 series x 3 bars, stack"),
    "scatter2d": ("points / xy", "it 4", "1 series (xy), 3 points, markers"),
    "line": ("lines / up", "it 5", "2 series (up, down), 4 points, lines"),
    "scatter3d": ("cloud / xyz", "it 6", "1 series (xyz), 4 points, markers"),
    "confusion_matrix": ("confusion / val", "it 7", "2x2 matrix, 1..9"),
    "surface": ("heights / s", "it 8", "2x3 matrix, 0..5"),
    "plotly": ("plotly / bars", "it 9", "plotly figure, 1 traces (bar)"),
    "image": ("samples / red", "it 10", "image/png, 6x4 RGB"),
    "media": ("audio / clip", "it 11", "audio/x-wav, 16 B, artifact media_audio_clip_11"),
}
"""For each kind: the title / series, the iteration and the summary ``task show`` prints."""


def report_every_kind(logger: Logger, folder: Path) -> None:
    """Make one report of each kind in :data:`EXPECTED` through ``logger``."""
    logger.report_text("epoch done", print_console=False)
    logger.report_table("scores", "final", iteration=1, table_plot=[["a", "b"], [1, 2], [3, 4]])
    figure = Figure(figsize=(2, 1.5), dpi=50)
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])
    logger.report_matplotlib_figure("curve", "loss", figure, iteration=2)
    logger.report_histogram(
        "dist", "counts", [[1, 2, 3], [3, 2, 1]], iteration=3, labels=["a", "b"], mode="stack"
    )
    logger.report_scatter2d(
        "points",
        "xy",
        [[0, 1], [1, 3], [2, 2]],
        iteration=4,
        mode="markers",
        labels=["p", "q", "r"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        logger.report_line_plot(
            "lines",
            [
                Logger.SeriesInfo(name="up", data=[[0, 0], [1, 1]]),
                Logger.SeriesInfo(name="down", data=[[0, 1], [1, 0]]),
            ],
            xaxis="t",
            yaxis="v",
            iteration=5,
        )
    logger.report_scatter3d("cloud", "xyz", np.arange(12).reshape(4, 3), iteration=6)
    logger.report_confusion_matrix(
        "confusion", "val", [[9, 1], [2, 7]], iteration=7, xlabels=["cat", "dog"]
    )
    logger.report_surface("heights", "s", [[0, 1, 2], [3, 4, 5]], iteration=8)
    logger.report_plotly(
        "plotly", "bars", {"data": [{"type": "bar", "x": ["a", "b"], "y": [2, 5]}]}, iteration=9
    )
    red = np.zeros((4, 6, 3), dtype=np.uint8)
    red[:, :, 0] = 255
    logger.report_image("samples", "red", iteration=10, image=red)
    clip = folder / "clip.wav"
    clip.write_bytes(b"RIFF....WAVEfmt ")
    logger.report_media("audio", "clip", iteration=11, local_path=str(clip))
    logger.report_media("page", "html", iteration=12, stream=io.StringIO("<i>x</i>"),
                        file_extension="html")  # fmt: skip

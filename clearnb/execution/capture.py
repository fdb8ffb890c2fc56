"""What an executed notebook holds as evidence: figures, streams, cell timings, the error."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbformat import NotebookNode

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (tracebacks from IPython carry them)."""
    return _ANSI.sub("", text)


@dataclass
class Figure:
    """An image a cell displayed."""

    cell_index: int
    number: int
    """1-based position among the images of that cell."""
    extension: str
    data: bytes

    @property
    def name(self) -> str:
        """Artifact name: ``figure_c<cell>_<n>``."""
        return f"figure_c{self.cell_index}_{self.number}"


@dataclass
class Evidence:
    """Everything worth keeping from an executed notebook besides the notebook itself."""

    figures: list[Figure] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)
    """Per cell: index, type, status, start, end and duration (seconds)."""
    duration: float | None = None


def collect_evidence(nb: NotebookNode) -> Evidence:
    """Figures, stdout/stderr and timings of every cell of an executed notebook."""
    evidence = Evidence()
    stdout: list[str] = []
    stderr: list[str] = []
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("papermill", {})
        evidence.cells.append(
            {
                "index": index,
                "type": cell.get("cell_type"),
                "status": meta.get("status"),
                "start": meta.get("start_time"),
                "end": meta.get("end_time"),
                "duration": meta.get("duration"),
            }
        )
        number = 0
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                target = stdout if output.get("name") == "stdout" else stderr
                target.append(_text(output.get("text", "")))
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                for mime, extension in IMAGE_TYPES.items():
                    if mime in data:
                        number += 1
                        evidence.figures.append(
                            Figure(index, number, extension, _image_bytes(mime, data[mime]))
                        )
                        break
    evidence.stdout = "".join(stdout)
    evidence.stderr = strip_ansi("".join(stderr))
    duration = nb.get("metadata", {}).get("papermill", {}).get("duration")
    evidence.duration = float(duration) if duration is not None else None
    return evidence


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _image_bytes(mime: str, value: Any) -> bytes:
    text = _text(value)
    if mime == "image/svg+xml":
        return text.encode("utf-8")
    return base64.b64decode(text)

"""Bounded outputs: what a run prints is kept up to a limit, and the cut is said.

A cell that prints without end would otherwise grow the executed notebook, the memory of
the process running it and the store without bound. The executed notebook keeps outputs
up to ``CLEARNB_OUTPUT_LIMIT`` (:func:`clearnb.execution.limits.output_limit`) for the
whole run; past it, each cell that still prints gets one note saying how much was left
out and how to keep more. The store keeps only the tail of each stream
(:func:`clearnb.execution.limits.log_tail`); the notebook is where the rest is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nbformat
from papermill.clientwrap import PapermillNotebookClient

from clearnb.execution.limits import DEFAULT_OUTPUT_LIMIT, OUTPUT_LIMIT_ENV, format_size

_BOUNDED = frozenset({"stream", "display_data", "execute_result", "update_display_data"})


def message_size(msg: Mapping[str, Any]) -> int:
    """About how many bytes an output message adds to the notebook."""
    content = msg.get("content") or {}
    if "text" in content:
        return len(str(content["text"]))
    data = content.get("data") or {}
    return sum(len(str(value)) for value in data.values())


class BoundedNotebookClient(PapermillNotebookClient):  # type: ignore[misc]
    """papermill's notebook client keeping at most ``limit`` bytes of outputs per run."""

    def __init__(self, *args: Any, limit: int = DEFAULT_OUTPUT_LIMIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.kept = 0
        self.left_out = 0
        self.full = False
        """True once the limit was reached: every later output is left out."""
        self._notes: dict[int, dict[str, Any]] = {}
        self._dropped: dict[int, int] = {}

    def output(
        self,
        outs: list[Any],
        msg: dict[str, Any],
        display_id: str | None,
        cell_index: int,
    ) -> Any:
        """Keep the output while the run is within its limit; past it, count it in the note."""
        if msg.get("msg_type") not in _BOUNDED:
            return super().output(outs, msg, display_id, cell_index)
        size = message_size(msg)
        room = self.limit - self.kept
        if not self.full and size <= room:
            self.kept += size
            return super().output(outs, msg, display_id, cell_index)
        if not self.full and msg.get("msg_type") == "stream" and room > 0:
            content = dict(msg.get("content") or {})
            content["text"] = str(content.get("text", ""))[:room]  # the part that fits
            super().output(outs, {**msg, "content": content}, display_id, cell_index)
            self.kept += room
            size -= room
        self.full = True
        self.left_out += size
        note = self._notes.get(cell_index)
        if note is None or not any(out is note for out in outs):
            note = nbformat.v4.new_output(  # type: ignore[no-untyped-call]
                "stream", name="stderr", text=""
            )
            outs.append(note)
            self._notes[cell_index] = note
        note["text"] = self._note_text(note, size)
        return None

    def _note_text(self, note: Mapping[str, Any], size: int) -> str:
        dropped = self._dropped.get(id(note), 0) + size
        self._dropped[id(note)] = dropped
        return (
            f"[clearnb] this run's outputs reached their limit of {format_size(self.limit)} "
            f"({OUTPUT_LIMIT_ENV}); {format_size(dropped)} more output of this cell was not "
            f"kept. Set {OUTPUT_LIMIT_ENV}=500MB (for example) to keep more.\n"
        )

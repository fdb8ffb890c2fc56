"""How the commands show times, sizes and statuses on a terminal."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from collections.abc import Callable

import click

from clearnb.text import printable, printable_block, printable_text

__all__ = [
    "STATUS_COLOURS",
    "CommandError",
    "CommandUsageError",
    "duration_text",
    "echo",
    "printable",
    "printable_block",
    "printable_text",
    "seconds_text",
    "size_text",
    "status_colour",
    "terminal_size",
    "terminal_style",
    "when_text",
]

STATUS_COLOURS = {
    "completed": "green",
    "failed": "red",
    "aborted": "yellow",
    "running": "cyan",
    "queued": "blue",
    "created": "white",
}
"""The colour of each task status in ``clearnb task`` listings."""


def when_text(timestamp: float | None) -> str:
    """``timestamp`` as local date and time, or ``-`` when there is none."""
    if not timestamp:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def duration_text(start: float | None, end: float | None) -> str:
    """Seconds (or minutes, from two on) from ``start`` to ``end``, or to now if not ended."""
    if not start:
        return "-"
    seconds = (end or dt.datetime.now().timestamp()) - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def size_text(size: int) -> str:
    """``size`` bytes in B, kB, MB or GB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def seconds_text(seconds: float) -> str:
    """``seconds`` the way pipeline progress shows them."""
    from clearnb.pipeline.progress import format_seconds

    return format_seconds(seconds)


def status_colour(status: str) -> str | None:
    """The terminal colour of a pipeline's or step's status."""
    from clearnb.pipeline.progress import TERMINAL_COLOURS

    return TERMINAL_COLOURS.get(status)


def terminal_style() -> Callable[[str, str], str]:
    """A function colouring a text by a status; plain text when ``NO_COLOR`` is set."""
    if os.environ.get("NO_COLOR"):
        return lambda text, status: text
    return lambda text, status: click.style(text, fg=status_colour(status))


def terminal_size() -> tuple[int, int]:
    """Columns and rows of the terminal the live view is drawn on (stderr)."""
    if not os.environ.get("COLUMNS"):
        try:
            size = os.get_terminal_size(sys.stderr.fileno())
            if size.columns > 0 and size.lines > 0:
                return size.columns, size.lines
        except (OSError, ValueError):
            pass
    size = shutil.get_terminal_size()
    return size.columns, size.lines


def echo(text: object = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` with the control characters it holds escaped (colours kept).

    Every command prints through here, so what a user named or a notebook printed never
    reaches the terminal as a cursor move, a screen clear or a title change. One-line
    fields are also passed through :func:`printable` where they are formatted, so that a
    newline in a name cannot split a row.
    """
    click.echo(printable_block(text), err=err, nl=nl)


class CommandError(click.ClickException):
    """A command's refusal: click's error, its message's control characters escaped."""

    def format_message(self) -> str:
        """The message as printed after ``Error:``."""
        return printable_block(self.message)


class CommandUsageError(click.UsageError):
    """A usage error (exit 2), its message's control characters escaped."""

    def format_message(self) -> str:
        """The message as printed after ``Error:``."""
        return printable_block(self.message)

"""Text from users shown to people: control characters made visible.

Names, paths, parameter values and messages come from users and their notebooks; written
raw to a terminal, a newline splits a table row and an escape sequence moves the cursor,
clears the screen or sets the window title. :func:`printable` escapes them all, for one-line
fields; :func:`printable_block` keeps line breaks, tabs and colours (SGR sequences, as
kernels colour tracebacks) and escapes the rest, for outputs and tracebacks.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` with every control character escaped (``\\n``, ``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(_escape, str(value))


def printable_text(value: object) -> str:
    """``str(value)`` with control characters escaped except line breaks and tabs."""
    return _escape_block(str(value))


def printable_block(value: object) -> str:
    """``str(value)`` with control characters escaped except line breaks, tabs and colours."""
    text = str(value)
    pieces: list[str] = []
    position = 0
    for match in _COLOUR.finditer(text):
        pieces.append(_escape_block(text[position : match.start()]))
        pieces.append(match.group(0))
        position = match.end()
    pieces.append(_escape_block(text[position:]))
    return "".join(pieces)


def _escape_block(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group(0) if m.group(0) in "\n\t" else _escape(m), text)

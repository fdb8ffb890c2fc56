"""Limits of one run: memory sizes as users write them, and how they read back.

A memory limit is bytes (an ``int``) or a size such as ``"500MB"``, ``"1.5 GB"`` or
``"2GiB"``: ``kB``, ``MB``, ``GB``, ``TB`` (and ``k``, ``M``, ``G``, ``T``) count in
powers of 1000, ``KiB``, ``MiB``, ``GiB``, ``TiB`` (and ``Ki``, ``Mi``, ``Gi``, ``Ti``)
in powers of 1024.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from clearnb.errors import InvalidLimitError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_memory_limit(value: float | str | None, name: str = "memory_limit") -> int | None:
    """Bytes of ``value`` (a number, or a size like ``"500MB"``); ``None`` stays ``None``.

    Raises :class:`InvalidLimitError` naming ``name`` for anything else, or for a size
    that is not more than zero.
    """
    if value is None:
        return None
    size: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else ""
        if match and unit in _UNITS:
            size = float(match.group(1)) * _UNITS[unit]
    if size is None or not math.isfinite(size):
        raise InvalidLimitError(
            f"{name} must be bytes or a size like '500MB'; got {value!r}", value=value
        )
    if size <= 0:
        raise InvalidLimitError(f"{name} must be more than 0 bytes; got {value!r}", value=value)
    return int(size)


def parse_seconds(value: object, name: str = "time_limit", unit: str = "seconds") -> float | None:
    """``value`` as a number of seconds (or ``unit``) more than 0; ``None`` stays ``None``.

    A bool, a string, NaN, infinity, zero or less raise :class:`InvalidLimitError` naming
    ``name``. numpy numbers count as the Python numbers they hold.
    """
    if value is None:
        return None
    number = _real(value)
    if number is None or not math.isfinite(number):
        raise InvalidLimitError(
            f"{name} must be a number of {unit}, e.g. 10; got {value!r}", value=value
        )
    if number <= 0:
        raise InvalidLimitError(f"{name} must be more than 0 {unit}; got {value!r}", value=value)
    return float(number)


def parse_count(value: object, name: str, *, minimum: int = 0) -> int:
    """``value`` as a whole number of at least ``minimum``; :class:`InvalidLimitError`
    naming ``name`` for anything else (a bool, a string, a fraction, too small)."""
    number = _real(value)
    if number is None or not math.isfinite(number) or number != int(number):
        raise InvalidLimitError(f"{name} must be a whole number; got {value!r}", value=value)
    if number < minimum:
        raise InvalidLimitError(f"{name} must be at least {minimum}; got {value!r}", value=value)
    return int(number)


def _real(value: object) -> float | int | None:
    """The int or float ``value`` holds (numpy scalars included), or None if not a number."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


OUTPUT_LIMIT_ENV = "CLEARNB_OUTPUT_LIMIT"
DEFAULT_OUTPUT_LIMIT = 50_000_000
"""Bytes of output (text, and encoded images) one run's notebook keeps."""
LOG_TAIL = 64_000
"""Characters of each stream (stdout, stderr) kept in the store."""


def output_limit(environ: Mapping[str, str] | None = None) -> int:
    """The output limit set in ``environ`` (``os.environ``), e.g. ``"200MB"``, else the default."""
    value = (os.environ if environ is None else environ).get(OUTPUT_LIMIT_ENV)
    if not value:
        return DEFAULT_OUTPUT_LIMIT
    return parse_memory_limit(value, OUTPUT_LIMIT_ENV) or DEFAULT_OUTPUT_LIMIT


def log_tail(text: str, limit: int = LOG_TAIL) -> str:
    """The last ``limit`` characters of ``text``, after a line saying what was left out."""
    if len(text) <= limit:
        return text
    left_out = len(text) - limit
    return f"[… {left_out:,} earlier characters are in the executed notebook]\n" + text[-limit:]


def format_size(size: float) -> str:
    """``size`` bytes for people: ``"300 MB"``, ``"1.2 GB"``, or ``"2 GiB"`` when that is exact."""
    whole = int(size)
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if whole == size and whole >= scale and whole % scale == 0 and whole % 1000**2:
            return f"{whole // scale} {unit}"
    for unit, scale in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= scale:
            text = f"{size / scale:.1f}" if size < 10 * scale else f"{size / scale:.0f}"
            return f"{text.removesuffix('.0')} {unit}"
    return f"{size:.0f} bytes"

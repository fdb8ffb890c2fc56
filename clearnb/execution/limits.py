"""Limits of one run: memory sizes as users write them, and how they read back.

A memory limit is bytes (an ``int``) or a size such as ``"500MB"``, ``"1.5 GB"`` or
``"2GiB"``: ``kB``, ``MB``, ``GB``, ``TB`` (and ``k``, ``M``, ``G``, ``T``) count in
powers of 1000, ``KiB``, ``MiB``, ``GiB``, ``TiB`` (and ``Ki``, ``Mi``, ``Gi``, ``Ti``)
in powers of 1024.
"""

from __future__ import annotations

import math
import re

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

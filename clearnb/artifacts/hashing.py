"""sha256 digests of stored files, read in chunks so large artifacts stay out of memory."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

CHUNK_SIZE = 1 << 20
"""Bytes read at a time when hashing or copying."""


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """The sha256 hex digest and the number of bytes of what is left in ``stream``."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The sha256 hex digest and the size in bytes of the file at ``path``."""
    with open(path, "rb") as stream:
        return sha256_stream(stream)


def sha256_text(text: str) -> str:
    """The sha256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

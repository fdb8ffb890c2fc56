"""A local-disk file system that runs out of space on demand: ``faulty:///abs/path``.

It is fsspec's local file system under another protocol, so clearnb writes through it
(fsspec's ``put_file``, then ``mv``) rather than straight to disk. Two environment variables,
read at every write, make writes fail the way a full disk does, ``OSError(ENOSPC)`` after
part of the file is written:

``FAULTYFS_FULL_AT``  an artifact name: writing into a folder of that name fails
                      half-way through the file;
``FAULTYFS_QUOTA``    ``BYTES:FOLDER``: the files below ``FOLDER`` may hold at most
                      ``BYTES`` bytes together; a write that would go beyond fails there.

Other processes (step kernels) find the protocol through the ``fsspec.specs`` entry point
of :func:`install_entry_point`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "faulty"
FULL_AT_ENV = "FAULTYFS_FULL_AT"
QUOTA_ENV = "FAULTYFS_QUOTA"
CHUNK = 4096


def no_space(path: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def used_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


class FaultyFileSystem(LocalFileSystem):  # type: ignore[misc]
    """The local disk, refusing writes as the environment says (see the module)."""

    protocol = (PROTOCOL,)
    root_marker = "/"

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
        return str(super()._strip_protocol(text))

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self._strip_protocol(name)}"

    def room_for(self, path: str, size: int) -> int | None:
        """How many bytes of a ``size``-byte file at ``path`` fit (None: all of them)."""
        refused = os.environ.get(FULL_AT_ENV)
        if refused and refused in Path(path).parts[:-1]:
            return size // 2
        quota = os.environ.get(QUOTA_ENV)
        if quota:
            limit, _, folder = quota.partition(":")
            if os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep):
                free = max(0, int(limit) - used_bytes(folder))
                if size > free:
                    return free
        return None

    def put_file(self, lpath: Any, rpath: Any, callback: Any = None, **kwargs: Any) -> None:
        target = self._strip_protocol(rpath)
        size = os.path.getsize(lpath)
        room = self.room_for(target, size)
        if room is None:
            super().put_file(lpath, rpath, callback=callback, **kwargs)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(lpath, "rb") as source, open(target, "wb") as stream:
            written = 0
            while written < room:
                chunk = source.read(min(CHUNK, room - written))
                if not chunk:
                    break
                stream.write(chunk)
                written += len(chunk)
        raise no_space(target)


def register() -> None:
    """Make ``faulty://`` known to fsspec in this process."""
    import fsspec

    fsspec.register_implementation(PROTOCOL, FaultyFileSystem, clobber=True)


def install_entry_point(folder: Path) -> str:
    """Write a distribution declaring ``faulty`` as an ``fsspec.specs`` entry point into
    ``folder``; returns a PYTHONPATH (``folder`` and this repository) under which new
    Python processes know the protocol."""
    dist = folder / "clearnb_faultyfs-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: clearnb-faultyfs\nVersion: 0.0.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[fsspec.specs]\n{PROTOCOL} = tests.faultyfs:FaultyFileSystem\n", encoding="utf-8"
    )
    repository = Path(__file__).resolve().parent.parent
    parts = [str(folder), str(repository), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(part for part in parts if part)

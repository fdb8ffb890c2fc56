"""Scratch space: temporary files and folders clearnb writes, kept under its own cache.

Encoding an artifact, uploading a blob or running a kernel needs temporary space, often as
large as the artifact. It lives in ``<cache>/scratch`` (owner-only), not in the system's
temporary folder, and every entry is named after the process that made it
(``artifact-<pid>-<start>-<random>``): a process killed mid-write leaves its entries, and
the next clearnb process to open that cache (:func:`sweep`) removes those whose process is
gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from clearnb.config import make_private_folder
from clearnb.processes import process_alive, start_time

SCRATCH = "scratch"
KERNELS = "cnb"
"""Prefix of the kernel folders in the system's temporary folder."""
_OWNER = re.compile(r"^[a-z]+-(\d+)-(\d+|x)-")


def scratch_root(cache_dir: str | os.PathLike[str]) -> Path:
    """The scratch folder of the cache ``cache_dir``."""
    return Path(cache_dir) / SCRATCH


def make_scratch(cache_dir: str | os.PathLike[str], kind: str) -> Path:
    """A new private scratch folder for this process, named for ``kind`` (``artifact``)."""
    root = scratch_root(cache_dir)
    make_private_folder(root)
    pid = os.getpid()
    started = start_time(pid)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{pid}-{started or 'x'}-", dir=root))


def kernel_scratch() -> Path:
    """A new private folder for this process's kernels, in the system's temporary folder:
    their sockets' paths must stay short (about 100 characters at most), which a cache
    folder's may not be. Named as scratch entries are, and swept the same way."""
    pid = os.getpid()
    started = start_time(pid)
    return Path(tempfile.mkdtemp(prefix=f"{KERNELS}-{pid}-{started or 'x'}-"))


def sweep(cache_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove the scratch entries of processes that are gone (in the cache's scratch
    folder, and kernel folders in the system's temporary folder); returns them."""
    removed = _sweep_folder(scratch_root(cache_dir))
    removed += _sweep_folder(Path(tempfile.gettempdir()), only=f"{KERNELS}-")
    return removed


def _sweep_folder(root: Path, only: str = "") -> list[Path]:
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(only):
            continue
        match = _OWNER.match(entry.name)
        if match is None or _owner_runs(int(match.group(1)), match.group(2)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            removed.append(entry)
    return removed


def _owner_runs(pid: int, started: str) -> bool:
    if not process_alive(pid):
        return False
    return started == "x" or start_time(pid) == int(started)


@contextlib.contextmanager
def scratch_folder(cache_dir: str | os.PathLike[str], kind: str) -> Iterator[Path]:
    """A scratch folder (:func:`make_scratch`) for the block, removed after it."""
    folder = make_scratch(cache_dir, kind)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

"""The files of a dataset version on their way in and out: stored by content, then laid
into local copies (a read-only folder in the cache, or a writable one).

A cached copy is built under a temporary name and renamed into place whole, so a reader
never sees half of one; it is reused while it holds exactly the version's files at their
sizes, and built again otherwise. Every file is checked against its sha256 as it is copied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from clearnb.artifacts.blobs import BlobStore
from clearnb.artifacts.hashing import sha256_file
from clearnb.config import make_private_folder
from clearnb.datasetfiles import FileEntry
from clearnb.errors import ArtifactError, DatasetError

log = logging.getLogger(__name__)


def _inside(folder: Path, relative: str) -> Path:
    """``folder / relative``, refusing a stored path that would lead outside ``folder``."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise DatasetError(
            f"The stored file list names {relative!r}, which is not a path inside a dataset; "
            "the dataset's record was altered. Create the version again.",
            path=relative,
        )
    return folder.joinpath(*pure.parts)


def holds_exactly(folder: Path, entries: Sequence[FileEntry]) -> bool:
    """Whether ``folder`` holds the files of ``entries`` at their sizes, and nothing else."""
    if not folder.is_dir():
        return False
    wanted = {entry.relative_path: entry.size for entry in entries}
    found = 0
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            try:
                if wanted.get(relative) != path.stat().st_size:
                    return False
            except OSError:  # a link whose target is gone
                return False
            found += 1
    return found == len(wanted)


def build(
    folder: Path,
    entries: Sequence[FileEntry],
    store: BlobStore,
    *,
    links: bool,
    max_workers: int | None,
) -> list[str]:
    """Put the files of ``entries`` into the new folder ``folder``; the problems met, one
    line per file that could not be placed."""
    make_private_folder(folder)

    def place(entry: FileEntry) -> str | None:
        try:
            if entry.url is None:
                return f"{entry.relative_path}: it was never uploaded"
            target = _inside(folder, entry.relative_path)
            store.place(entry.url, entry.hash, entry.size, target, link=links)
        except (ArtifactError, DatasetError, OSError) as exc:
            return f"{entry.relative_path}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max_workers or os.cpu_count() or 1) as pool:
        return [problem for problem in pool.map(place, entries) if problem]


def cached_copy(
    folder: Path,
    entries: Sequence[FileEntry],
    store: BlobStore,
    *,
    links: bool,
    max_workers: int | None,
    raise_on_error: bool,
    what: str,
) -> Path:
    """The read-only copy of ``entries`` at ``folder``, built (again) unless it is whole.

    Files that cannot be placed raise one :class:`DatasetError` listing them all (nothing
    is installed) with ``raise_on_error``; otherwise the copy is installed without them,
    with a warning, and built again on the next call.
    """
    if holds_exactly(folder, entries):
        return folder
    make_private_folder(folder.parent)
    scratch = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
    try:
        problems = build(scratch, entries, store, links=links, max_workers=max_workers)
        if problems and raise_on_error:
            raise DatasetError.collect(
                [*problems, f"(nothing of {what} was changed; fix or re-create its files)"],
                f"file of {what} that cannot be read",
            )
        if problems:
            log.warning("%s: %d files missing from %s:\n%s", what, len(problems), folder, problems)
        _install(scratch, folder, entries)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _install(scratch: Path, folder: Path, entries: Sequence[FileEntry]) -> None:
    """Move the built ``scratch`` to ``folder``, replacing a stale copy there; a whole copy
    that another process installed meanwhile is kept."""
    if holds_exactly(folder, entries):  # another process installed a whole copy meanwhile
        return
    stale = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.old")
    if folder.exists():
        with contextlib.suppress(FileNotFoundError):
            os.rename(folder, stale)
    try:
        os.rename(scratch, folder)
    except OSError:
        if not holds_exactly(folder, entries):
            raise
    finally:
        shutil.rmtree(stale, ignore_errors=True)


def writable_copy(source: Path, target: Path) -> Path:
    """Copy the files below ``source`` (following links) into ``target`` as ordinary
    writable files of the current user."""
    for root, _, names in os.walk(source):
        for name in names:
            relative = Path(root, name).relative_to(source)
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(root, name), destination)
    return target


def store_pending(
    store: BlobStore,
    entries: Sequence[FileEntry],
    *,
    retries: int,
    max_workers: int | None,
    verbose: bool,
) -> tuple[list[str], int]:
    """Store the content of ``entries`` (added, not stored yet) from their local files,
    trying each ``1 + retries`` times; set their URLs. Returns the problems met, one line
    per file left unstored, and how many files were written (the others were there)."""

    def store_one(entry: FileEntry) -> tuple[str | None, bool]:
        local = Path(entry.local_path or "")
        for attempt in range(1 + max(0, retries)):
            try:
                blob = store.put(local)
                break
            except FileNotFoundError:
                return (
                    f"{entry.relative_path}: {local} no longer exists; add it again, or "
                    f"remove_files({entry.relative_path!r})"
                ), False
            except OSError as exc:
                if attempt >= retries:
                    return f"{entry.relative_path}: {exc}", False
                time.sleep(min(0.25 * 2**attempt, 4.0))
        if blob.digest != entry.hash:
            return f"{entry.relative_path}: {local} changed since add_files(); add it again", False
        entry.url, entry.local_path = blob.url, None
        if verbose:
            print(f"Uploaded {entry.relative_path}")
        return None, blob.written

    with ThreadPoolExecutor(max_workers=max_workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(store_one, entries))
    return [problem for problem, _ in results if problem], sum(written for _, written in results)


def emptied(target: Path, *, overwrite: bool, raise_on_error: bool) -> bool:
    """Make sure ``target`` holds no files before a copy is made there: a folder holding
    some is emptied with ``overwrite``, else refused (an error, or ``False`` without
    ``raise_on_error``)."""
    if not (target.is_dir() and any(target.iterdir())):
        return True
    if not overwrite:
        if not raise_on_error:
            return False
        raise DatasetError(
            f"get_mutable_local_copy: {target} already holds files; pass overwrite=True to "
            "replace them, or choose an empty folder.",
            path=str(target),
        )
    shutil.rmtree(target)
    return True


def mismatches(folder: Path, entries: Sequence[FileEntry], *, skip_hash: bool) -> list[str]:
    """Paths of ``entries`` whose file in ``folder`` is missing or differs in size (or,
    unless ``skip_hash``, in sha256)."""
    bad = []
    for entry in entries:
        path = folder / entry.relative_path
        try:
            same = path.stat().st_size == entry.size and (
                skip_hash or sha256_file(path)[0] == entry.hash
            )
        except OSError:
            same = False
        if not same:
            bad.append(entry.relative_path)
    return bad

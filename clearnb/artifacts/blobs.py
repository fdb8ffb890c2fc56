"""Files stored by their content: each distinct file once, below ``{root}/datasets/sha256/``.

A dataset version lists its files by relative path with their size and sha256; the bytes
live here under a name made of the hash, so a file that several versions (or several
paths) share is stored once. A file is hashed again while it is copied in, and renamed into
place only when that hash is the one it is stored under, so what lies under a hash is always
that content. Reads check size and sha256 again before a copy is handed out; remote files
are streamed from their storage, or kept once in the local cache when a link to them is
asked for.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from clearnb.artifacts.hashing import CHUNK_SIZE, sha256_file
from clearnb.artifacts.storage import (
    filesystem,
    fsync_directory,
    is_local,
    local_modes,
    put_remote,
    temporary_sibling,
)
from clearnb.config import PRIVATE_FILE_MODE, make_private_folder
from clearnb.errors import ArtifactCorruptedError, ArtifactWriteError
from clearnb.scratch import make_scratch

BLOB_FOLDER = ("datasets", "sha256")
"""Folders below the storage root that hold the files, by the first two hex digits."""


@dataclass(frozen=True)
class StoredBlob:
    """Where a file's content is stored, its sha256 and size, and whether this call wrote it
    (``False``: the same content was stored already)."""

    url: str
    digest: str
    size: int
    written: bool


def _copy_hashing(source: IO[bytes], destination: Path, *, sync: bool) -> tuple[str, int]:
    """Copy the rest of ``source`` into the new file ``destination``; its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with open(destination, "xb") as out:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    return digest.hexdigest(), size


class BlobStore:
    """Content-addressed files below ``url`` (a local path or any fsspec URL), read back
    through ``cache_dir`` where they are remote."""

    def __init__(self, url: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> None:
        self.url = os.fspath(url)
        self.cache_dir = Path(cache_dir)
        fs, root = filesystem(self.url)
        self._local = is_local(fs)
        self._base = root if self._local else self.url.rstrip("/")

    def __repr__(self) -> str:
        return f"BlobStore({self.url!r})"

    def location(self, digest: str) -> str:
        """URL (or local path) of the file whose sha256 is ``digest``."""
        return posixpath.join(self._base, *BLOB_FOLDER, digest[:2], digest)

    # -- writing -----------------------------------------------------------------------

    def put(self, source: Path, expected: str | None = None) -> StoredBlob:
        """Store the content of the local file ``source`` (unless it is stored already) and
        say where; ``digest`` is what the file held while it was copied.

        With ``expected``, a file that no longer has that sha256 is stored under its new
        one all the same: the caller compares and decides.
        """
        digest, size = sha256_file(source)
        url = self.location(digest)
        if self._has(url, size):
            return StoredBlob(url, digest, size, written=False)
        try:
            if self._local:
                copied = self._put_local(source, Path(url))
            else:
                copied = self._put_remote(source, url)
        except OSError as exc:
            raise ArtifactWriteError(
                f"Could not store {source} in {self.url}: {exc.strerror or exc} (writing "
                f"{url}). Nothing of it was kept; free space in (or fix access to) "
                f"{self.url}, then try again.",
                url=url,
                errno=exc.errno,
                reason=exc.strerror or str(exc),
            ) from exc
        if copied != digest:  # changed while it was read: stored under what it held then
            return StoredBlob(self.location(copied), copied, size, written=True)
        return StoredBlob(url, digest, size, written=True)

    def _has(self, url: str, size: int) -> bool:
        if self._local:
            try:
                return Path(url).stat().st_size == size
            except OSError:
                return False
        fs, path = filesystem(url)
        try:
            return int(fs.info(path).get("size", -1)) == size
        except (FileNotFoundError, OSError):
            return False

    def _put_local(self, source: Path, destination: Path) -> str:
        folder_mode, file_mode = local_modes(self._base)
        make_private_folder(destination.parent, folder_mode)
        scratch = temporary_sibling(destination)
        try:
            with open(source, "rb") as stream:
                copied, _ = _copy_hashing(stream, scratch, sync=True)
            os.chmod(scratch, file_mode & 0o444)  # never rewritten: a link to it is safe
            final = Path(self.location(copied))
            make_private_folder(final.parent, folder_mode)
            os.replace(scratch, final)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise
        fsync_directory(final.parent)
        return copied

    def _put_remote(self, source: Path, url: str) -> str:
        workdir = make_scratch(self.cache_dir, "blob")
        try:
            local = workdir / "blob"
            with open(source, "rb") as stream:
                copied, _ = _copy_hashing(stream, local, sync=False)
            fs, path = filesystem(self.location(copied))
            put_remote(fs, local, path)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return copied

    def delete(self, url: str) -> bool:
        """Remove the stored file at ``url``; ``False`` if there was none."""
        fs, path = filesystem(url)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    # -- reading -----------------------------------------------------------------------

    def place(self, url: str, digest: str, size: int, target: Path, *, link: bool) -> None:
        """Put a verified copy of the file stored at ``url`` at the new path ``target``
        (readable by its owner only), or with ``link`` a symbolic link to a verified local
        copy of it (the stored file itself where the storage is local)."""
        make_private_folder(target.parent)
        if link:
            os.symlink(self.local_file(url, digest, size), target)
            return
        self._fetch_verified(url, digest, size, target)

    def local_file(self, url: str, digest: str, size: int) -> Path:
        """A local file with the verified content stored at ``url``: the stored file itself
        where the storage is local, else a copy kept in the cache."""
        fs, path = filesystem(url)
        if is_local(fs):
            local = Path(path)
            try:
                found, length = sha256_file(local)
            except FileNotFoundError:
                raise _corrupted(url, "missing") from None
            _check(url, digest, size, found, length)
            return local
        slot = self.cache_dir / "datasets" / "sha256" / digest[:2] / digest
        if slot.is_file():
            found, length = sha256_file(slot)
            if (found, length) == (digest, size):
                return slot
            slot.unlink(missing_ok=True)
        make_private_folder(slot.parent)
        self._fetch_verified(url, digest, size, slot)
        return slot

    def _fetch_verified(self, url: str, digest: str, size: int, target: Path) -> None:
        """Copy the content stored at ``url`` to ``target`` (read-only), atomically, and only
        if it has ``digest`` and ``size``."""
        scratch = temporary_sibling(target)
        try:
            with self._open(url) as stream:
                copied, length = _copy_hashing(stream, scratch, sync=False)
            _check(url, digest, size, copied, length)
            os.chmod(scratch, PRIVATE_FILE_MODE & 0o444)
            os.replace(scratch, target)
        finally:
            scratch.unlink(missing_ok=True)

    @staticmethod
    def _open(url: str) -> Any:
        fs, path = filesystem(url)
        try:
            return fs.open(path, "rb")
        except FileNotFoundError:
            raise _corrupted(url, "missing") from None


def _check(url: str, digest: str, size: int, found: str, length: int) -> None:
    if length != size:
        raise _corrupted(url, "truncated" if length < size else "altered", length, found)
    if found != digest:
        raise _corrupted(url, "altered", length, found)


def _corrupted(
    url: str, reason: str, size: int | None = None, digest: str | None = None
) -> ArtifactCorruptedError:
    detail = "is missing" if reason == "missing" else f"is {reason} ({size} bytes, sha256 {digest})"
    return ArtifactCorruptedError(
        f"The stored file {url} {detail}: it was changed or removed after it was stored.",
        url=url,
        reason=reason,
        actual_size=size,
        actual_hash=digest,
    )

"""ClearML's ``StorageManager``: fetch and put single files on any fsspec URL.

Local paths and ``file://`` URLs are used in place. Anything else (``memory://``,
``http(s)://``, ``s3://``, ...) is downloaded once into the local cache,
``CLEARNB_CACHE_DIR/storage/<cache_context or "global">/``, under a name made of a hash of
the URL and the URL's file name. Every download and upload goes to a temporary name first and
is renamed into place, so concurrent callers never see a partial file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import sys
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from clearnb.artifacts.codecs import safe_extract
from clearnb.artifacts.hashing import sha256_text
from clearnb.artifacts.storage import (
    atomic_copy,
    filesystem,
    fsync_directory,
    is_local,
    put_remote,
    temporary_sibling,
)
from clearnb.config import Config
from clearnb.errors import RemoteFileNotFoundError, RemoteStorageError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")
"""File name endings that ``get_local_copy`` unpacks when ``extract_archive`` is true."""

DEFAULT_RETRIES = 2
"""Extra upload attempts when ``upload_file`` is given ``retries=None``."""

_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the storage could not be reached or refused the request"."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        errors.append(aiohttp.ClientError)
    return tuple(errors)


def _archive_suffix(name: str) -> str | None:
    lowered = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def _url_basename(url: str) -> str:
    path = urlsplit(url).path if "://" in url else url.replace("\\", "/")
    return posixpath.basename(path.rstrip("/"))


def _safe_filename(name: str) -> str:
    cleaned = "".join(char if char in _SAFE_CHARS else "_" for char in name).lstrip(".")
    return cleaned[-120:] or "file"


def _cache_root(cache_context: str | None) -> Path:
    context = _safe_filename(cache_context) if cache_context else "global"
    return Config.from_env().cache_dir / "storage" / context


def _cache_file(remote_url: str, cache_context: str | None, name: str | None) -> Path:
    key = sha256_text(remote_url)[:16]
    return _cache_root(cache_context) / f"{key}_{_safe_filename(name or _url_basename(remote_url))}"


def _not_found(url: str, what: str) -> RemoteFileNotFoundError:
    return RemoteFileNotFoundError(
        f"{url} does not exist: {what}. Check the path or URL (spelling, bucket, folder) and "
        "that the file was uploaded.",
        url=url,
        reason="missing",
    )


def _unreachable(url: str, action: str, exc: BaseException) -> RemoteStorageError:
    return RemoteStorageError(
        f"Could not {action} {url}: {type(exc).__name__}: {exc}. Check that the host is "
        "reachable and that you may access it (credentials, permissions), then try again.",
        url=url,
        reason="unreachable",
    )


def _local_path(url: str) -> Path | None:
    """The local path ``url`` names (plain path or ``file://``), else ``None``."""
    if "://" not in url and "::" not in url:
        return Path(url).expanduser().absolute()
    if url.startswith("file://"):
        _, path = filesystem(url)
        return Path(path)
    return None


def _download(fs: Any, path: str, url: str, target: Path) -> None:
    """Fetch ``path`` of ``fs`` into ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = temporary_sibling(target)
    try:
        try:
            fs.get_file(path, str(scratch))
        except FileNotFoundError as exc:
            raise _not_found(url, "no file at that location") from exc
        except _transport_errors() as exc:
            raise _unreachable(url, "download", exc) from exc
        if scratch.is_dir():
            raise RemoteStorageError(
                f"{url} is a folder, not a file. Download its files one by one: list them "
                "with StorageManager.list() and fetch each with get_local_copy().",
                url=url,
                reason="folder",
            )
        if not scratch.is_file():
            raise _not_found(url, "nothing was downloaded")
        os.replace(scratch, target)
    finally:
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            scratch.unlink(missing_ok=True)
    fsync_directory(target.parent)


def _extract(archive: Path, target: Path, force: bool) -> Path:
    """Unpack ``archive`` into the folder ``target`` (atomically) unless an unpacked copy
    at least as new as the archive is already there."""
    if target.is_dir() and not force and target.stat().st_mtime >= archive.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name[:100]}.{uuid.uuid4().hex}.tmp")
    stale = target.with_name(f".{target.name[:100]}.{uuid.uuid4().hex}.old")
    try:
        safe_extract(archive, scratch)
        os.utime(scratch)
        if target.exists():
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, stale)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return target


def _extraction_folder(archive: Path, folder: Path) -> Path:
    suffix = _archive_suffix(archive.name) or ""
    return folder / archive.name[: len(archive.name) - len(suffix)]


def _relative_remote_path(url: str) -> PurePosixPath:
    """The part of ``url`` below its bucket or host, without ``..``; the file name for
    local paths."""
    if "://" in url and not url.startswith("file://"):
        parts = [part for part in urlsplit(url).path.split("/") if part not in ("", ".", "..")]
        if parts:
            return PurePosixPath(*parts)
    return PurePosixPath(_safe_filename(_url_basename(url)))


def _join(base: str, relative: str) -> str:
    return (base if base.endswith("/") else base + "/") + relative


class StorageManager:
    """Get local copies of remote files and upload local ones (ClearML's API)."""

    @classmethod
    def get_local_copy(
        cls,
        remote_url: str,
        cache_context: str | None = None,
        extract_archive: bool = True,
        name: str | None = None,
        force_download: bool = False,
    ) -> str:
        """A local path holding the file at ``remote_url``.

        Local paths come back as they are; other URLs are downloaded into the cache once
        (again with ``force_download``). Archives (``.zip``, ``.tar.gz``, ``.tgz``, ...)
        are unpacked into a folder in the cache when ``extract_archive`` is true, and that
        folder is returned. ``name`` replaces the URL's file name in the cache.
        """
        local = _local_path(remote_url)
        if local is not None:
            if not local.exists():
                raise _not_found(remote_url, f"no file or folder at {local}")
            if extract_archive and local.is_file() and _archive_suffix(local.name):
                folder = _cache_file(str(local), cache_context, name)
                return str(
                    _extract(local, _extraction_folder(folder, folder.parent), force_download)
                )
            return str(local)
        target = _cache_file(remote_url, cache_context, name)
        fresh = force_download or not target.is_file()
        if fresh:
            fs, path = filesystem(remote_url)
            _download(fs, path, remote_url, target)
        if extract_archive and _archive_suffix(target.name):
            return str(_extract(target, _extraction_folder(target, target.parent), fresh))
        return str(target)

    @classmethod
    def upload_file(
        cls,
        local_file: str,
        remote_url: str,
        wait_for_upload: bool = True,
        retries: int | None = None,
    ) -> str:
        """Upload ``local_file`` to ``remote_url`` and return the URL it was written to.

        ``remote_url`` is the destination file; when it ends with ``/`` (or is an existing
        local folder) the file keeps its name inside it. The upload is atomic and is tried
        ``1 + retries`` times (``retries=None``: :data:`DEFAULT_RETRIES`). Uploads always
        finish before returning; ``wait_for_upload`` is accepted for ClearML compatibility.
        """
        source = Path(local_file).expanduser()
        if not source.is_file():
            raise RemoteFileNotFoundError(
                f"Cannot upload {local_file}: there is no such local file. Check the path "
                f"(relative paths start from {Path.cwd()}).",
                url=str(local_file),
                reason="missing",
            )
        destination = remote_url
        local_target = _local_path(remote_url)
        if remote_url.endswith(("/", "\\")) or (local_target is not None and local_target.is_dir()):
            destination = _join(remote_url.rstrip("/\\") + "/", source.name)
        fs, path = filesystem(destination)
        attempts = 1 + (DEFAULT_RETRIES if retries is None else max(0, retries))
        for attempt in range(attempts):
            try:
                if is_local(fs):
                    atomic_copy(source, Path(path))
                else:
                    put_remote(fs, source, path)
                return str(Path(path)) if is_local(fs) else destination
            except _transport_errors() as exc:
                if attempt + 1 >= attempts:
                    raise _unreachable(destination, f"upload {source} to", exc) from exc
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")

    @classmethod
    def download_file(
        cls,
        remote_url: str,
        local_folder: str | None = None,
        overwrite: bool = False,
    ) -> str:
        """Download ``remote_url`` into ``local_folder``, keeping the path below the bucket
        or host (``s3://bucket/a/b.csv`` -> ``local_folder/a/b.csv``), and return the local
        path. An existing file is kept unless ``overwrite``. Without ``local_folder`` this is
        :meth:`get_local_copy` without unpacking archives."""
        if local_folder is None:
            return cls.get_local_copy(remote_url, extract_archive=False, force_download=overwrite)
        target = (
            Path(local_folder)
            .expanduser()
            .absolute()
            .joinpath(*_relative_remote_path(remote_url).parts)
        )
        if target.is_file() and not overwrite:
            return str(target)
        local = _local_path(remote_url)
        if local is not None:
            if not local.is_file():
                raise _not_found(remote_url, f"no file at {local}")
            if local != target:
                atomic_copy(local, target)
            return str(target)
        fs, path = filesystem(remote_url)
        _download(fs, path, remote_url, target)
        return str(target)

    @classmethod
    def list(cls, remote_url: str, return_full_path: bool = False) -> list[str]:
        """Every file below ``remote_url``, as paths relative to it (or full paths/URLs with
        ``return_full_path``), sorted."""
        fs, path = filesystem(remote_url)
        try:
            if not fs.exists(path):
                raise _not_found(remote_url, "no file or folder at that location")
            found = [path] if fs.isfile(path) else fs.find(path)
        except RemoteFileNotFoundError:
            raise
        except _transport_errors() as exc:
            raise _unreachable(remote_url, "list", exc) from exc
        base = path.rstrip("/")
        relative = sorted(
            posixpath.basename(item) if item == path else posixpath.relpath(item, base)
            for item in found
        )
        if not return_full_path:
            return relative
        if is_local(fs):
            root = Path(base) if found != [path] else Path(base).parent
            return [str(root / item) for item in relative]
        if found == [path]:
            return [remote_url]
        return [_join(remote_url, item) for item in relative]

    @classmethod
    def exists_file(cls, remote_url: str) -> bool:
        """Whether ``remote_url`` is an existing file (``False`` for a folder)."""
        local = _local_path(remote_url)
        if local is not None:
            return local.is_file()
        fs, path = filesystem(remote_url)
        try:
            return bool(fs.isfile(path))
        except FileNotFoundError:
            return False
        except _transport_errors() as exc:
            raise _unreachable(remote_url, "check", exc) from exc

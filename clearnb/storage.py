"""ClearML's ``StorageManager``: fetch and put files and folders on any fsspec URL.

Local paths and ``file://`` URLs are used in place. Anything else (``memory://``,
``http(s)://``, ``s3://``, ...) is downloaded once into the local cache,
``CLEARNB_CACHE_DIR/storage/<cache_context or "global">/``, under a name made of a hash of
the URL and the URL's file name. Every download and upload goes to a temporary name first and
is renamed into place, so concurrent callers never see a partial file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import os
import posixpath
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from clearnb.artifacts.archives import safe_extract
from clearnb.artifacts.hashing import sha256_text
from clearnb.artifacts.storage import (
    atomic_copy,
    filesystem,
    fsync_directory,
    is_local,
    put_remote,
    temporary_sibling,
)
from clearnb.compat import unused_arguments, warn_unused
from clearnb.config import Config, make_private_folder
from clearnb.errors import RemoteFileNotFoundError, RemoteStorageError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")
"""File name endings that ``get_local_copy`` unpacks when ``extract_archive`` is true."""

DEFAULT_RETRIES = 2
"""Extra upload attempts when ``upload_file`` is given ``retries=None``."""

UPLOAD_THREADS = 8
"""Files of a folder uploaded at the same time by ``upload_folder``."""

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


def _download(fs: Any, path: str, url: str, target: Path, allow_empty: bool = True) -> None:
    """Fetch ``path`` of ``fs`` into ``target``, atomically; an empty file is an error
    unless ``allow_empty`` (an empty object is often what a failed upload leaves)."""
    make_private_folder(target.parent)
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
        if not allow_empty and scratch.stat().st_size == 0:
            raise RemoteStorageError(
                f"{url} is an empty file (0 bytes), which usually means its upload failed. "
                "Upload it again, or pass skip_zero_size_check=True if empty files are expected.",
                url=url,
                reason="empty",
            )
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
    make_private_folder(target.parent)
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


def _missing_local(path: str, what: str) -> RemoteFileNotFoundError:
    return RemoteFileNotFoundError(
        f"Cannot upload {path}: there is no such local {what}. Check the path "
        f"(relative paths start from {Path.cwd()}).",
        url=str(path),
        reason="missing",
    )


def _upload(source: Path, destination: str, retries: int | None) -> str:
    """Write ``source`` to ``destination`` atomically, tried ``1 + retries`` times; the
    local path or URL written."""
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


def _fetch(remote_url: str, target: Path, overwrite: bool, allow_empty: bool) -> str:
    """Download ``remote_url`` to ``target`` (atomically) unless a non-empty ``target`` is
    there and not ``overwrite``; a local source is copied as it is, even when empty."""
    if target.is_file() and not overwrite and target.stat().st_size > 0:
        return str(target)
    local = _local_path(remote_url)
    if local is not None:
        if not local.is_file():
            raise _not_found(remote_url, f"no file at {local}")
        if local != target:
            atomic_copy(local, target)
        return str(target)
    fs, path = filesystem(remote_url)
    _download(fs, path, remote_url, target, allow_empty=allow_empty)
    return str(target)


def _run_all(jobs: dict[str, Callable[[], object]], workers: int | None) -> dict[str, str]:
    """Run every job (by name) on up to ``workers`` threads; the failures' reasons by name."""
    failures: dict[str, str] = {}
    if not jobs:
        return failures
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clearnb storage") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        for name, future in futures.items():
            error = future.exception()
            if error is not None:
                failures[name] = f"{type(error).__name__}: {error}"
    return failures


def _failed(action: str, where: str, failures: dict[str, str], total: int) -> RemoteStorageError:
    shown = "; ".join(f"{name}: {why}" for name, why in list(failures.items())[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    return RemoteStorageError(
        f"Could not {action} {len(failures)} of {total} files of {where}: {shown}{more}. "
        "The other files were written; fix the cause and call it again.",
        url=where,
        reason="partial",
        failed=sorted(failures),
    )


class StorageManager:
    """Get local copies of remote files and folders and upload local ones (ClearML's API)."""

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
        finish before returning: ``wait_for_upload=False`` is recorded in a
        :class:`~clearnb.errors.CompatibilityWarning` and waited for all the same.
        """
        warn_unused(
            "StorageManager.upload_file",
            unused_arguments({"wait_for_upload": wait_for_upload}, {"wait_for_upload": True}),
            "uploads always finish before upload_file returns",
        )
        source = Path(local_file).expanduser()
        if not source.is_file():
            raise _missing_local(local_file, "file")
        destination = remote_url
        local_target = _local_path(remote_url)
        if remote_url.endswith(("/", "\\")) or (local_target is not None and local_target.is_dir()):
            destination = _join(remote_url.rstrip("/\\") + "/", source.name)
        return _upload(source, destination, retries)

    @classmethod
    def upload_folder(
        cls,
        local_folder: str,
        remote_url: str,
        match_wildcard: str | None = None,
        retries: int | None = None,
    ) -> str:
        """Upload every file below ``local_folder`` to ``remote_url``, keeping the tree:
        ``folder/sub/file.ext`` becomes ``remote_url/sub/file.ext``. Returns ``remote_url``.

        ``match_wildcard`` (e.g. ``"*.json"``) uploads only the files it matches, at any
        depth (matched as :meth:`pathlib.Path.rglob` does). Each file is written
        atomically and tried ``1 + retries`` times, as :meth:`upload_file` does; files
        that still fail are named in one :class:`~clearnb.errors.RemoteStorageError`
        after the others were uploaded.
        """
        source = Path(local_folder).expanduser()
        if not source.is_dir():
            raise _missing_local(local_folder, "folder")
        files = sorted(path for path in source.rglob(match_wildcard or "*") if path.is_file())
        if not files:
            log.warning("upload_folder: no files in %s match %r", source, match_wildcard or "*")
        jobs: dict[str, Callable[[], object]] = {}
        for path in files:
            relative = path.relative_to(source).as_posix()
            destination = _join(remote_url, relative)
            jobs[relative] = functools.partial(_upload, path, destination, retries)
        failures = _run_all(jobs, UPLOAD_THREADS)
        if failures:
            raise _failed("upload", f"{source} to {remote_url}", failures, len(jobs))
        return remote_url

    @classmethod
    def download_file(
        cls,
        remote_url: str,
        local_folder: str | None = None,
        overwrite: bool = False,
        skip_zero_size_check: bool = False,
        silence_errors: bool = False,
    ) -> str | None:
        """Download ``remote_url`` into ``local_folder``, keeping the path below the bucket
        or host (``s3://bucket/a/b.csv`` -> ``local_folder/a/b.csv``), and return the local
        path. An existing non-empty file is kept unless ``overwrite``. A downloaded empty
        file is an error unless ``skip_zero_size_check``. With ``silence_errors`` a
        failed download returns ``None`` (logged) instead of raising. Without
        ``local_folder`` this is :meth:`get_local_copy` without unpacking archives."""
        try:
            if local_folder is None:
                return cls.get_local_copy(
                    remote_url, extract_archive=False, force_download=overwrite
                )
            target = (
                Path(local_folder)
                .expanduser()
                .absolute()
                .joinpath(*_relative_remote_path(remote_url).parts)
            )
            return _fetch(remote_url, target, overwrite, allow_empty=skip_zero_size_check)
        except (RemoteStorageError, OSError) as exc:
            if not silence_errors:
                raise
            log.info("download_file: %s not downloaded: %s", remote_url, exc)
            return None

    @classmethod
    def download_folder(
        cls,
        remote_url: str,
        local_folder: str | None = None,
        match_wildcard: str | None = None,
        overwrite: bool = False,
        skip_zero_size_check: bool = False,
        silence_errors: bool = False,
        max_workers: int | None = None,
    ) -> str:
        """Download every file below ``remote_url`` into ``local_folder`` (the cache
        folder by default) and return that folder.

        As :meth:`download_file` does, a remote file keeps its path below the bucket or
        host (``s3://bucket/data/sub/f.ext`` -> ``local_folder/data/sub/f.ext``); a local
        folder's files keep their path below it. ``match_wildcard`` (e.g. ``"*.json"``)
        takes only the files whose URL or path below ``remote_url`` it matches.
        ``overwrite`` and ``skip_zero_size_check`` act as in :meth:`download_file`.
        Downloads run on ``max_workers`` threads (default: one per CPU core); files that
        fail are named in one :class:`~clearnb.errors.RemoteStorageError` after the
        others were written, unless ``silence_errors``, which also turns a missing
        ``remote_url`` into an empty result.
        """
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be 1 or more (or None), not {max_workers}.")
        folder = Path(local_folder).expanduser().absolute() if local_folder else _cache_root(None)
        make_private_folder(folder)
        try:
            found = cls.list(remote_url)
        except RemoteStorageError as exc:
            if not silence_errors:
                raise
            log.info("download_folder: nothing downloaded from %s: %s", remote_url, exc)
            return str(folder)
        local = _local_path(remote_url)
        single = found == [_url_basename(remote_url)] and cls.exists_file(remote_url)
        jobs: dict[str, Callable[[], object]] = {}
        for relative in found:
            url = remote_url if single else _join(remote_url, relative)
            if match_wildcard and not (
                fnmatch.fnmatch(url, match_wildcard) or fnmatch.fnmatch(relative, match_wildcard)
            ):
                continue
            if local is not None:
                target = folder.joinpath(*PurePosixPath(relative).parts)
            else:
                target = folder.joinpath(*_relative_remote_path(url).parts)
            jobs[relative] = functools.partial(
                _fetch, url, target, overwrite, allow_empty=skip_zero_size_check
            )
        if not jobs:
            log.warning(
                "download_folder: no files below %s match %r", remote_url, match_wildcard or "*"
            )
        failures = _run_all(jobs, max_workers or os.cpu_count() or 1)
        if failures and not silence_errors:
            raise _failed("download", remote_url, failures, len(jobs))
        for name, why in failures.items():
            log.info("download_folder: %s not downloaded: %s", name, why)
        return str(folder)

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

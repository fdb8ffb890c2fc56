"""Artifact storage on any fsspec file system: ``{url}/{task_id}/{name}/{filename}``.

Writes are atomic: the file is written under a temporary name in its destination folder and
renamed into place, so a reader never sees half an artifact, and a failed save leaves
nothing of the new artifact behind; a storage that refuses the write (disk full, quota, no
access) raises :class:`~clearnb.errors.ArtifactWriteError` naming the artifact and the task.
Reads are verified: size, then sha256, against the
:class:`~clearnb.store.records.ArtifactRecord` written at save time, before any codec (above
all ``pickle``) sees the bytes. Remote artifacts are downloaded once into a local cache keyed
by their hash.

Local folders and files are created readable by their owner only (0o700 and 0o600), unless
the artifact root is a group-writable folder (a team's shared disk): then the group keeps
the access the root gives it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import shutil
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any

from clearnb.artifacts.codecs import Codec, CodecRegistry, default_codecs, qualified_type_name
from clearnb.artifacts.hashing import sha256_file
from clearnb.artifacts.serialized import (
    SERIALIZED,
    Deserializer,
    Serializer,
    deserialized,
    serializing,
)
from clearnb.config import PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE, make_private_folder
from clearnb.errors import (
    ArtifactCorruptedError,
    ArtifactError,
    ArtifactWriteError,
    CodecError,
    InvalidArtifactNameError,
    MissingDependencyError,
)
from clearnb.scratch import make_scratch, scratch_root
from clearnb.store.records import ArtifactRecord

MAX_NAME_LENGTH = 200
"""Longest artifact name, in characters."""

_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors of a write that found no room: the storage's fault, not the codec's."""
_VALID_EXAMPLE = "Use a short name such as 'model', 'train_data' or 'confusion-matrix.png'."
_STORABLE_HINT = (
    "Convert it to something storable first, e.g. a list or dict of plain values (list(...) "
    "of a generator), a numpy array, a pandas DataFrame, or save it to a file and pass the "
    "file path."
)


def _name_problem(name: object, what: str) -> str | None:
    if not isinstance(name, str):
        return f"{what} must be a str, not {type(name).__name__}"
    if not name:
        return f"{what} is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"{what} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return f"{what} contains a control character (such as NUL or a line break)"
    if "/" in name or "\\" in name:
        return f"{what} contains a path separator ('/' or '\\'), which would nest folders"
    if name == "..":
        return f"{what} is '..', which refers to the parent folder"
    if name.startswith("."):
        return f"{what} starts with '.'; such names are kept for temporary files"
    return None


def _quoted(name: object) -> str:
    if isinstance(name, str) and name.isprintable():
        return f"'{name}'"
    return repr(name)


EXECUTED_NOTEBOOK = "notebook"
SOURCE_NOTEBOOK = "source_notebook"
PIPELINE_PICTURE = "pipeline_dag"
DATASET_STATE = "dataset_state"
RESERVED_ARTIFACTS = MappingProxyType(
    {
        EXECUTED_NOTEBOOK: "the executed notebook of the task's run",
        SOURCE_NOTEBOOK: "the notebook sent with a queued task",
        PIPELINE_PICTURE: "the picture of a pipeline run's DAG",
        DATASET_STATE: "the file list of a Dataset version",
    }
)
"""Artifact names clearnb writes itself, with what each holds: a user's artifact of such
a name would be replaced by clearnb's (or replace it), so they are refused."""
CAPTURED_FIGURE = re.compile(r"figure_c\d+_\d+")
"""Names of the figures taken from a run's outputs (``figure_c<cell>_<n>``)."""


def check_user_artifact_name(name: object) -> str:
    """:func:`validate_artifact_name`, and refuse the names clearnb writes itself
    (:data:`RESERVED_ARTIFACTS`, captured figures) with
    :class:`~clearnb.errors.InvalidArtifactNameError` saying what to do."""
    valid = validate_artifact_name(name)
    held = RESERVED_ARTIFACTS.get(valid)
    if held is None and CAPTURED_FIGURE.fullmatch(valid):
        held = "a figure taken from the run's outputs"
    if held is not None:
        problem = f"clearnb stores {held} under that name"
        raise InvalidArtifactNameError(
            f"The artifact name '{valid}' is reserved: {problem}. Choose another name, "
            f"e.g. '{valid}_data'.",
            name=valid,
            reason=problem,
        )
    return valid


def validate_artifact_name(name: object) -> str:
    """Return ``name`` if it can name an artifact, else raise
    :class:`~clearnb.errors.InvalidArtifactNameError` saying why.

    A valid name is a non-empty ``str`` of at most 200 characters, without ``/``, ``\\``,
    control characters (NUL included) or a ``..`` component, that does not start with ``.``.
    """
    problem = _name_problem(name, "it")
    if problem is not None:
        raise InvalidArtifactNameError(
            f"Invalid artifact name {_quoted(name)}: {problem}. {_VALID_EXAMPLE}",
            name=name,
            reason=problem,
        )
    assert isinstance(name, str)
    return name


def _validate_task_id(task_id: object) -> str:
    problem = _name_problem(task_id, "it")
    if problem is not None:
        raise ArtifactError(
            f"Invalid task id {_quoted(task_id)}: {problem}. Task ids are 32 hex digits, "
            "as given by Task.id.",
            task_id=task_id,
            reason=problem,
        )
    assert isinstance(task_id, str)
    return task_id


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system and path of ``url``; a missing driver is reported as a
    :class:`~clearnb.errors.MissingDependencyError` naming what to install."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)  # type: ignore[no-any-return]
    except ImportError as exc:
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        hint = (
            "pip install 'clearnb[http]'"
            if scheme in ("http", "https")
            else f"install the fsspec driver for '{scheme}://' ({exc})"
        )
        raise MissingDependencyError(
            f"Reading or writing {url} needs an optional package; {hint}.",
            url=url,
            scheme=scheme,
        ) from exc


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is fsspec's local file system (a subclass serving another protocol
    is not: its own methods must do the writing)."""
    from fsspec.implementations.local import LocalFileSystem

    protocols = type(fs).protocol
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    return isinstance(fs, LocalFileSystem) and "file" in protocols


def fsync_directory(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename inside it) to disk, where the OS allows it."""
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name next to ``path``, for writing before an atomic rename."""
    return path.with_name(f".{path.name[:100]}.{uuid.uuid4().hex}.tmp")


def atomic_copy(source: Path, destination: Path, mode: int | None = None) -> None:
    """Copy ``source`` to ``destination`` so that ``destination`` is either absent (or its
    old content) or the complete new file: temp name, fsync, ``os.replace``, fsync folder.
    ``mode`` sets the new file's permissions (whatever the umask)."""
    make_private_folder(destination.parent)
    scratch = temporary_sibling(destination)
    try:
        shutil.copyfile(source, scratch)
        if mode is not None:
            os.chmod(scratch, mode)
        with open(scratch, "r+b") as stream:
            os.fsync(stream.fileno())
        os.replace(scratch, destination)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    fsync_directory(destination.parent)


def local_modes(root: str | os.PathLike[str]) -> tuple[int, int]:
    """Permissions of new folders and files below the local storage ``root``: the owner's
    only, plus the group's access (and set-group-id) of a group-writable (shared) root."""
    try:
        mode = os.stat(root).st_mode
    except OSError:
        mode = 0
    if not mode & 0o020:
        return PRIVATE_FOLDER_MODE, PRIVATE_FILE_MODE
    group = mode & 0o070
    return PRIVATE_FOLDER_MODE | group | (mode & 0o2000), PRIVATE_FILE_MODE | (group & 0o060)


def _no_room(exc: BaseException) -> OSError | None:
    """The error in ``exc`` or its causes saying a write found no room, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_ROOM:
            return current
        current = current.__cause__ or current.__context__
    return None


def _stored_filename(name: str, codec: Codec, encoded: Path) -> str:
    if codec.keeps_filename:
        return encoded.name
    suffix = codec.suffix or "".join(encoded.suffixes)
    return name if not suffix or name.endswith(suffix) else f"{name}{suffix}"


def _join(base: str, *parts: str) -> str:
    return (base if base.endswith("/") else base + "/") + "/".join(parts)


class ArtifactStorage:
    """Stores artifacts below ``url`` (a local path or any fsspec URL) and reads them back,
    keeping downloads of remote ones in ``cache_dir``."""

    def __init__(
        self,
        url: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        *,
        registry: CodecRegistry | None = None,
    ) -> None:
        self.url = os.fspath(url)
        self.cache_dir = Path(cache_dir)
        self.registry = registry if registry is not None else default_codecs()
        fs, root = filesystem(self.url)
        self._local = is_local(fs)
        self._base = root if self._local else self.url

    def __repr__(self) -> str:
        return f"ArtifactStorage({self.url!r}, {str(self.cache_dir)!r})"

    # -- locations ---------------------------------------------------------------------

    def artifact_folder(self, task_id: str, name: str) -> str:
        """URL (or local path) of the folder holding artifact ``name`` of ``task_id``."""
        return _join(self._base, _validate_task_id(task_id), validate_artifact_name(name))

    def _cache_slot(self, record: ArtifactRecord) -> Path:
        if not _HASH_PATTERN.fullmatch(record.hash):
            raise ArtifactError(
                f"Artifact {record.name!r} of task {record.task_id} has no valid sha256 in its "
                f"record ({record.hash!r}); it cannot be verified. Re-run the task that "
                "produced it.",
                task_id=record.task_id,
                name=record.name,
            )
        return self.cache_dir / "artifacts" / record.hash[:2] / record.hash

    # -- writing -----------------------------------------------------------------------

    def save(
        self,
        task_id: str,
        name: str,
        obj: Any,
        *,
        codec: str | None = None,
        metadata: dict[str, Any] | None = None,
        registry: CodecRegistry | None = None,
        serialization_function: Serializer | None = None,
    ) -> ArtifactRecord:
        """Store ``obj`` as artifact ``name`` of task ``task_id`` and return its record.

        ``codec`` forces a codec by name; otherwise the first codec of ``registry`` (this
        storage's by default) that matches and manages to encode ``obj`` is used; with
        ``serialization_function``, the file holds the bytes that function returns. Saving
        a name again replaces the earlier file.
        """
        folder = self.artifact_folder(task_id, name)
        codecs = registry if registry is not None else self.registry
        if serialization_function is not None:
            codecs = serializing(serialization_function)
        try:
            workdir = make_scratch(self.cache_dir, "artifact")
        except OSError as exc:
            raise self._write_error(
                task_id, name, exc, str(scratch_root(self.cache_dir)), scratch=True
            ) from exc
        try:
            chosen, encoded = self._encode(task_id, name, obj, codec, codecs, workdir)
            digest, size = sha256_file(encoded)
            filename = _stored_filename(name, chosen, encoded)
            url = _join(folder, filename)
            preview = self._preview(chosen, obj)
            type_name = chosen.type_name(obj)
            self._put(encoded, url, task_id, name)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return ArtifactRecord(
            task_id=task_id,
            name=name,
            url=url,
            codec=chosen.name,
            type=type_name,
            hash=digest,
            size=size,
            preview=preview,
            metadata=dict(metadata or {}),
        )

    def _encode(
        self,
        task_id: str,
        name: str,
        obj: Any,
        codec: str | None,
        registry: CodecRegistry,
        workdir: Path,
    ) -> tuple[Codec, Path]:
        candidates = [registry.get(codec)] if codec is not None else registry.candidates(obj)
        failures: list[str] = []
        for index, candidate in enumerate(candidates):
            scratch = workdir / str(index)
            scratch.mkdir()
            try:
                encoded = candidate.encode(obj, scratch)
                if not encoded.is_file() or encoded.parent != scratch:
                    raise CodecError(
                        f"codec {candidate.name!r} did not write one file into its folder"
                    )
                return candidate, encoded
            except MissingDependencyError:
                raise
            except Exception as exc:
                full = _no_room(exc)
                if full is not None:
                    raise self._write_error(
                        task_id, name, full, str(scratch), scratch=True
                    ) from exc
                reason = exc.message if isinstance(exc, CodecError) else f"{exc}"
                failures.append(f"{candidate.name}: {type(exc).__name__}: {reason}")
                shutil.rmtree(scratch, ignore_errors=True)
                if codec is not None:
                    raise CodecError(
                        f"Cannot store artifact {name!r} of task {task_id} with the {codec!r} "
                        f"codec: {reason}. Leave codec=None to let clearnb choose one. "
                        f"{_STORABLE_HINT}",
                        task_id=task_id,
                        name=name,
                        type=qualified_type_name(obj),
                        codec=codec,
                    ) from exc
        type_name = qualified_type_name(obj)
        tried = "; ".join(failures) or "no codec matches it"
        raise CodecError(
            f"Cannot store artifact {name!r} of task {task_id}: a {type_name} value could not "
            f"be written ({tried}). {_STORABLE_HINT}",
            task_id=task_id,
            name=name,
            type=type_name,
        )

    def _write_error(
        self, task_id: str, name: str, exc: OSError, where: str, *, scratch: bool = False
    ) -> ArtifactWriteError:
        """The error of a write refused while encoding into a temporary folder
        (``scratch``) or while storing the encoded file at ``where``."""
        reason = exc.strerror or str(exc) or type(exc).__name__
        place = (
            f"the scratch folder {scratch_root(self.cache_dir)} (or set CLEARNB_CACHE_DIR to "
            "a roomier place)"
            if scratch
            else f"(or fix access to) the artifact storage {self.url}"
        )
        return ArtifactWriteError(
            f"Could not store artifact {name!r} of task {task_id}: {reason} (writing {where}). "
            "Nothing of it was kept and the task's earlier artifacts are unchanged; free "
            f"space in {place}, then run the task again.",
            task_id=task_id,
            name=name,
            url=where,
            errno=exc.errno,
            reason=reason,
        )

    @staticmethod
    def _preview(codec: Codec, obj: Any) -> str:
        try:
            return codec.preview(obj)[:200]
        except Exception:
            return qualified_type_name(obj)

    def _put(self, source: Path, url: str, task_id: str, name: str) -> None:
        fs, path = filesystem(url)
        parent = posixpath.dirname(path)
        try:
            if is_local(fs):
                self._put_local(source, Path(path))
            else:
                put_remote(fs, source, path)
        except OSError as exc:
            raise self._write_error(task_id, name, exc, url) from exc
        self._remove_older_versions(fs, parent, keep=path)

    def _put_local(self, source: Path, destination: Path) -> None:
        folder_mode, file_mode = self._local_modes()
        created = make_private_folder(destination.parent, folder_mode)
        try:
            atomic_copy(source, destination, mode=file_mode)
        except BaseException:
            for empty in reversed(created):
                with contextlib.suppress(OSError):
                    empty.rmdir()
            raise

    def _local_modes(self) -> tuple[int, int]:
        return local_modes(self._base)

    @staticmethod
    def _remove_older_versions(fs: Any, folder: str, keep: str) -> None:
        """After a re-save under another file name, drop the previous file (and anything
        unpacked next to it). Hidden entries are other writers' temporary files."""
        keep_name = posixpath.basename(keep)
        for entry in fs.ls(folder, detail=False):
            entry_name = posixpath.basename(entry.rstrip("/"))
            if entry_name == keep_name or entry_name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                fs.rm(entry, recursive=True)

    def delete(self, task_id: str, name: str) -> bool:
        """Remove artifact ``name`` of ``task_id``; ``False`` if there was none."""
        fs, path = filesystem(self.artifact_folder(task_id, name))
        if not fs.exists(path):
            return False
        fs.rm(path, recursive=True)
        return True

    # -- reading -----------------------------------------------------------------------

    def load(
        self,
        record: ArtifactRecord,
        *,
        registry: CodecRegistry | None = None,
        deserialization_function: Deserializer | None = None,
    ) -> Any:
        """The value of the artifact ``record`` describes, read from a verified local copy:
        by ``deserialization_function`` from the file's bytes if given; else by its codec
        (an artifact stored by a serialization function: the local copy's path)."""
        if deserialization_function is not None or record.codec == SERIALIZED:
            local = self.local_copy(record)
            if deserialization_function is None:
                return local
            what = f"artifact {record.name!r} of task {record.task_id}"
            return deserialized(local, deserialization_function, what)
        codecs = registry if registry is not None else self.registry
        codec = codecs.get(record.codec)
        local = self.local_copy(record)
        make_private_folder(self.cache_dir / "artifacts")
        try:
            return codec.decode_into(local, self._cache_slot(record))
        except (ArtifactError, MissingDependencyError):
            raise
        except Exception as exc:
            raise CodecError(
                f"Artifact {record.name!r} of task {record.task_id} ({record.type}) was verified "
                f"but the {codec.name!r} codec could not read it back from {local}: "
                f"{type(exc).__name__}: {exc}. If it is a pickled object, import the module "
                "that defines its class (and install the same library versions) first.",
                task_id=record.task_id,
                name=record.name,
                url=record.url,
                codec=codec.name,
            ) from exc

    def local_copy(self, record: ArtifactRecord, *, refresh: bool = False) -> Path:
        """A local file holding the artifact's verified bytes.

        Local artifacts are checked in place; remote ones are downloaded (atomically) into
        ``cache_dir/artifacts/{hash[:2]}/{hash}/`` once and reused while they stay valid
        (with ``refresh``, downloaded again all the same).
        """
        fs, path = filesystem(record.url)
        if is_local(fs):
            local = Path(path)
            self._verify(record, local)
            return local
        slot = self._cache_slot(record)
        filename = posixpath.basename(path.rstrip("/"))
        if filename in ("", ".", ".."):
            filename = "artifact"
        target = slot / filename
        if target.is_file() and not refresh:
            try:
                self._verify(record, target, where=f"{target} (cached copy of {record.url})")
                return target
            except ArtifactCorruptedError:
                target.unlink(missing_ok=True)
        make_private_folder(slot)
        scratch = temporary_sibling(target)
        try:
            try:
                fs.get_file(path, str(scratch))
            except FileNotFoundError as exc:
                raise self._corrupted(record, "missing") from exc
            self._verify(record, scratch, where=record.url)
            os.chmod(scratch, PRIVATE_FILE_MODE)
            os.replace(scratch, target)
        finally:
            scratch.unlink(missing_ok=True)
        return target

    def verify(self, record: ArtifactRecord) -> None:
        """Raise :class:`~clearnb.errors.ArtifactCorruptedError` if the local file of
        ``record`` is missing or no longer has the size and sha256 it was written with
        (before its URL is handed to code that reads the file itself). Remote artifacts
        are checked when they are read."""
        fs, path = filesystem(record.url)
        if is_local(fs):
            self._verify(record, Path(path))

    def problem_of(self, record: ArtifactRecord) -> str | None:
        """Why the stored file of ``record`` cannot be used (missing, truncated, altered),
        or None when it is there with its size (and, where it is local, its sha256)."""
        fs, path = filesystem(record.url)
        try:
            if is_local(fs):
                self._verify(record, Path(path))
                return None
            size = fs.info(path).get("size")
        except ArtifactCorruptedError as exc:
            return str(exc)
        except (FileNotFoundError, OSError) as exc:
            return f"Artifact {record.name!r} of task {record.task_id} cannot be read: {exc}"
        if size is not None and size != record.size:
            return (
                f"Artifact {record.name!r} of task {record.task_id} holds {size} bytes at "
                f"{record.url}, but {record.size} bytes were written"
            )
        return None

    def _verify(self, record: ArtifactRecord, path: Path, where: str | None = None) -> None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise self._corrupted(record, "missing", where=where) from None
        if size != record.size:
            reason = "truncated" if size < record.size else "altered"
            raise self._corrupted(record, reason, where=where, size=size)
        digest, _ = sha256_file(path)
        if digest != record.hash:
            raise self._corrupted(record, "altered", where=where, size=size, digest=digest)

    @staticmethod
    def _corrupted(
        record: ArtifactRecord,
        reason: str,
        *,
        where: str | None = None,
        size: int | None = None,
        digest: str | None = None,
    ) -> ArtifactCorruptedError:
        where = where or record.url
        what = f"Artifact {record.name!r} of task {record.task_id}"
        if reason == "missing":
            detail = f"is missing: nothing is stored at {where}"
        elif digest is None:
            cut = "is truncated" if reason == "truncated" else "has been altered"
            detail = (
                f"{cut}: {where} holds {size} bytes, but {record.size} bytes were written "
                "(size differs)"
            )
        else:
            detail = (
                f"has been altered: {where} has sha256 hash {digest}, but {record.hash} was "
                "recorded when it was written (same size, different bytes)"
            )
        return ArtifactCorruptedError(
            f"{what} {detail}. Its stored file was changed or removed after the task wrote it; "
            "re-run the task that produced it to store the artifact again.",
            task_id=record.task_id,
            name=record.name,
            url=record.url,
            reason=reason,
            expected_size=record.size,
            actual_size=size,
            expected_hash=record.hash,
            actual_hash=digest,
        )


def put_remote(fs: Any, source: Path, path: str) -> None:
    """Upload ``source`` to ``path`` on ``fs`` under a temporary name, then move it into place.

    A reader never sees a partial file at ``path``; a failed upload leaves nothing behind.
    """
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    scratch = f"{parent}/.{posixpath.basename(path)[:100]}.{uuid.uuid4().hex}.tmp"
    try:
        fs.put_file(str(source), scratch)
        fs.mv(scratch, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(scratch):
                fs.rm(scratch)
        raise

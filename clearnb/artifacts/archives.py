"""Archives: unpacked safely, and unpacked copies handed out only while they are intact.

:func:`safe_extract` refuses members that would land outside the target (absolute paths,
``..``, links pointing out) and special files before writing anything. :func:`unpacked`
keeps one unpacked copy of an archive in a cache folder, read-only, with a manifest of
its files (size and modification time of each), and unpacks it again when the copy no
longer matches: a reader that changed (or removed) files of its copy cannot hand the
change to the next reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tarfile
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from clearnb.config import make_private_folder, make_private_tree
from clearnb.errors import CodecError


def _unsafe(archive: Path, member: str, why: str) -> CodecError:
    return CodecError(
        f"Refusing to unpack {archive}: its member {member!r} {why}. The archive may have been "
        "crafted to write outside its folder; unpack it by hand only if you trust its source.",
        archive=str(archive),
        member=member,
    )


def _member_target(root: Path, archive: Path, member: str) -> Path:
    """Where ``member`` lands below ``root``; refuses names that would leave ``root``."""
    pure = PurePosixPath(member.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and ":" in pure.parts[0]):
        raise _unsafe(archive, member, "has an absolute path")
    if ".." in pure.parts:
        raise _unsafe(archive, member, "climbs out of the target folder with '..'")
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise _unsafe(archive, member, "resolves outside the target folder")
    return target


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = [
            (info, _member_target(root, archive, info.filename)) for info in bundle.infolist()
        ]
        for info, target in members:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            with contextlib.suppress(OverflowError, ValueError, OSError):
                when = time.mktime((*info.date_time, 0, 0, -1))  # the member's own time
                os.utime(target, (when, when))


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive) as bundle:
        members = bundle.getmembers()
        for member in members:
            target = _member_target(root, archive, member.name)
            if member.issym() or member.islnk():
                link = PurePosixPath(member.linkname.replace("\\", "/"))
                if link.is_absolute():
                    raise _unsafe(archive, member.name, "is a link to an absolute path")
                base = target.parent if member.issym() else root
                resolved = (base / link).resolve()
                if resolved != root and root not in resolved.parents:
                    raise _unsafe(archive, member.name, "links outside the target folder")
            elif not (member.isfile() or member.isdir()):
                mode = stat.filemode(member.mode)
                raise _unsafe(archive, member.name, f"is a special file ({mode})")
        if not hasattr(tarfile, "data_filter"):  # Python < 3.10.12 / 3.11.4
            bundle.extractall(root, members=members)
            return
        try:
            bundle.extractall(root, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise _unsafe(archive, exc.tarinfo.name, str(exc)) from exc


def safe_extract(archive: Path, target: Path) -> Path:
    """Unpack a zip or tar archive (any compression) into ``target`` and return ``target``.

    Members that would land outside ``target`` (absolute paths, ``..``, links pointing
    out) and special files make it raise :class:`~clearnb.errors.CodecError` before
    anything is written.
    """
    make_private_folder(target)
    root = target.resolve()
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, root)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, root)
    else:
        raise CodecError(
            f"{archive} is neither a zip nor a tar archive; it cannot be unpacked.",
            archive=str(archive),
        )
    make_private_tree(target)
    return target


def unpacked(archive: Path, target: Path) -> Path:
    """A read-only unpacked copy of ``archive`` at ``target``, unpacked now unless an intact
    one is there already (every file of its manifest present with its size and time, no
    file added). A changed copy is moved aside and removed, and the archive unpacked again.
    """
    manifest = _manifest_path(target)
    if target.is_dir():
        if _intact(target, manifest):
            return target
        _discard(target)
    scratch = target.with_name(f".{target.name[:100]}.{uuid.uuid4().hex}.tmp")
    try:
        safe_extract(archive, scratch)
        _make_read_only(scratch)
        _write_manifest(scratch, manifest)
        try:
            os.rename(scratch, target)
        except OSError:  # another reader unpacked it at the same moment
            if not _intact(target, manifest):
                raise
    finally:
        if scratch.exists():
            _discard(scratch)
    return target


def _manifest_path(target: Path) -> Path:
    return target.with_name(f".{target.name[:100]}.manifest.json")


def _files_of(root: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            info = path.lstat()
            found[path.relative_to(root).as_posix()] = [info.st_size, info.st_mtime_ns]
    return found


def _write_manifest(root: Path, manifest: Path) -> None:
    scratch = manifest.with_name(f"{manifest.name}.{uuid.uuid4().hex}.tmp")
    scratch.write_text(json.dumps(_files_of(root)), encoding="utf-8")
    os.chmod(scratch, 0o600)
    os.replace(scratch, manifest)


def _intact(root: Path, manifest: Path) -> bool:
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    try:
        return bool(recorded == _files_of(root))
    except OSError:
        return False


def _make_read_only(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if not path.is_symlink():
                os.chmod(path, 0o500 if path.stat().st_mode & 0o100 else 0o400)
    for folder, _, _ in os.walk(root, topdown=False):
        os.chmod(folder, 0o500)


def _discard(root: Path) -> None:
    """Remove the (read-only) tree ``root``: moved aside first, so that no reader finds it
    half removed."""
    aside = root.with_name(f".{root.name[:100]}.{uuid.uuid4().hex}.old")
    try:
        os.rename(root, aside)
    except OSError:
        aside = root
    for folder, _, _ in os.walk(aside):
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
    shutil.rmtree(aside, ignore_errors=True)

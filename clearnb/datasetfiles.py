"""The file list of a dataset version, as plain data: entries, matching, versions, order.

A version lists every file it holds (its own and those it keeps from its parents) by
relative path, each with its size, sha256, the version that added it and, once stored, the
URL of its content. Nothing here touches the store; finding files to add and hashing them
is the only I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase as fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from clearnb.artifacts.hashing import sha256_file
from clearnb.errors import DatasetError

STATE_FORMAT = 1
"""Version of the stored file list's layout."""
FIRST_VERSION = "1.0.0"
"""Version of a dataset's first version when none is given (ClearML's)."""
DEFAULT_CHUNK_MB = 512
"""Megabytes of files per chunk (ClearML's default); a chunk is a unit of partial copies."""

_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)$")


@dataclass
class FileEntry:
    """One file of a dataset version."""

    relative_path: str
    hash: str
    size: int
    parent_dataset_id: str
    """Id of the version that added (or last changed) this file."""
    url: str | None = None
    """Where its content is stored; ``None`` until :meth:`Dataset.upload` stores it."""
    chunk: int = 0
    """Index of the chunk of ``parent_dataset_id`` the file was stored in."""
    local_path: str | None = None
    """The file it was added from, until it is stored."""

    @property
    def artifact_name(self) -> str:
        """ClearML's name of the chunk holding the file: ``data``, ``data_001``, ..."""
        return "data" if self.chunk == 0 else f"data_{self.chunk:03d}"

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON values."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FileEntry:
        """The entry stored as ``values``."""
        return cls(
            relative_path=str(values["relative_path"]),
            hash=str(values["hash"]),
            size=int(values["size"]),
            parent_dataset_id=str(values["parent_dataset_id"]),
            url=values.get("url"),
            chunk=int(values.get("chunk", 0)),
            local_path=values.get("local_path"),
        )


@dataclass
class DatasetState:
    """The files of one version and the versions it descends from."""

    dataset_id: str
    entries: dict[str, FileEntry] = field(default_factory=dict)
    graph: dict[str, list[str]] = field(default_factory=dict)
    """Each version's direct parents, for this version and all its ancestors."""

    @property
    def parents(self) -> list[str]:
        """Ids of this version's direct parents."""
        return list(self.graph.get(self.dataset_id, []))

    def pending(self) -> list[FileEntry]:
        """Entries added here whose content is not stored yet, by path."""
        return [
            self.entries[path] for path in sorted(self.entries) if self.entries[path].url is None
        ]

    def total_size(self) -> int:
        """Bytes of all the files."""
        return sum(entry.size for entry in self.entries.values())

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON values (what is stored with the version's task)."""
        return {
            "format": STATE_FORMAT,
            "id": self.dataset_id,
            "file_count": len(self.entries),
            "total_size": self.total_size(),
            "files": [self.entries[path].as_dict() for path in sorted(self.entries)],
            "dependency_graph": {key: list(value) for key, value in self.graph.items()},
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DatasetState:
        """The state stored as ``values``."""
        if values.get("format") != STATE_FORMAT:
            raise DatasetError(
                f"The file list of dataset {values.get('id')!r} has layout "
                f"{values.get('format')!r}, which this clearnb cannot read; upgrade clearnb.",
                dataset_id=values.get("id"),
            )
        entries = [FileEntry.from_dict(item) for item in values.get("files", [])]
        return cls(
            dataset_id=str(values["id"]),
            entries={entry.relative_path: entry for entry in entries},
            graph={str(k): [str(p) for p in v] for k, v in values["dependency_graph"].items()},
        )


# -- paths and wildcards ---------------------------------------------------------------------


def dataset_relative(path: str | None) -> str | None:
    """``path`` inside a dataset as it is matched: POSIX, without a leading ``/``."""
    if not path:
        return None
    return str(path).replace("\\", "/").lstrip("/") or None


def matches(path: str, wildcards: str | Sequence[str] | None, recursive: bool = True) -> bool:
    """Whether the dataset path ``path`` matches one of ``wildcards`` (all, when None).

    As ClearML: recursively, ``dir/*.csv`` matches a ``.csv`` file anywhere below ``dir``
    (``*`` crosses folders); otherwise each folder level must match its own part.
    Matching is case-sensitive on every system (``fnmatchcase``).
    """
    patterns = (
        ["*"] if wildcards is None else [wildcards] if isinstance(wildcards, str) else wildcards
    )
    parts = path.split("/")
    for pattern in (str(p) for p in patterns):
        if recursive:
            folder, _, name = pattern.rpartition("/")
            prefix = f"{folder}/*" if folder else "*"
            if fnmatch(path, prefix) and fnmatch(f"/{path}", f"*/{name}"):
                return True
        else:
            wanted = pattern.split("/")
            if len(wanted) == len(parts) and all(map(fnmatch, parts, wanted)):
                return True
    return False


def files_to_add(
    path: Path,
    wildcard: str | Sequence[str] | None,
    local_base_folder: str | os.PathLike[str] | None,
    dataset_path: str | None,
    recursive: bool,
) -> list[tuple[Path, str]]:
    """The local files that ``add_files`` takes from ``path``, each with its path in the
    dataset: relative to ``local_base_folder`` (``path`` by default, or its folder for a
    file), below ``dataset_path``."""
    if path.is_file():
        found = [path]
        base = Path(local_base_folder) if local_base_folder else path.parent
        if base.is_file():
            base = base.parent
    elif path.is_dir():
        patterns = [wildcard] if isinstance(wildcard, str) else list(wildcard or ["*"])
        matched = {
            item
            for pattern in patterns
            for item in (path.rglob(pattern) if recursive else path.glob(pattern))
            if item.is_file()
        }
        found = sorted(matched)
        base = Path(local_base_folder) if local_base_folder else path
    else:
        raise DatasetError(
            f"Dataset.add_files: there is no file or folder at {path} (relative paths start "
            f"from {Path.cwd()}). Check the path, or create the files first.",
            path=str(path),
        )
    prefix = PurePosixPath(dataset_relative(dataset_path) or ".")
    result = []
    for item in found:
        try:
            relative = item.absolute().relative_to(base.absolute())
        except ValueError:
            raise DatasetError(
                f"Dataset.add_files: {item} is not inside local_base_folder={base}; give a "
                "folder that holds every file added, or leave local_base_folder out.",
                path=str(item),
            ) from None
        inside = PurePosixPath(prefix, relative.as_posix())
        if ".." in inside.parts:
            raise DatasetError(
                f"Dataset.add_files: dataset_path={dataset_path!r} leads outside the dataset; "
                "use a path such as 'images/train'.",
                path=str(item),
            )
        result.append((item, inside.as_posix()))
    return result


def hashed_entries(
    files: Iterable[tuple[Path, str]], dataset_id: str, max_workers: int | None
) -> list[FileEntry]:
    """Entries of ``files`` (local path, dataset path) added by ``dataset_id``, hashed on
    ``max_workers`` threads (one per core by default)."""

    def entry(item: tuple[Path, str]) -> FileEntry:
        local, relative = item
        digest, size = sha256_file(local)
        return FileEntry(relative, digest, size, dataset_id, local_path=str(local.absolute()))

    with ThreadPoolExecutor(max_workers=max_workers or os.cpu_count() or 1) as pool:
        return list(pool.map(entry, files))


# -- versions --------------------------------------------------------------------------------


def version_key(version: str | None) -> tuple[int, ...] | None:
    """``version`` as numbers to compare (``"1.2.10"`` -> ``(1, 2, 10)``); None if it is
    not a dotted number."""
    found = _VERSION.match(str(version or "").strip())
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


def next_version(version: str | None) -> str:
    """The version after ``version``: its last number plus one (``1.0.9`` -> ``1.0.10``);
    the first version when there is none or it is not a dotted number."""
    key = version_key(version)
    if key is None:
        return FIRST_VERSION
    return ".".join(str(part) for part in (*key[:-1], key[-1] + 1))


def newest_version(candidates: Sequence[tuple[str | None, Any]]) -> Any:
    """Of ``(version, item)`` pairs, newest first, the item with the highest version
    (among equal ones the newest; an unversioned item only when none has a version)."""
    best: tuple[tuple[int, ...] | None, Any] | None = None
    for version, item in candidates:
        key = version_key(version)
        if best is None or (key is not None and (best[0] is None or key > best[0])):
            best = (key, item)
    return None if best is None else best[1]


# -- ancestry and chunks ---------------------------------------------------------------------


def ancestry(graph: Mapping[str, Sequence[str]], dataset_id: str) -> list[str]:
    """``dataset_id`` and every version it descends from, ancestors first: the order in
    which their files are laid over each other."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen:
            return
        seen.add(node)
        for parent in graph.get(node, []):
            visit(parent)
        order.append(node)

    visit(dataset_id)
    return order


def chunk_list(state: DatasetState) -> list[tuple[str, int]]:
    """The chunks holding the state's files, ``(version id, chunk index)``, ancestors first."""
    used = {(entry.parent_dataset_id, entry.chunk) for entry in state.entries.values()}
    rank = {node: index for index, node in enumerate(ancestry(state.graph, state.dataset_id))}
    return sorted(used, key=lambda chunk: (rank.get(chunk[0], -1), chunk[1]))


def select_part(state: DatasetState, part: int | None, num_parts: int | None) -> list[FileEntry]:
    """The entries of ``part`` (of ``num_parts``; by default as many as there are chunks):
    chunks ``part``, ``part + num_parts``, ... as ClearML deals them; all without ``part``."""
    entries = [state.entries[path] for path in sorted(state.entries)]
    if part is None:
        return entries
    chunks = chunk_list(state)
    parts = num_parts or len(chunks) or 1
    if not isinstance(part, int) or part < 0 or part >= parts or parts < 1:
        raise DatasetError(
            f"part={part!r} is not one of the {parts} parts (0 to {parts - 1}) of dataset "
            f"{state.dataset_id}; pass 0 <= part < num_parts.",
            part=part,
            num_parts=num_parts,
        )
    chosen = set(chunks[part::parts])
    return [entry for entry in entries if (entry.parent_dataset_id, entry.chunk) in chosen]


def assign_chunks(entries: Sequence[FileEntry], first: int, chunk_size_mb: int | None) -> None:
    """Give ``entries`` (about to be stored) chunk indices from ``first`` on, starting a new
    chunk past ``chunk_size_mb`` megabytes (ClearML's default; -1: all in one chunk)."""
    limit = (chunk_size_mb or DEFAULT_CHUNK_MB) * 1024 * 1024
    index, filled = first, 0
    for entry in entries:
        if chunk_size_mb != -1 and filled and filled + entry.size > limit:
            index, filled = index + 1, 0
        entry.chunk = index
        filled += entry.size


def compare(
    entries: Mapping[str, FileEntry], reference: Mapping[str, FileEntry]
) -> tuple[list[str], list[str], list[str]]:
    """The paths added, removed and modified in ``entries`` against ``reference``."""
    added = sorted(path for path in entries if path not in reference)
    removed = sorted(path for path in reference if path not in entries)
    modified = sorted(
        path
        for path, entry in entries.items()
        if path in reference and reference[path].hash != entry.hash
    )
    return added, removed, modified


def preview_lines(entries: Sequence[FileEntry], limit: int) -> list[str]:
    """A short listing of ``entries``: path and size of the first ``limit``, then a count."""
    lines = [f"{e.relative_path} ({e.size} bytes)" for e in entries[:limit]]
    if len(entries) > limit:
        lines.append(f"... and {len(entries) - limit} more")
    return lines

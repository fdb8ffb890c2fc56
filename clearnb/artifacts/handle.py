"""``task.artifacts[name]``: one stored artifact of a task, as ClearML's ``Artifact``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearnb.artifacts.storage import ArtifactStorage
    from clearnb.store.records import ArtifactRecord


class Artifact:
    """A stored artifact of a task: its facts, and :meth:`get` to load it."""

    def __init__(self, record: ArtifactRecord, storage: ArtifactStorage) -> None:
        self._record = record
        self._storage = storage

    name = property(lambda self: self._record.name, doc="The artifact's name.")
    url = property(lambda self: self._record.url, doc="Where the stored file lives.")
    hash = property(lambda self: self._record.hash, doc="sha256 of the stored file.")
    size = property(lambda self: self._record.size, doc="Size of the stored file in bytes.")
    type = property(lambda self: self._record.type, doc="Python type of the original object.")
    preview = property(lambda self: self._record.preview, doc="A short text preview.")
    metadata = property(lambda self: dict(self._record.metadata), doc="User metadata.")
    codec = property(lambda self: self._record.codec, doc="Codec that stored it.")
    task_id = property(lambda self: self._record.task_id, doc="Id of the owning task.")

    def get(self, deserialization_function: Callable[[bytes], Any] | None = None) -> Any:
        """Load the artifact (its hash is checked first); ``deserialization_function``
        makes the value of the file's bytes (an artifact uploaded with a
        ``serialization_function`` needs it, else this is the path of its file)."""
        return self._storage.load(self._record, deserialization_function=deserialization_function)

    def get_local_copy(self, extract_archive: bool = True) -> str:
        """Path of a verified local copy of the stored file; for a folder artifact (stored
        as a zip archive) with ``extract_archive``, of its unpacked, read-only copy."""
        if extract_archive and self._record.codec == "folder":
            return str(self._storage.load(self._record))
        return str(self._storage.local_copy(self._record))

    def __repr__(self) -> str:
        return f"Artifact(name={self.name!r}, type={self.type!r}, size={self.size})"

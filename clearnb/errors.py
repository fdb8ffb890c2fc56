"""The one exception hierarchy of clearnb.

Every error says what is wrong and what to do about it. Errors carry structured fields
(``error.fields``) so that callers can react without parsing messages, and they pickle, so
they cross process boundaries (agents, Dask workers) intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

_E = TypeVar("_E", bound="ClearnbError")


def _rebuild(cls: type[ClearnbError], message: str, fields: dict[str, Any]) -> ClearnbError:
    error = cls.__new__(cls)
    ClearnbError.__init__(error, message, **fields)
    return error


class ClearnbError(Exception):
    """Base class of every error clearnb raises on purpose."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = dict(fields)
        for key, value in fields.items():
            setattr(self, key, value)

    @classmethod
    def collect(cls: type[_E], problems: Iterable[str], what: str = "problem") -> _E:
        """One error listing every problem: ``"2 problems found:\n  - ...\n  - ..."``."""
        items = list(problems)
        plural = "s" if len(items) != 1 else ""
        lines = "\n".join(f"  - {item}" for item in items)
        return cls(f"{len(items)} {what}{plural} found:\n{lines}", problems=items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ClearnbError):
    """A setting (environment variable, URL) is missing or malformed."""


class MissingDependencyError(ClearnbError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, message: str, **fields: Any) -> None:
        ClearnbError.__init__(self, message, **fields)


class StoreError(ClearnbError):
    """The metadata store cannot be opened or written."""


class SchemaVersionError(StoreError):
    """The store was written by a newer (or unknown) clearnb schema version."""


class TaskNotFoundError(ClearnbError, LookupError):
    """No task has the id, or the project and name, that was asked for."""


class ModelNotFoundError(ClearnbError, LookupError, ValueError):
    """No model has the id, or matches the name, project and tags, that were asked for
    (a ``ValueError`` too, as ClearML raises for a model it cannot locate)."""


class ModelError(ClearnbError, ValueError):
    """A model cannot be changed or read as asked (a published model, no weights, ...)."""


class ConfigurationObjectError(ClearnbError, ValueError):
    """A task's configuration object cannot be stored or read as asked."""


class NotebookError(ClearnbError):
    """A notebook path is missing or the file is not a notebook."""


class NotebookNotFoundError(NotebookError, FileNotFoundError):
    """The notebook path does not exist."""


class NotANotebookError(NotebookError):
    """The file exists but is not a valid Jupyter notebook."""


class KernelNotInstalledError(NotebookError):
    """The notebook asks for a Jupyter kernel that is not installed on this machine."""


class ParameterError(ClearnbError, ValueError):
    """Parameter overrides do not fit what the notebook declares."""


class ValidationError(ClearnbError, ValueError):
    """Several problems found at once; ``problems`` lists each of them."""


class InvalidReferenceError(ClearnbError, ValueError):
    """A ``${...}`` reference in a step override that cannot be parsed."""


class PipelineError(ClearnbError):
    """A pipeline cannot be built or run as asked."""


class ArtifactError(ClearnbError):
    """An artifact cannot be stored or read."""


class InvalidArtifactNameError(ArtifactError, ValueError):
    """An artifact name is empty or contains a path separator or ``..``."""


class ArtifactNotFoundError(ArtifactError, KeyError):
    """The task has no artifact of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class ArtifactCorruptedError(ArtifactError):
    """An artifact's stored bytes no longer match the hash recorded when it was written."""


class ArtifactWriteError(ArtifactError, OSError):
    """The artifact storage refused to write an artifact (disk full, quota, no access);
    nothing of the new artifact was kept. ``errno`` is the operating system's error number."""

    def __init__(self, message: str, **fields: Any) -> None:
        ClearnbError.__init__(self, message, **fields)


class CodecError(ArtifactError):
    """No codec can store (or read back) the given object."""


class InvalidLimitError(ClearnbError, ValueError):
    """A limit of a run (a memory size) is not a value clearnb understands."""


class ExecutionError(ClearnbError):
    """A notebook run failed: a cell raised, the kernel died, or a time limit passed."""


class TaskFailedError(ExecutionError):
    """Raised on request when a run ends failed; carries the task id and its error record."""


class RemoteStorageError(ClearnbError, OSError):
    """A file could not be read from or written to a storage URL (a path or fsspec URL)."""


class RemoteFileNotFoundError(RemoteStorageError, FileNotFoundError):
    """A path or URL given to the StorageManager does not exist."""


class DatasetError(ClearnbError, ValueError):
    """A dataset cannot be changed or read as asked (finalized, missing files, bad path)."""


class DatasetNotFoundError(DatasetError, LookupError):
    """No dataset has the id, or matches the project, name, tags and version, asked for."""


class ParameterWarning(UserWarning):
    """An override that names no parameter the step declares: set as given, as ClearML does."""


class CompatibilityWarning(UserWarning):
    """A ClearML argument that has no effect here: recorded with the task or run, not acted on."""


class FallbackWarning(UserWarning):
    """A value is stored another way because a library its usual format needs is missing."""


"""Values stored as the bytes the user's own function makes of them (ClearML's
``serialization_function``), and read back with the user's function.

``task.upload_artifact(name, value, serialization_function=f)`` stores ``f(value)`` as the
artifact's file, recorded with the codec :data:`SERIALIZED`: reading it needs the user's
function again (``artifact.get(deserialization_function=g)`` calls ``g`` with the file's
bytes). Without one, ``get()`` gives the path of the verified local copy, as ClearML does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clearnb.artifacts.codecs import Codec, CodecRegistry
from clearnb.errors import CodecError

SERIALIZED = "serialized"
"""The codec recorded for an artifact stored by the user's serialization function."""

Serializer = Callable[[Any], bytes | bytearray]
Deserializer = Callable[[bytes], Any]


class SerializedCodec(Codec):
    """Writes what the user's ``serialize`` returns; reads back the file's path only (the
    bytes are the user's to read, with their own function)."""

    name = SERIALIZED
    suffix = ".bin"

    def __init__(self, serialize: Serializer | None = None) -> None:
        self.serialize = serialize

    def matches(self, obj: Any) -> bool:
        return self.serialize is not None

    def encode(self, obj: Any, folder: Path) -> Path:
        if self.serialize is None:
            raise CodecError("a serialized artifact needs the serialization function")
        data = self.serialize(obj)
        if not isinstance(data, bytes | bytearray | memoryview):
            function = getattr(self.serialize, "__qualname__", repr(self.serialize))
            raise CodecError(
                f"the serialization function {function} returned a {type(data).__name__}; "
                "it must return bytes",
                type=type(data).__name__,
            )
        path = folder / f"value{self.suffix}"
        path.write_bytes(bytes(data))
        return path

    def decode(self, path: Path) -> Any:
        return path


def serializing(serialize: Serializer) -> CodecRegistry:
    """The registry that stores any value with ``serialize``."""
    return CodecRegistry([SerializedCodec(serialize)])


def deserialized(path: Path, deserialize: Deserializer, what: str) -> Any:
    """``deserialize`` of the bytes of the verified local copy ``path`` of ``what``."""
    try:
        return deserialize(path.read_bytes())
    except Exception as exc:
        function = getattr(deserialize, "__qualname__", repr(deserialize))
        raise CodecError(
            f"the deserialization function {function} could not read {what} from {path}: "
            f"{type(exc).__name__}: {exc}",
            path=str(path),
        ) from exc

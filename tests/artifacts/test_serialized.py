"""Artifacts stored as the bytes of the user's own serialization function, and read back
with the user's deserialization function (ClearML's serialization_function)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clearnb import Task
from clearnb.backend import Backend
from clearnb.errors import ArtifactCorruptedError, CodecError
from clearnb.store.records import TaskRecord

calls: list[str] = []


def mine(value: Any) -> bytes:
    calls.append("serialize")
    return b"MINE:" + json.dumps(sorted(value)).encode()


def unmine(data: bytes) -> Any:
    calls.append("deserialize")
    assert data.startswith(b"MINE:")
    return set(json.loads(data[5:]))


@pytest.fixture
def task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Task:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    backend = Backend.for_config()
    return Task.from_record(backend.store.create_task(TaskRecord("tests", "serialized")), backend)


def test_the_users_functions_write_and_read_the_artifact(task: Task) -> None:
    calls.clear()
    assert task.upload_artifact("numbers", {3, 1, 2}, serialization_function=mine)
    artifact = task.artifacts["numbers"]
    assert artifact.codec == "serialized" and artifact.type == "set"
    stored = Path(artifact.get_local_copy())
    assert stored.read_bytes() == b"MINE:[1, 2, 3]", "the file holds the user's bytes"
    assert artifact.get(deserialization_function=unmine) == {1, 2, 3}
    assert calls == ["serialize", "deserialize"]
    plain = artifact.get()
    assert isinstance(plain, Path) and plain.read_bytes() == stored.read_bytes(), (
        "without the user's function, the path of the file (as ClearML gives it)"
    )


def test_a_deserialization_function_reads_any_artifact(task: Task) -> None:
    task.upload_artifact("table", {"a": 1})
    assert task.artifacts["table"].get(deserialization_function=json.loads) == {"a": 1}


def test_a_serialization_function_must_make_bytes(task: Task) -> None:
    with pytest.raises(CodecError, match="returned a str; it must return bytes"):
        task.upload_artifact("bad", [1], serialization_function=lambda value: str(value))
    assert "bad" not in task.artifacts


def test_user_bytes_are_verified_before_the_user_reads_them(task: Task) -> None:
    task.upload_artifact("numbers", {1}, serialization_function=mine)
    artifact = task.artifacts["numbers"]
    Path(artifact.get_local_copy()).write_bytes(b"MINE:[666]")
    with pytest.raises(ArtifactCorruptedError):
        artifact.get(deserialization_function=unmine)


def test_a_failing_deserialization_function_names_the_artifact(task: Task) -> None:
    task.upload_artifact("numbers", {1}, serialization_function=mine)
    with pytest.raises(CodecError, match="could not read artifact 'numbers'"):
        task.artifacts["numbers"].get(deserialization_function=lambda data: 1 / 0)

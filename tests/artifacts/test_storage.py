"""ArtifactStorage: atomic, verified artifacts on local disk and on fsspec file systems."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest

from clearnb.artifacts import ArtifactStorage, Codec, default_codecs, validate_artifact_name
from clearnb.artifacts import storage as storage_module
from clearnb.errors import (
    ArtifactCorruptedError,
    ArtifactError,
    CodecError,
    InvalidArtifactNameError,
)
from clearnb.store.records import ArtifactRecord

TASK = "0123456789abcdef0123456789abcdef"


class Model:
    """A user object only pickle can store."""

    def __init__(self, weights: list[float]) -> None:
        self.weights = weights


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStorage:
    return ArtifactStorage(str(tmp_path / "artifacts"), tmp_path / "cache")


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The scratch folder of the ``store`` fixture's cache, for the test to inspect; the
    system's temporary folder (routed to one the test sees) must stay unused."""
    system = tmp_path / "tmp"
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system))
    scratch = tmp_path / "cache" / "scratch"
    scratch.mkdir(parents=True)
    yield scratch
    assert list(system.iterdir()) == [], "scratch space lives in the cache, not in TMPDIR"


def files_below(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def memory_url() -> str:
    return f"memory://clearnb-test-{uuid.uuid4().hex}"


def test_save_writes_one_file_per_artifact_and_loads_it(
    store: ArtifactStorage, tmp_path: Path
) -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    record = store.save(TASK, "features", array, metadata={"split": "train"})

    stored = tmp_path / "artifacts" / TASK / "features" / "features.npy"
    assert record.url == str(stored)
    assert stored.is_file()
    assert record.task_id == TASK
    assert record.name == "features"
    assert record.codec == "npy"
    assert record.type == "numpy.ndarray"
    assert record.size == stored.stat().st_size
    assert record.hash == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert record.preview == "ndarray float32 (3, 4)"
    assert record.metadata == {"split": "train"}
    assert files_below(tmp_path / "artifacts") == [f"{TASK}/features/features.npy"]

    loaded = store.load(record)
    np.testing.assert_array_equal(loaded, array)
    assert store.local_copy(record) == stored


@pytest.mark.parametrize(
    "value",
    [
        {"accuracy": 0.9, "labels": ["a", "b"]},
        pd.DataFrame({"x": [1, 2], "y": ["u", "v"]}),
        Model([0.5, 1.5]),
        "plain text",
    ],
    ids=["json", "parquet", "pickle", "str"],
)
def test_round_trip_through_storage(value: Any, store: ArtifactStorage) -> None:
    record = store.save(TASK, "value", value)
    loaded = store.load(record)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    elif isinstance(value, Model):
        assert loaded.weights == value.weights
    else:
        assert loaded == value


def test_file_artifact_keeps_file_name_and_loads_as_path(
    store: ArtifactStorage, tmp_path: Path
) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"\x00weights")
    record = store.save(TASK, "model", source)
    assert record.codec == "file"
    assert record.url.endswith(f"{TASK}/model/model.onnx")
    loaded = store.load(record)
    assert isinstance(loaded, str)
    assert Path(loaded).read_bytes() == b"\x00weights"


def test_folder_artifact_is_unpacked_into_the_cache_not_the_store(
    store: ArtifactStorage, tmp_path: Path
) -> None:
    source = tmp_path / "images"
    (source / "cats").mkdir(parents=True)
    (source / "cats" / "1.txt").write_text("meow")
    record = store.save(TASK, "images", source)
    assert record.codec == "folder"
    assert record.url.endswith("images.zip")

    loaded = Path(store.load(record))
    assert (loaded / "cats" / "1.txt").read_text() == "meow"
    assert tmp_path / "cache" in loaded.parents
    assert files_below(tmp_path / "artifacts") == [f"{TASK}/images/images.zip"]
    assert store.load(record) == str(loaded)


def test_a_reader_that_changes_its_unpacked_folder_does_not_change_the_next_readers(
    store: ArtifactStorage, tmp_path: Path
) -> None:
    source = tmp_path / "images"
    (source / "cats").mkdir(parents=True)
    (source / "cats" / "1.txt").write_text("meow")
    (source / "cats" / "2.txt").write_text("purr")
    record = store.save(TASK, "images", source)
    first = Path(store.load(record))
    assert not os.access(first / "cats" / "1.txt", os.W_OK) or os.geteuid() == 0, (
        "the unpacked copy is handed out read-only"
    )
    assert stat.S_IMODE((first / "cats").stat().st_mode) & 0o222 == 0
    changes: list[Callable[[Path], object]] = [
        lambda cats: (cats / "1.txt").write_text("woof"),  # same size, new bytes
        lambda cats: (cats / "2.txt").unlink(),
        lambda cats: (cats / "3.txt").write_text("extra"),
    ]
    for change in changes:
        for folder in (first, first / "cats"):
            os.chmod(folder, 0o700)  # what a careless reader would do to write into it
        change(first / "cats")
        again = Path(store.load(record))
        assert sorted(p.name for p in (again / "cats").iterdir()) == ["1.txt", "2.txt"]
        assert (again / "cats" / "1.txt").read_text() == "meow"
        assert (again / "cats" / "2.txt").read_text() == "purr"
        first = again
    leftovers = [p.name for p in first.parent.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []


def test_file_url_storage(tmp_path: Path) -> None:
    store = ArtifactStorage(f"file://{tmp_path / 'art'}", tmp_path / "cache")
    record = store.save(TASK, "x", [1, 2, 3])
    assert record.url == str(tmp_path / "art" / TASK / "x" / "x.json")
    assert store.load(record) == [1, 2, 3]


def test_resaving_a_name_replaces_the_file(store: ArtifactStorage, tmp_path: Path) -> None:
    first = store.save(TASK, "result", np.zeros(3))
    second = store.save(TASK, "result", {"now": "json"})
    assert files_below(tmp_path / "artifacts") == [f"{TASK}/result/result.json"]
    assert store.load(second) == {"now": "json"}
    with pytest.raises(ArtifactCorruptedError, match="missing"):
        store.load(first)

    third = store.save(TASK, "result", {"again": 1})
    assert store.load(third) == {"again": 1}
    assert files_below(tmp_path / "artifacts") == [f"{TASK}/result/result.json"]


def test_truncated_artifact_is_reported(store: ArtifactStorage) -> None:
    record = store.save(TASK, "weights", np.arange(1000))
    path = Path(record.url)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactCorruptedError) as caught:
        store.load(record)
    message = str(caught.value)
    assert "truncated" in message
    assert "'weights'" in message
    assert TASK in message
    assert record.url in message
    assert "re-run the task" in message
    assert caught.value.reason == "truncated"  # type: ignore[attr-defined]


def test_altered_byte_is_reported_before_unpickling(store: ArtifactStorage) -> None:
    record = store.save(TASK, "model", Model([1.0, 2.0]))
    assert record.codec == "pickle"
    path = Path(record.url)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptedError) as caught:
        store.load(record)
    message = str(caught.value)
    assert "hash" in message
    assert "altered" in message
    assert record.hash in message
    assert "'model'" in message
    assert TASK in message


def test_missing_artifact_file_is_reported(store: ArtifactStorage) -> None:
    record = store.save(TASK, "gone", [1])
    Path(record.url).unlink()
    with pytest.raises(ArtifactCorruptedError, match="missing"):
        store.local_copy(record)


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "..", ".hidden", "a\\b", "x" * 201, "nul\x00byte", "/abs"]
)
def test_invalid_names_are_refused(name: str, store: ArtifactStorage, tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifactNameError) as caught:
        store.save(TASK, name, [1])
    message = str(caught.value)
    if name.isprintable():
        assert f"'{name}'" in message
    else:
        assert repr(name) in message
    assert "such as 'model'" in message
    assert isinstance(caught.value, ValueError)
    assert files_below(tmp_path / "artifacts") == []


def test_validate_artifact_name_accepts_ordinary_names() -> None:
    for name in ["model", "train_data", "confusion-matrix.png", "a..b", "x" * 200, "é t"]:
        assert validate_artifact_name(name) == name
    with pytest.raises(InvalidArtifactNameError, match="must be a str"):
        validate_artifact_name(3)


def test_invalid_task_id_is_refused(store: ArtifactStorage) -> None:
    with pytest.raises(ArtifactError, match=r"Invalid task id '\.\./etc'"):
        store.save("../etc", "x", 1)


def test_unstorable_object_leaves_nothing(
    store: ArtifactStorage, tmp_path: Path, private_tmp: Path
) -> None:
    with pytest.raises(CodecError) as caught:
        store.save(TASK, "fn", lambda x: x)
    message = str(caught.value)
    assert "function" in message
    assert "'fn'" in message
    assert "numpy array" in message and "DataFrame" in message
    assert files_below(tmp_path / "artifacts") == []
    assert not (tmp_path / "artifacts" / TASK).exists()
    assert list(private_tmp.iterdir()) == []


def test_failed_saves_do_not_touch_previous_artifacts(
    store: ArtifactStorage, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = store.save(TASK, "kept", {"a": 1})
    other = store.save("f" * 32, "kept", np.ones(4))
    replaced = store.save(TASK, "replaced", [1, 2, 3])
    before = {p: p.read_bytes() for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}

    with pytest.raises(CodecError):
        store.save(TASK, "broken", (i for i in range(3)))

    def half_copy(source: Path, destination: Path) -> None:
        Path(destination).write_bytes(Path(source).read_bytes()[:3])
        raise OSError("disk full")

    monkeypatch.setattr(storage_module.shutil, "copyfile", half_copy)
    with pytest.raises(OSError, match="disk full"):
        store.save(TASK, "replaced", ["new", "value"])
    with pytest.raises(OSError, match="disk full"):
        store.save("e" * 32, "fresh", ["new"])
    monkeypatch.undo()

    after = {p: p.read_bytes() for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}
    assert after == before
    assert not (tmp_path / "artifacts" / ("e" * 32)).exists()
    assert store.load(kept) == {"a": 1}
    np.testing.assert_array_equal(store.load(other), np.ones(4))
    assert store.load(replaced) == [1, 2, 3]


def test_encode_failure_falls_back_to_the_next_codec(store: ArtifactStorage) -> None:
    frame = pd.DataFrame({"mixed": [1, "x", 2.5]})
    record = store.save(TASK, "mixed", frame)
    assert record.codec == "pickle"
    pd.testing.assert_frame_equal(store.load(record), frame)


def test_forced_codec(store: ArtifactStorage) -> None:
    record = store.save(TASK, "as-pickle", {"a": 1}, codec="pickle")
    assert record.codec == "pickle"
    assert store.load(record) == {"a": 1}
    with pytest.raises(CodecError, match="'json' codec"):
        store.save(TASK, "bad", {"a": object()}, codec="json")


def test_custom_registry(tmp_path: Path) -> None:
    class Reversed(Codec):
        name = "reversed"
        suffix = ".txt"

        def matches(self, obj: Any) -> bool:
            return isinstance(obj, str) and obj.startswith("rev:")

        def encode(self, obj: Any, folder: Path) -> Path:
            path = folder / "value.txt"
            path.write_text(obj[::-1])
            return path

        def decode(self, path: Path) -> Any:
            return path.read_text()[::-1]

    registry = default_codecs()
    registry.register(Reversed(), first=True)
    store = ArtifactStorage(tmp_path / "a", tmp_path / "c", registry=registry)
    record = store.save(TASK, "r", "rev:abc")
    assert record.codec == "reversed"
    assert Path(record.url).read_text() == "cba:ver"
    assert store.load(record) == "rev:abc"
    with pytest.raises(CodecError, match="No codec named 'reversed'"):
        ArtifactStorage(tmp_path / "a", tmp_path / "c").load(record)


def test_delete(store: ArtifactStorage, tmp_path: Path) -> None:
    store.save(TASK, "x", 1)
    assert store.delete(TASK, "x") is True
    assert store.delete(TASK, "x") is False
    assert files_below(tmp_path / "artifacts") == []


def test_memory_storage_round_trip_downloads_into_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = memory_url()
    store = ArtifactStorage(url, tmp_path / "cache")
    array = np.linspace(0, 1, 50)
    record = store.save(TASK, "curve", array)
    assert record.url == f"{url}/{TASK}/curve/curve.npy"
    fs = fsspec.filesystem("memory")
    uploaded = fs.cat_file(record.url)
    assert hashlib.sha256(uploaded).hexdigest() == record.hash, "the bytes stored are recorded"
    assert len(uploaded) == record.size
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{url}/{TASK}/curve", detail=False)] == [
        "curve.npy"
    ]

    np.testing.assert_array_equal(store.load(record), array)
    cached = tmp_path / "cache" / "artifacts" / record.hash[:2] / record.hash / "curve.npy"
    assert store.local_copy(record) == cached
    assert cached.is_file()

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached copy should be used")

    monkeypatch.setattr(type(fs), "get_file", no_download)
    np.testing.assert_array_equal(store.load(record), array)
    monkeypatch.undo()

    cached.write_bytes(b"damaged")
    np.testing.assert_array_equal(store.load(record), array)
    assert cached.read_bytes() == fs.cat_file(record.url)


def test_memory_storage_folder_and_corruption(tmp_path: Path) -> None:
    url = memory_url()
    store = ArtifactStorage(url, tmp_path / "cache")
    source = tmp_path / "docs"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "readme.md").write_text("# hi")
    record = store.save(TASK, "docs", source)
    restored = Path(store.load(record))
    assert (restored / "sub" / "readme.md").read_text() == "# hi"

    text = store.save(TASK, "notes", {"n": 1})
    fs = fsspec.filesystem("memory")
    fs.pipe_file(text.url, b'{"n": 2}')
    with pytest.raises(ArtifactCorruptedError, match="hash") as caught:
        store.load(text)
    assert text.url in str(caught.value)
    assert not (
        tmp_path / "cache" / "artifacts" / text.hash[:2] / text.hash / "notes.json"
    ).exists()
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []

    fs.rm(text.url)
    with pytest.raises(ArtifactCorruptedError, match="missing"):
        store.load(text)


def test_record_with_a_bad_hash_is_refused(store: ArtifactStorage) -> None:
    record = store.save(TASK, "x", 1)
    forged = ArtifactRecord(**{**record.__dict__, "hash": "../../etc", "url": memory_url()})
    with pytest.raises(ArtifactError, match="no valid sha256"):
        store.local_copy(forged)


def test_temporary_folders_are_removed(store: ArtifactStorage, private_tmp: Path) -> None:
    store.save(TASK, "a", np.ones(2))
    store.save(TASK, "b", {"x": 1})
    assert list(private_tmp.iterdir()) == []

"""BlobStore: files kept once each under their sha256, checked whenever they are read."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from clearnb.artifacts.blobs import BlobStore
from clearnb.errors import ArtifactCorruptedError


def stored_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def memory_root() -> Iterator[str]:
    url = f"memory://blobs-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_same_content_is_stored_once_under_its_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "root", tmp_path / "cache")
    first = store.put(write(tmp_path / "a.bin", b"same bytes"))
    again = store.put(write(tmp_path / "elsewhere" / "b.bin", b"same bytes"))
    other = store.put(write(tmp_path / "c.bin", b"other bytes"))
    digest = hashlib.sha256(b"same bytes").hexdigest()
    assert first.digest == digest and first.size == len(b"same bytes") and first.written
    assert again.url == first.url and not again.written
    assert other.url != first.url and other.written
    assert Path(first.url) == tmp_path / "root" / "datasets" / "sha256" / digest[:2] / digest
    assert len(stored_files(tmp_path / "root")) == 2
    assert Path(first.url).read_bytes() == b"same bytes"
    assert os.stat(first.url).st_mode & 0o777 == 0o400  # private, and never written again


def test_place_copies_or_links_verified_content(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "root", tmp_path / "cache")
    blob = store.put(write(tmp_path / "a.bin", b"payload"))
    copy = tmp_path / "out" / "nested" / "a.bin"
    store.place(blob.url, blob.digest, blob.size, copy, link=False)
    assert copy.read_bytes() == b"payload" and not copy.is_symlink()
    assert not os.access(copy, os.W_OK) or os.geteuid() == 0
    link = tmp_path / "out" / "link.bin"
    store.place(blob.url, blob.digest, blob.size, link, link=True)
    assert link.is_symlink() and link.resolve() == Path(blob.url).resolve()


def test_an_altered_stored_file_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "root", tmp_path / "cache")
    blob = store.put(write(tmp_path / "a.bin", b"payload"))
    os.chmod(blob.url, 0o600)
    Path(blob.url).write_bytes(b"paylaod")  # same size, other bytes
    target = tmp_path / "out" / "a.bin"
    with pytest.raises(ArtifactCorruptedError, match="altered"):
        store.place(blob.url, blob.digest, blob.size, target, link=False)
    assert not target.exists() and list(target.parent.iterdir()) == []
    Path(blob.url).unlink()
    with pytest.raises(ArtifactCorruptedError, match="missing"):
        store.place(blob.url, blob.digest, blob.size, target, link=True)


def test_a_changed_source_is_stored_under_what_it_held(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "root", tmp_path / "cache")
    source = write(tmp_path / "a.bin", b"version one")
    expected = hashlib.sha256(b"version one").hexdigest()
    source.write_bytes(b"version two")
    blob = store.put(source, expected)
    assert blob.digest == hashlib.sha256(b"version two").hexdigest() != expected
    assert Path(blob.url).read_bytes() == b"version two"
    assert Path(blob.url).name == blob.digest


def test_remote_storage_round_trip(tmp_path: Path, memory_root: str) -> None:
    store = BlobStore(memory_root, tmp_path / "cache")
    blob = store.put(write(tmp_path / "a.bin", b"remote bytes"))
    assert blob.url.startswith(memory_root) and blob.written
    assert not store.put(write(tmp_path / "b.bin", b"remote bytes")).written
    fs = fsspec.filesystem("memory")
    assert len(fs.find(memory_root)) == 1
    copy = tmp_path / "out" / "a.bin"
    store.place(blob.url, blob.digest, blob.size, copy, link=False)
    assert copy.read_bytes() == b"remote bytes"
    link = tmp_path / "out" / "b.bin"
    store.place(blob.url, blob.digest, blob.size, link, link=True)
    assert link.resolve().is_relative_to((tmp_path / "cache").resolve())
    assert link.read_bytes() == b"remote bytes"
    assert store.delete(blob.url) and not store.delete(blob.url)

"""StorageManager: local copies of files on any URL, uploads, listings."""

from __future__ import annotations

import functools
import http.server
import io
import socket
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from clearnb.errors import (
    ClearnbError,
    MissingDependencyError,
    RemoteFileNotFoundError,
    RemoteStorageError,
)
from clearnb.storage import StorageManager
from tests.helpers import require_module


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(folder))
    monkeypatch.delenv("CLEARNB_CACHE_DIR", raising=False)
    return folder


@pytest.fixture
def bucket() -> Iterator[str]:
    url = f"memory://sm-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, text in files.items():
            bundle.writestr(name, text)
    return buffer.getvalue()


def test_local_path_is_returned_as_is(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text("a\n")
    assert StorageManager.get_local_copy(str(source)) == str(source)
    assert StorageManager.get_local_copy(str(tmp_path)) == str(tmp_path)


def test_file_url_is_returned_as_local_path(tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text("a\n")
    assert StorageManager.get_local_copy(f"file://{source}") == str(source)


def test_missing_file_is_an_error_naming_the_url(tmp_path: Path, bucket: str) -> None:
    for url in (str(tmp_path / "nope.txt"), f"file://{tmp_path}/nope.txt", f"{bucket}/nope.txt"):
        with pytest.raises(RemoteFileNotFoundError) as caught:
            StorageManager.get_local_copy(url)
        assert isinstance(caught.value, FileNotFoundError)
        assert url in str(caught.value)
        assert "Check the path" in str(caught.value)


def test_memory_url_is_cached_and_force_download_refreshes(home: Path, bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    url = f"{bucket}/folder/data.txt"
    fs.pipe_file(url, b"first")

    local = Path(StorageManager.get_local_copy(url))
    assert local.read_bytes() == b"first"
    assert local.parent == home / "cache" / "storage" / "global"
    assert local.name.endswith("_data.txt")
    assert len(local.name) == len("0123456789abcdef_data.txt")
    assert [p.name for p in local.parent.iterdir()] == [local.name]

    fs.pipe_file(url, b"second")
    assert StorageManager.get_local_copy(url) == str(local)
    assert local.read_bytes() == b"first"

    assert StorageManager.get_local_copy(url, force_download=True) == str(local)
    assert local.read_bytes() == b"second"

    other = Path(StorageManager.get_local_copy(url, cache_context="datasets", name="x.txt"))
    assert other.parent == home / "cache" / "storage" / "datasets"
    assert other.name.endswith("_x.txt")
    assert other.read_bytes() == b"second"


def test_memory_folder_is_refused(bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{bucket}/dir/a.txt", b"a")
    with pytest.raises(RemoteStorageError, match="is a folder"):
        StorageManager.get_local_copy(f"{bucket}/dir")


def test_zip_is_extracted_next_to_the_cached_file(bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    url = f"{bucket}/data.zip"
    fs.pipe_file(url, zip_bytes({"a.txt": "alpha", "sub/b.txt": "beta"}))

    folder = Path(StorageManager.get_local_copy(url))
    assert folder.is_dir()
    assert (folder / "a.txt").read_text() == "alpha"
    assert (folder / "sub" / "b.txt").read_text() == "beta"
    archive = Path(StorageManager.get_local_copy(url, extract_archive=False))
    assert archive.is_file()
    assert archive.parent == folder.parent
    assert archive.name == folder.name + ".zip"

    fs.pipe_file(url, zip_bytes({"a.txt": "new"}))
    assert (Path(StorageManager.get_local_copy(url)) / "a.txt").read_text() == "alpha"
    refreshed = Path(StorageManager.get_local_copy(url, force_download=True))
    assert (refreshed / "a.txt").read_text() == "new"
    assert not (refreshed / "sub").exists()
    assert not [p for p in refreshed.parent.iterdir() if p.name.startswith(".")]


def test_local_tar_gz_is_extracted_into_the_cache(tmp_path: Path, home: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        data = b"payload"
        info = tarfile.TarInfo("inner/file.bin")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    folder = Path(StorageManager.get_local_copy(str(archive)))
    assert (folder / "inner" / "file.bin").read_bytes() == b"payload"
    assert home / "cache" in folder.parents
    assert StorageManager.get_local_copy(str(archive), extract_archive=False) == str(archive)


def test_unsafe_archive_is_refused(bucket: str, home: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{bucket}/evil.zip", zip_bytes({"../../escape.txt": "x"}))
    with pytest.raises(ClearnbError, match=r"escape\.txt"):
        StorageManager.get_local_copy(f"{bucket}/evil.zip")
    assert not list(home.rglob("escape.txt"))


def test_upload_file_to_local_folder_and_file(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    target_folder = tmp_path / "remote"
    target_folder.mkdir()

    uploaded = StorageManager.upload_file(str(source), str(target_folder))
    assert uploaded == str(target_folder / "model.bin")
    assert Path(uploaded).read_bytes() == b"weights"

    url = f"file://{tmp_path}/remote/nested/renamed.bin"
    uploaded = StorageManager.upload_file(str(source), url)
    assert uploaded == str(tmp_path / "remote" / "nested" / "renamed.bin")
    assert Path(uploaded).read_bytes() == b"weights"

    uploaded = StorageManager.upload_file(str(source), f"{tmp_path}/new-folder/")
    assert uploaded == str(tmp_path / "new-folder" / "model.bin")
    assert not [p for p in tmp_path.rglob(".*")]


def test_upload_file_to_memory(tmp_path: Path, bucket: str) -> None:
    source = tmp_path / "table.csv"
    source.write_text("a,b\n")
    url = f"{bucket}/uploads/table.csv"
    assert StorageManager.upload_file(str(source), url) == url
    fs = fsspec.filesystem("memory")
    assert fs.cat_file(url) == b"a,b\n"
    assert fs.ls(f"{bucket}/uploads", detail=False) == [
        f"/{bucket[len('memory://') :]}/uploads/table.csv"
    ]

    assert StorageManager.upload_file(str(source), f"{bucket}/dir/") == f"{bucket}/dir/table.csv"
    assert StorageManager.exists_file(url)
    assert not StorageManager.exists_file(f"{bucket}/uploads/other.csv")
    assert not StorageManager.exists_file(f"{bucket}/uploads")
    assert StorageManager.list(bucket) == ["dir/table.csv", "uploads/table.csv"]
    assert StorageManager.list(f"{bucket}/uploads", return_full_path=True) == [url]


def test_upload_missing_local_file(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(RemoteFileNotFoundError, match="no such local file"):
        StorageManager.upload_file(str(tmp_path / "nope"), f"{bucket}/x")


def test_download_file_keeps_the_path_below_the_bucket(tmp_path: Path, bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    url = f"{bucket}/a/b/c.txt"
    fs.pipe_file(url, b"one")
    target = StorageManager.download_file(url, str(tmp_path / "dl"))
    assert target == str(tmp_path / "dl" / "a" / "b" / "c.txt")
    assert Path(target).read_bytes() == b"one"

    fs.pipe_file(url, b"two")
    assert Path(StorageManager.download_file(url, str(tmp_path / "dl"))).read_bytes() == b"one"
    StorageManager.download_file(url, str(tmp_path / "dl"), overwrite=True)
    assert Path(target).read_bytes() == b"two"

    cached = StorageManager.download_file(url)
    assert Path(cached).read_bytes() == b"two"

    with pytest.raises(RemoteFileNotFoundError):
        StorageManager.download_file(f"{bucket}/missing.txt", str(tmp_path / "dl"))


def test_list_and_exists_on_local_folders(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "x.txt").write_text("x")
    (tmp_path / "d" / "sub" / "y.txt").write_text("y")
    assert StorageManager.list(str(tmp_path / "d")) == ["sub/y.txt", "x.txt"]
    assert StorageManager.list(str(tmp_path / "d"), return_full_path=True) == [
        str(tmp_path / "d" / "sub" / "y.txt"),
        str(tmp_path / "d" / "x.txt"),
    ]
    assert StorageManager.exists_file(str(tmp_path / "d" / "x.txt"))
    assert not StorageManager.exists_file(str(tmp_path / "d"))
    with pytest.raises(RemoteFileNotFoundError):
        StorageManager.list(str(tmp_path / "absent"))


def test_missing_http_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.core

    def no_driver(url: str, **kwargs: Any) -> Any:
        raise ImportError("HTTPFileSystem requires 'requests' and 'aiohttp' to be installed")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_driver)
    with pytest.raises(MissingDependencyError, match=r"pip install 'clearnb\[http\]'"):
        StorageManager.get_local_copy("http://127.0.0.1:1/x.txt")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_http_download(http_root: tuple[str, Path], home: Path) -> None:
    require_module("aiohttp", extra="http")
    base, root = http_root
    (root / "data.txt").write_text("served over http")
    (root / "pack.zip").write_bytes(zip_bytes({"inside.txt": "zipped"}))

    local = Path(StorageManager.get_local_copy(f"{base}/data.txt"))
    assert local.read_text() == "served over http"
    assert home / "cache" / "storage" / "global" == local.parent

    folder = Path(StorageManager.get_local_copy(f"{base}/pack.zip"))
    assert (folder / "inside.txt").read_text() == "zipped"

    assert StorageManager.exists_file(f"{base}/data.txt")
    assert not StorageManager.exists_file(f"{base}/missing.txt")
    with pytest.raises(RemoteFileNotFoundError, match=r"missing\.txt"):
        StorageManager.get_local_copy(f"{base}/missing.txt")


def test_unreachable_http_host(home: Path) -> None:
    require_module("aiohttp", extra="http")
    url = f"http://127.0.0.1:{_free_port()}/data.txt"
    with pytest.raises(RemoteStorageError) as caught:
        StorageManager.get_local_copy(url)
    assert url in str(caught.value)
    assert "reachable" in str(caught.value)


# -- folders -----------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    """A small nested folder: three .json files at three depths, and two others."""
    files = {
        "a.json": '{"a": 1}',
        "b.txt": "bee",
        "sub/c.json": '{"c": 3}',
        "sub/e.csv": "x,y\n",
        "sub/deeper/d.json": '{"d": 4}',
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def tree_of(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


JSON_FILES = {"a.json": '{"a": 1}', "sub/c.json": '{"c": 3}', "sub/deeper/d.json": '{"d": 4}'}


def test_a_folder_goes_to_a_file_url_and_back_with_a_wildcard(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "tree")
    url = f"file://{tmp_path}/remote/data"
    assert StorageManager.upload_folder(str(source), url, match_wildcard="*.json") == url
    assert tree_of(tmp_path / "remote" / "data") == JSON_FILES
    assert not [p for p in (tmp_path / "remote").rglob(".*")], "no temporary files left"

    StorageManager.upload_folder(str(source), f"{tmp_path}/everything/")
    assert tree_of(tmp_path / "everything") == tree_of(source)

    back = StorageManager.download_folder(
        f"{tmp_path}/everything", str(tmp_path / "back"), match_wildcard="*.json"
    )
    assert back == str(tmp_path / "back")
    assert tree_of(tmp_path / "back") == JSON_FILES
    only_sub = tmp_path / "only-sub"
    StorageManager.download_folder(url, str(only_sub), match_wildcard="sub/*")
    assert tree_of(only_sub) == {"sub/c.json": '{"c": 3}', "sub/deeper/d.json": '{"d": 4}'}


def test_a_folder_goes_to_memory_and_back(tmp_path: Path, bucket: str) -> None:
    source = make_tree(tmp_path / "tree")
    url = f"{bucket}/runs/tree"
    assert StorageManager.upload_folder(str(source), url, match_wildcard="*.json") == url
    assert StorageManager.list(url) == sorted(JSON_FILES)
    fs = fsspec.filesystem("memory")
    assert fs.cat_file(f"{url}/sub/deeper/d.json") == b'{"d": 4}'
    assert not [p for p in fs.find(bucket) if "/." in p], "no temporary names left"

    StorageManager.upload_folder(str(source), f"{bucket}/all/")
    assert StorageManager.list(f"{bucket}/all") == sorted(tree_of(source))

    target = tmp_path / "dl"
    folder = StorageManager.download_folder(
        f"{bucket}/all", str(target), match_wildcard="*.json", max_workers=2
    )
    assert folder == str(target)
    assert tree_of(target) == {f"all/{name}": text for name, text in JSON_FILES.items()}, (
        "the path below the bucket is kept, as download_file keeps it"
    )


def test_download_folder_keeps_files_unless_overwrite(tmp_path: Path, bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{bucket}/d/x.txt", b"one")
    target = tmp_path / "dl"
    StorageManager.download_folder(f"{bucket}/d", str(target))
    fs.pipe_file(f"{bucket}/d/x.txt", b"two")
    StorageManager.download_folder(f"{bucket}/d", str(target))
    assert (target / "d" / "x.txt").read_text() == "one"
    StorageManager.download_folder(f"{bucket}/d", str(target), overwrite=True)
    assert (target / "d" / "x.txt").read_text() == "two"


def test_download_folder_defaults_to_the_cache(home: Path, bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{bucket}/d/x.txt", b"cached")
    folder = Path(StorageManager.download_folder(f"{bucket}/d"))
    assert folder == home / "cache" / "storage" / "global"
    assert (folder / "d" / "x.txt").read_bytes() == b"cached"


def test_an_empty_remote_file_is_an_error_unless_told(tmp_path: Path, bucket: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{bucket}/d/full.txt", b"data")
    fs.pipe_file(f"{bucket}/d/empty.txt", b"")
    target = tmp_path / "dl"
    with pytest.raises(RemoteStorageError, match=r"1 of 2 files") as caught:
        StorageManager.download_folder(f"{bucket}/d", str(target))
    assert caught.value.failed == ["empty.txt"]
    assert "skip_zero_size_check" in str(caught.value)
    assert tree_of(target) == {"d/full.txt": "data"}, "the other file was written"
    StorageManager.download_folder(f"{bucket}/d", str(target), skip_zero_size_check=True)
    assert tree_of(target) == {"d/empty.txt": "", "d/full.txt": "data"}
    with pytest.raises(RemoteStorageError, match="empty file"):
        StorageManager.download_file(f"{bucket}/d/empty.txt", str(tmp_path / "one"))
    assert (
        StorageManager.download_file(
            f"{bucket}/d/empty.txt", str(tmp_path / "one"), silence_errors=True
        )
        is None
    )


def test_missing_folders_are_errors_naming_them(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(RemoteFileNotFoundError, match="no such local folder"):
        StorageManager.upload_folder(str(tmp_path / "absent"), f"{bucket}/x")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(RemoteFileNotFoundError, match="no such local folder"):
        StorageManager.upload_folder(str(tmp_path / "a-file"), f"{bucket}/x")
    for url in (f"{bucket}/absent", str(tmp_path / "absent")):
        with pytest.raises(RemoteFileNotFoundError, match="absent"):
            StorageManager.download_folder(url, str(tmp_path / "dl"))
        quiet = StorageManager.download_folder(url, str(tmp_path / "dl"), silence_errors=True)
        assert quiet == str(tmp_path / "dl") and tree_of(tmp_path / "dl") == {}
    with pytest.raises(ValueError, match="max_workers"):
        StorageManager.download_folder(f"{bucket}/x", str(tmp_path / "dl"), max_workers=0)


def test_files_that_cannot_be_uploaded_are_named_after_the_rest(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "tree")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "sub").write_text("a file where the upload needs a folder")
    with pytest.raises(RemoteStorageError) as caught:
        StorageManager.upload_folder(str(source), str(remote), retries=0)
    assert caught.value.failed == ["sub/c.json", "sub/deeper/d.json", "sub/e.csv"]
    assert "3 of 5 files" in str(caught.value) and "sub/c.json" in str(caught.value)
    assert tree_of(remote) == {
        "a.json": '{"a": 1}',
        "b.txt": "bee",
        "sub": "a file where the upload needs a folder",
    }


def test_not_waiting_for_an_upload_is_named_in_a_warning(tmp_path: Path, bucket: str) -> None:
    from clearnb.errors import CompatibilityWarning

    source = tmp_path / "f.txt"
    source.write_text("x")
    with pytest.warns(CompatibilityWarning, match=r"wait_for_upload=False"):
        url = StorageManager.upload_file(str(source), f"{bucket}/f.txt", wait_for_upload=False)
    assert fsspec.filesystem("memory").cat_file(url) == b"x", "uploaded before returning"

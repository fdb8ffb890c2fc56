"""The folders and files clearnb creates are readable by their owner only, whatever the
umask: the home, the store's folder and SQLite files, the artifact folders and files, and
the cache of downloaded artifacts."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clearnb.artifacts import ArtifactStorage
from clearnb.backend import Backend
from clearnb.config import Config, make_private_folder
from clearnb.store import TaskRecord

TASK = "0123456789abcdef0123456789abcdef"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_home_store_and_artifacts_are_private(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "deep" / "home"
    backend = Backend.open(Config.at(home))
    try:
        task = backend.store.create_task(TaskRecord(project="p", name="n"))
        record = backend.artifacts.save(task.id, "weights", np.arange(10))
        backend.store.put_artifact(record)
        assert backend.artifacts.load(record).tolist() == list(range(10))
        database = home / "clearnb.db"
        assert mode(tmp_path / "deep") == 0o700, "missing parents are created private too"
        assert mode(home) == 0o700
        assert mode(database) == 0o600
        for suffix in ("-wal", "-shm"):
            assert mode(database.with_name(database.name + suffix)) == 0o600
        artifact = Path(record.url)
        assert mode(artifact) == 0o600
        for folder in (artifact.parent, artifact.parent.parent, home / "artifacts"):
            assert mode(folder) == 0o700, folder
        cache = home / "cache"
        assert mode(cache) == 0o700 and mode(cache / "artifacts") == 0o700
    finally:
        backend.close()


def test_downloaded_copies_are_private(tmp_path: Path, umask: int) -> None:
    storage = ArtifactStorage(f"memory://clearnb-private-{uuid.uuid4().hex}", tmp_path / "cache")
    record = storage.save(TASK, "values", np.ones(3))
    local = storage.local_copy(record)
    assert mode(local) == 0o600
    folder = local.parent
    while folder != tmp_path:
        assert mode(folder) == 0o700, folder
        folder = folder.parent


def test_existing_folders_keep_their_permissions(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    Backend.open(Config.at(home)).close()
    assert mode(home) == 0o755, "a folder the user made is left as it is"
    assert mode(home / "clearnb.db") == 0o600
    assert make_private_folder(home) == []


def test_a_group_writable_artifact_root_is_shared_with_the_group(
    tmp_path: Path, umask: int
) -> None:
    root = tmp_path / "team-artifacts"
    root.mkdir()
    root.chmod(0o2770)  # a team's shared folder
    storage = ArtifactStorage(root, tmp_path / "cache")
    record = storage.save(TASK, "table", {"a": 1})
    path = Path(record.url)
    assert mode(path) == 0o660
    assert mode(path.parent) == 0o2770 and mode(path.parent.parent) == 0o2770
    assert storage.load(record) == {"a": 1}


def _not_private(home: Path) -> list[str]:
    """Every folder or file under ``home`` that its group or others may use."""
    found = []
    for folder, names, files in os.walk(home):
        for name in [*names, *files]:
            path = Path(folder, name)
            if path.is_symlink():
                continue
            if mode(path) & 0o077:
                found.append(f"{oct(mode(path))} {path.relative_to(home)}")
    return found


def _make_folder() -> list[int]:
    return [1, 2, 3]


@pytest.mark.timeout(240)
def test_everything_a_pipeline_run_creates_is_private_under_umask_000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs (executed notebooks, converted scripts), generated function notebooks and
    modules, unpacked folder artifacts and archives in the cache: nothing clearnb writes
    under its home follows the umask."""
    import zipfile

    from clearnb import PipelineController, StorageManager, Task
    from tests.helpers import notebook

    home = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    previous = os.umask(0)
    try:
        pipe = PipelineController(name="private", project="tests", max_workers=1)
        pipe.add_step("params", notebook=notebook("params"), parameter_override={"count": 2})
        pipe.add_function_step("numbers", _make_folder, function_return=["numbers"])
        pipe.start_locally(run_pipeline_steps_locally=True)
        assert pipe.status == "completed", pipe.status

        source = tmp_path / "data"
        (source / "inner").mkdir(parents=True)
        (source / "inner" / "values.txt").write_text("1 2 3")
        task = Task.create(project_name="tests", task_name="folder", notebook=notebook("params"))
        task.upload_artifact("folder", source)
        unpacked = Path(task.artifacts["folder"].get_local_copy())
        assert (unpacked / "inner" / "values.txt").read_text() == "1 2 3"

        archive = tmp_path / "bundle.zip"
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr("deep/file.txt", "zipped")
        extracted = Path(StorageManager.get_local_copy(str(archive), extract_archive=True))
        assert (extracted / "deep" / "file.txt").read_text() == "zipped"
    finally:
        os.umask(previous)
    assert (home / "runs").is_dir() and (home / "cache").is_dir()
    assert _not_private(home) == []

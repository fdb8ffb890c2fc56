"""A store file that is damaged, empty or read-only is refused with what to do, and left
as it was; a new store file is never left empty (so an empty one is always damage)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from clearnb.cli import main
from clearnb.errors import StoreError
from clearnb.store import open_store
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(120)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty (0 bytes)"),
        (b"garbage, not a database at all" * 10, "is not a SQLite database (it starts with"),
        (b"SQLite format 3\x00" + b"\xff" * 200, "is damaged"),
    ],
    ids=["empty", "garbage", "broken-pages"],
)
def test_a_damaged_store_file_is_refused_and_left_as_it_was(
    tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "clearnb.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        open_store(sqlite_url(path))
    message = str(info.value)
    assert said in message, message
    assert "Restore it from a backup" in message
    assert path.read_bytes() == content, "a refused store file is not touched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clearnb.db"]

    result = CliRunner().invoke(main, ["task", "ls"], env={"CLEARNB_HOME": str(tmp_path)})
    assert result.exit_code == 1, result.output
    assert said in result.output and "Traceback" not in result.output
    assert "Usage:" not in result.output
    assert path.read_bytes() == content


def test_a_read_only_store_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "clearnb.db"
    open_store(sqlite_url(path)).close()
    before = path.read_bytes()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    result = CliRunner().invoke(
        main,
        ["task", "run", str(notebook("params"))],
        env={"CLEARNB_HOME": str(tmp_path), "CLEARNB_STORE_URL": read_only},
    )
    assert result.exit_code == 1, result.output
    assert "is read-only" in result.output and "Make the file and its folder writable" in (
        result.output
    )
    assert "Usage:" not in result.output and "Traceback" not in result.output
    assert path.read_bytes() == before


def _open_and_close(url: str) -> None:
    open_store(url).close()


def test_a_new_store_opened_by_several_processes_at_once_is_never_empty(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "new" / "clearnb.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_open_and_close, args=(url,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    path = tmp_path / "new" / "clearnb.db"
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".new")] == []
    with open_store(url) as store:
        assert store.find_tasks() == []
    assert os.stat(path).st_mode & 0o077 == 0


def test_a_task_is_found_by_a_unique_start_of_its_id(tmp_path: Path) -> None:
    from clearnb.errors import TaskNotFoundError
    from clearnb.store.records import TaskRecord

    store = open_store(f"sqlite:///{tmp_path / 'ids.db'}")
    first = store.create_task(TaskRecord(project="p", name="a", id="abcd1234ef"))
    store.create_task(TaskRecord(project="p", name="b", id="abcd9999ef"))
    store.create_task(TaskRecord(project="p", name="c", id="ab_%"))
    assert store.resolve_task_id("abcd1") == first.id
    assert store.resolve_task_id(" abcd1234ef ") == first.id
    assert store.resolve_task_id("ab_%") == "ab_%"  # a full id, even shorter than a prefix
    with pytest.raises(TaskNotFoundError, match=r"several task ids .*abcd1234ef, abcd9999ef"):
        store.resolve_task_id("abcd")
    with pytest.raises(TaskNotFoundError, match="first 4 characters"):
        store.resolve_task_id("ab")
    with pytest.raises(TaskNotFoundError, match="No task with id 'zzzz'"):
        store.resolve_task_id("zzzz")
    with pytest.raises(TaskNotFoundError, match="No task with id 'ab_%x'"):
        store.resolve_task_id("ab_%x")  # % and _ are plain characters, not patterns

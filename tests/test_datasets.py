"""Dataset: versions of files as tasks of the store, their files stored once by content."""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from click.testing import CliRunner

from clearnb import Dataset, PipelineController, Task
from clearnb.backend import Backend
from clearnb.cli import main as cli
from clearnb.compat import UNUSED_KEY
from clearnb.errors import CompatibilityWarning, DatasetError, DatasetNotFoundError
from clearnb.store.records import TaskRecord
from tests.helpers import NOTEBOOKS, child_kernel_pids


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(folder))
    for name in ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def digests(folder: str | Path) -> dict[str, str]:
    """Every file below ``folder`` by relative path, with the sha256 of its bytes."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def stored_contents(home: Path) -> list[Path]:
    """The files of dataset contents in the artifact storage."""
    return sorted(p for p in (home / "artifacts" / "datasets").rglob("*") if p.is_file())


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    write(folder / "top.csv", "a,b\n1,2\n")
    write(folder / "nested" / "inner.csv", "c\n3\n")
    write(folder / "nested" / "deeper" / "deep.csv", "d\n4\n")
    write(folder / "nested" / "skip.txt", "not a csv")
    return folder


def test_create_add_finalize_and_get_back_the_same_bytes(home: Path, source: Path) -> None:
    dataset = Dataset.create(dataset_project="data", dataset_name="tables")
    assert dataset.add_files(source, wildcard="*.csv") == 3
    assert dataset.list_files() == ["nested/deeper/deep.csv", "nested/inner.csv", "top.csv"]
    assert dataset.is_dirty() and not dataset.is_final()
    dataset.tags = ["raw"]
    dataset.add_tags("csv")
    dataset.version = "2.0"
    assert (dataset.tags, dataset.version) == (["raw", "csv"], "2.0")
    dataset.get_logger().report_table("sample", "head", table_plot=[["a", "b"], [1, 2]])
    assert dataset.finalize(auto_upload=True)
    assert dataset.is_final() and not dataset.is_dirty()

    by_id = Dataset.get(dataset_id=dataset.id)
    by_name = Dataset.get(dataset_project="data", dataset_name="tables")
    assert by_id.id == by_name.id == dataset.id
    assert (by_id.project, by_id.name, by_id.version) == ("data", "tables", "2.0")
    assert by_id.tags == ["raw", "csv"]
    expected = {k: v for k, v in digests(source).items() if k.endswith(".csv")}
    folder = by_name.get_local_copy()
    assert digests(folder) == expected
    assert {e.relative_path: e.hash for e in by_id.file_entries} == expected
    assert by_id.file_entries_dict["top.csv"].size == len("a,b\n1,2\n")
    assert by_id.get_local_copy() == folder  # built once, then reused
    assert not os.access(Path(folder) / "top.csv", os.W_OK) or os.geteuid() == 0

    record = Backend.for_config().store.get_task(dataset.id)
    assert record.task_type == "data_processing" and record.status == "completed"
    assert record.runtime["dataset"]["final"] and record.runtime["dataset"]["file_count"] == 3
    reports = Backend.for_config().store.get_reports(dataset.id, kind="table")
    assert {r.title for r in reports} >= {"sample", "Dataset Content"}
    listed = CliRunner().invoke(cli, ["task", "ls"])
    assert listed.exit_code == 0 and dataset.id[:8] in listed.output


def test_a_child_version_is_its_parent_merged_with_its_changes(home: Path, source: Path) -> None:
    parent = Dataset.create(dataset_project="data", dataset_name="tables")
    parent.add_files(source)
    parent.finalize(auto_upload=True)
    assert len(stored_contents(home)) == 4

    child = Dataset.create(
        dataset_project="data", dataset_name="tables", parent_datasets=[parent.id]
    )
    assert child.list_files() == parent.list_files()
    write(source / "top.csv", "a,b\n1,2\n5,6\n")  # modified
    assert child.add_files(source) == 0  # nothing new: one changed, three unchanged
    assert child.remove_files("nested/skip.txt") == 1
    assert child.list_modified_files() == ["top.csv"]
    assert child.list_removed_files() == ["nested/skip.txt"]
    assert child.list_added_files() == []
    assert child.list_files(dataset_id=child.id) == ["top.csv"]
    child.finalize(auto_upload=True)

    assert len(stored_contents(home)) == 5  # only the changed file is new
    merged = digests(Dataset.get(dataset_id=child.id).get_local_copy())
    assert merged == {k: v for k, v in digests(source).items() if k != "nested/skip.txt"}
    assert "nested/skip.txt" in digests(parent.get_local_copy())
    assert child.version == "1.0.1"
    assert child.get_dependency_graph() == {parent.id: [], child.id: [parent.id]}
    assert Dataset.get(dataset_project="data", dataset_name="tables").id == child.id
    assert Dataset.get(dataset_name="tables", dataset_version="1.0.0").id == parent.id


def test_wildcards_and_paths_follow_clearml(home: Path, source: Path, tmp_path: Path) -> None:
    dataset = Dataset.create(dataset_project="p", dataset_name="paths")
    assert dataset.add_files(source, wildcard="*.csv", recursive=False) == 1
    assert dataset.list_files() == ["top.csv"]
    nested = source / "nested"
    assert dataset.add_files(nested, local_base_folder=source, dataset_path="/copy") == 3
    assert dataset.list_files("copy/*.csv") == [
        "copy/nested/deeper/deep.csv",
        "copy/nested/inner.csv",
    ]
    assert dataset.list_files("copy/nested/*.csv", recursive=False) == ["copy/nested/inner.csv"]
    assert dataset.remove_files("*.txt", recursive=False) == 0
    assert dataset.remove_files("*.txt") == 1
    with pytest.raises(DatasetError, match="not inside local_base_folder"):
        dataset.add_files(source / "top.csv", local_base_folder=tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="leads outside the dataset"):
        dataset.add_files(source / "top.csv", dataset_path="../up")
    assert dataset.list_files() == [
        "copy/nested/deeper/deep.csv",
        "copy/nested/inner.csv",
        "top.csv",
    ]


def test_a_finalized_version_refuses_changes_and_keeps_its_files(home: Path, source: Path) -> None:
    dataset = Dataset.create(dataset_project="data", dataset_name="frozen")
    dataset.add_files(source / "top.csv")
    dataset.finalize(auto_upload=True)
    before = Backend.for_config().store.get_artifacts(dataset.id)["dataset_state"].hash
    again = Dataset.get(dataset_id=dataset.id)
    for change in (
        lambda: again.add_files(source),
        lambda: again.remove_files("top.csv"),
        lambda: again.upload(),
        lambda: again.finalize(),
    ):
        with pytest.raises(DatasetError, match=r"finalized and read-only.*parent_datasets"):
            change()
    assert Backend.for_config().store.get_artifacts(dataset.id)["dataset_state"].hash == before
    assert digests(again.get_local_copy()) == {"top.csv": digests(source)["top.csv"]}


def test_bad_input_gets_errors_that_say_what_to_do(home: Path, source: Path) -> None:
    with pytest.raises(DatasetError, match=r"no file or folder at .*missing"):
        Dataset.create(dataset_project="p", dataset_name="n").add_files(source / "missing")
    with pytest.raises(DatasetNotFoundError, match=r"No dataset has id 'nope'.*list_datasets"):
        Dataset.get(dataset_id="nope")
    plain = Backend.for_config().store.create_task(TaskRecord(project="p", name="plain"))
    with pytest.raises(DatasetError, match="is not a dataset"):
        Dataset.get(dataset_id=plain.id)
    with pytest.raises(DatasetNotFoundError, match="dataset_project='p', dataset_name='other'"):
        Dataset.get(dataset_project="p", dataset_name="other")
    with pytest.raises(DatasetError, match="needs dataset_id"):
        Dataset.get()
    with pytest.raises(DatasetError, match="no such arguments"):
        Dataset.get(dataset_id="x", datset_name="typo")

    draft = Dataset.create(dataset_project="p", dataset_name="draft")
    draft.add_files(source / "top.csv")
    with pytest.raises(DatasetError, match="not finalized; call finalize"):
        Dataset.create(dataset_project="p", dataset_name="kid", parent_datasets=[draft])
    with pytest.raises(DatasetError, match="not finalized yet"):
        draft.get_local_copy()
    with pytest.raises(DatasetError, match="not uploaded yet; call upload"):
        draft.finalize()
    assert not draft.finalize(raise_on_error=False) and not draft.is_final()
    assert stored_contents(home) == []
    with pytest.raises(DatasetError, match="no current task"):
        Dataset.create(use_current_task=True)
    with pytest.raises(DatasetError, match="needs dataset_project"):
        Dataset.create(dataset_name="alone")


def test_a_damaged_stored_file_is_named_and_nothing_half_built_is_kept(
    home: Path, source: Path
) -> None:
    dataset = Dataset.create(dataset_project="p", dataset_name="damaged")
    dataset.add_files(source)
    dataset.finalize(auto_upload=True)
    blob = Path(dataset.file_entries_dict["nested/inner.csv"].url or "")
    os.chmod(blob, 0o600)
    blob.write_text("c\n9\n")
    with pytest.raises(DatasetError, match=r"nested/inner.csv: .* is altered"):
        dataset.get_local_copy()
    assert not (home / "cache" / "datasets" / dataset.id).exists()
    partial = Path(dataset.get_local_copy(raise_on_error=False))
    assert sorted(digests(partial)) == ["nested/deeper/deep.csv", "nested/skip.txt", "top.csv"]
    assert dataset.verify_dataset_hash(str(partial)) == ["nested/inner.csv"]


def test_the_newest_version_wins_and_listing_filters(home: Path, source: Path) -> None:
    made = []
    for version in ("1.2.0", "1.10.0", "1.9.0"):
        dataset = Dataset.create(
            dataset_project="proj/sub", dataset_name="v", dataset_version=version
        )
        dataset.add_files(source / "top.csv")
        dataset.finalize(auto_upload=True)
        made.append(dataset)
    open_one = Dataset.create(dataset_project="proj", dataset_name="w", dataset_tags=["raw"])
    assert Dataset.get(dataset_name="v").version == "1.10.0"
    assert Dataset.get(dataset_tags=["raw"]).id == open_one.id
    with pytest.raises(DatasetNotFoundError, match="only_completed=True"):
        Dataset.get(dataset_tags=["raw"], only_completed=True)
    assert open_one.version == "1.0.0"
    names = {(row["name"], row["version"]) for row in Dataset.list_datasets("proj")}
    assert names == {("v", "1.2.0"), ("v", "1.10.0"), ("v", "1.9.0")}
    every = Dataset.list_datasets(only_completed=False, recursive_project_search=False)
    assert {row["id"] for row in every} == {d.id for d in [*made, open_one]}
    assert Dataset.list_datasets("proj", recursive_project_search=False) == []
    assert [r["id"] for r in Dataset.list_datasets(partial_name="^w", only_completed=False)] == [
        open_one.id
    ]
    assert Dataset.list_datasets(tags=["raw"], only_completed=False)[0]["tags"] == ["raw"]
    made[0].publish()
    assert Dataset.get(dataset_name="v", only_published=True).id == made[0].id
    assert Dataset.get(dataset_name="v", auto_create=False, writable_copy=True).list_files() == [
        "top.csv"
    ]


def test_arguments_without_effect_are_recorded_and_named_once(home: Path, source: Path) -> None:
    dataset = Dataset.create(dataset_project="p", dataset_name="compat")
    dataset.add_files(source / "top.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset.upload(compression="lzma", show_progress=False)
        dataset.upload(show_progress=False)
    compat = [w for w in caught if issubclass(w.category, CompatibilityWarning)]
    assert len(compat) == 1 and "compression='lzma'" in str(compat[0].message)
    assert compat[0].filename == __file__
    runtime = Backend.for_config().store.get_task(dataset.id).runtime
    assert runtime[UNUSED_KEY]["Dataset.upload"] == {"compression": "lzma"}
    dataset.finalize()
    with pytest.warns(CompatibilityWarning, match="shallow_search=True") as record:
        Dataset.get(dataset_id=dataset.id, shallow_search=True)
    assert len(record) == 1


def test_parts_chunks_and_copies(home: Path, source: Path, tmp_path: Path) -> None:
    dataset = Dataset.create(dataset_project="p", dataset_name="parts")
    dataset.add_files(source)
    dataset.upload(chunk_size=1, show_progress=False)  # well under 1 MB: one chunk
    dataset.finalize()
    assert dataset.get_num_chunks() == 1
    child = Dataset.create(dataset_project="p", dataset_name="parts", parent_datasets=[dataset])
    child.add_files(write(tmp_path / "more" / "extra.csv", "e\n5\n"), dataset_path="more")
    child.finalize(auto_upload=True)
    assert child.get_num_chunks() == 2 and child.get_num_chunks(include_parents=False) == 1
    first = digests(child.get_local_copy(part=0))
    second = digests(child.get_local_copy(part=1))
    assert sorted(first) == dataset.list_files() and sorted(second) == ["more/extra.csv"]
    assert digests(child.get_local_copy(part=0, num_parts=1)) == {**first, **second}
    with pytest.raises(DatasetError, match="part=2 is not one of the 2 parts"):
        child.get_local_copy(part=2)

    links = Path(child.get_local_copy(use_soft_links=True))
    assert (links / "top.csv").is_symlink() and digests(links) == {**first, **second}
    target = tmp_path / "work"
    assert child.get_mutable_local_copy(target) == str(target)
    (target / "top.csv").write_text("changed locally")  # a writable, private copy
    assert digests(child.get_local_copy())["top.csv"] == first["top.csv"]
    with pytest.raises(DatasetError, match="already holds files; pass overwrite=True"):
        child.get_mutable_local_copy(target)
    child.get_mutable_local_copy(target, overwrite=True)
    assert digests(target) == {**first, **second}


def test_delete_keeps_what_other_versions_still_list(home: Path, source: Path) -> None:
    parent = Dataset.create(dataset_project="p", dataset_name="gone")
    parent.add_files(source)
    parent.finalize(auto_upload=True)
    child = Dataset.create(dataset_project="p", dataset_name="gone", parent_datasets=[parent])
    write(source / "top.csv", "rewritten\n")
    child.add_files(source / "top.csv")
    child.finalize(auto_upload=True)
    assert len(stored_contents(home)) == 5
    with pytest.raises(DatasetError, match=rf"descend from \['{parent.id}'\].*force=True"):
        Dataset.delete(dataset_id=parent.id)
    with pytest.raises(DatasetError, match="2 versions match"):
        Dataset.delete(dataset_project="p", dataset_name="gone")
    with pytest.raises(DatasetError, match="pass force=True as well"):
        Dataset.delete(dataset_project="p", dataset_name="gone", entire_dataset=True)

    Dataset.delete(dataset_id=parent.id, force=True)
    with pytest.raises(DatasetNotFoundError):
        Dataset.get(dataset_id=parent.id)
    assert len(stored_contents(home)) == 4  # only the old top.csv was the parent's alone
    assert digests(Dataset.get(dataset_id=child.id).get_local_copy()) == digests(source)
    Dataset.delete(dataset_project="p", dataset_name="gone", dataset_version="1.0.1")
    assert stored_contents(home) == [] and Dataset.list_datasets(only_completed=False) == []
    with pytest.raises(DatasetNotFoundError):
        Dataset.delete(dataset_id=child.id)


@pytest.fixture
def bucket() -> Iterator[str]:
    url = f"memory://datasets-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_files_can_live_at_another_url(home: Path, source: Path, bucket: str) -> None:
    dataset = Dataset.create(dataset_project="p", dataset_name="remote", output_uri=bucket)
    dataset.add_files(source, wildcard=["*.csv", "*.txt"])
    dataset.finalize(auto_upload=True)
    assert dataset.get_default_storage() == bucket
    assert len(fsspec.filesystem("memory").find(bucket)) == 4
    assert stored_contents(home) == []
    assert digests(Dataset.get(dataset_id=dataset.id).get_local_copy()) == digests(source)


STEPS = NOTEBOOKS / "datasets"


@pytest.mark.timeout(240)
def test_a_step_makes_a_dataset_and_the_next_step_reads_it(home: Path) -> None:
    pipe = PipelineController(name="dataset flow", project="datasets")
    pipe.add_step("make", notebook=str(STEPS / "make_dataset.ipynb"))
    pipe.add_step(
        "read",
        notebook=str(STEPS / "read_dataset.ipynb"),
        parameter_override={"General/dataset_id": "${make.id}"},
    )
    pipe.start()
    pipe.wait()
    pipe.stop()  # shuts the kernel pool down
    dag = pipe.get_pipeline_dag()
    assert pipe.is_successful(), {name: node.error for name, node in dag.items()}

    made = Dataset.get(dataset_id=dag["make"].executed)
    record = Backend.for_config().store.get_task(made.id)
    assert record.task_type == "data_processing" and record.status == "completed"
    assert made.is_final() and made.list_files() == ["notes.txt", "tables/numbers.csv"]
    numbers = "\n".join(str(i) for i in range(4))
    expected = {
        "notes.txt": hashlib.sha256(b"4 rows").hexdigest(),
        "tables/numbers.csv": hashlib.sha256(numbers.encode()).hexdigest(),
    }
    reader = Task.get_task(task_id=dag["read"].executed)
    seen = reader.artifacts["seen"].get()
    assert seen["files"] == expected == digests(made.get_local_copy())
    assert (seen["project"], seen["name"]) == (made.project, made.name)
    assert reader.get_parameter("Datasets/source") == made.id
    assert reader.runtime["datasets"] == [made.id]

    child = Dataset.get(dataset_id=seen["child"])
    assert Backend.for_config().store.get_task(child.id).parent == reader.id
    assert child.get_dependency_graph()[child.id] == [made.id]
    assert sorted(digests(child.get_local_copy())) == ["reports/summary.txt", "tables/numbers.csv"]
    assert child_kernel_pids() == []

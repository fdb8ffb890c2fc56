"""Dataset versions in the metadata store: their tasks, marks and file lists, and finding them.

A version's task carries ``runtime["dataset"]`` (:data:`MARK`: version, parents, whether it
is final, counts) and its file list as the JSON artifact :data:`STATE_ARTIFACT`. The list
is written before the mark that counts it, so a mark never speaks of files not listed.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clearnb.artifacts.blobs import BlobStore
from clearnb.artifacts.storage import DATASET_STATE
from clearnb.backend import Backend
from clearnb.compat import UNUSED_KEY, warn_unused
from clearnb.datasetfiles import DatasetState, FileEntry, compare, newest_version
from clearnb.errors import DatasetError, DatasetNotFoundError, TaskNotFoundError
from clearnb.store.records import TaskRecord
from clearnb.task import Task
from clearnb.tasktypes import TaskTypes

MARK = "dataset"
"""Key of a task's ``runtime`` saying the task is a dataset version, with its facts."""
STATE_ARTIFACT = DATASET_STATE
"""Name of the artifact holding a version's file list."""
ALIAS_SECTION = "Datasets"
"""Parameter section where ``Dataset.get(alias=...)`` records the dataset it got (ClearML's)."""
USED_KEY = "datasets"
"""Key of a task's ``runtime`` listing the datasets it got (ClearML's)."""


@dataclass(frozen=True)
class Found:
    """A dataset version found by a search: its id and version."""

    id: str
    version: str | None


def mark_of(record: TaskRecord) -> dict[str, Any] | None:
    """The dataset mark of a task, or None for a task that is no dataset."""
    mark = record.runtime.get(MARK)
    return dict(mark) if isinstance(mark, Mapping) else None


def record_unused(backend: Backend, task_id: str, where: str, arguments: Mapping[str, Any]) -> None:
    """Keep ``arguments`` of ``where`` that had no effect in the task's runtime."""
    if arguments:
        backend.store.update_runtime(
            task_id, UNUSED_KEY, lambda old: {**(old or {}), where: dict(arguments)}
        )


# -- tasks of versions ---------------------------------------------------------------------


def new_version_task(backend: Backend, project: str, name: str, parent: str | None) -> Task:
    """A new running task of type ``data_processing`` marked as a dataset version."""
    record = TaskRecord(
        project=project,
        name=name,
        status="running",
        task_type=TaskTypes.data_processing.value,
        parent=parent,
        started=time.time(),
        runtime={MARK: {"final": False}},
    )
    return Task.from_record(backend.store.create_task(record), backend)


def adopt_task(backend: Backend, this: Task | None, name: str | None, project: str | None) -> Task:
    """The current task ``this``, made a dataset version (``use_current_task``); names
    given for it other than its own are recorded and warned about (it keeps its own)."""
    if this is None:
        raise DatasetError(
            "Dataset.create(use_current_task=True): this process has no current task. "
            "Call Task.init(...) first (a notebook clearnb runs has one), or give "
            "dataset_project= and dataset_name= to create a dataset task.",
        )
    if this.task_type == "controller":
        raise DatasetError(
            f"Dataset.create(use_current_task=True): task {this.id} is a pipeline "
            "controller, which cannot be a dataset; create the dataset in a step.",
            task_id=this.id,
        )
    if (mark_of(this.reload().record) or {}).get("final"):
        raise DatasetError(
            f"Dataset.create(use_current_task=True): task {this.id} is already a finalized "
            f"dataset; read it with Dataset.get(dataset_id={this.id!r}).",
            task_id=this.id,
        )
    given = {"dataset_name": name, "dataset_project": project}
    kept = {"dataset_name": this.name, "dataset_project": this.project}
    ignored = {k: v for k, v in given.items() if v is not None and v != kept[k]}
    why = "the dataset is the current task, which keeps its project and name"
    warn_unused("Dataset.create", ignored, why, stacklevel=4)
    record_unused(backend, this.id, "Dataset.create", ignored)
    backend.store.update_task(this.id, task_type=TaskTypes.data_processing.value)
    return this.reload()


def load_version(backend: Backend, dataset_id: str) -> tuple[Task, DatasetState]:
    """The task and file list of the version ``dataset_id``."""
    try:
        record = backend.store.get_task(dataset_id)
    except TaskNotFoundError:
        raise DatasetNotFoundError(
            f"No dataset has id {dataset_id!r} in the store at {backend.store.url}. List "
            "the datasets with Dataset.list_datasets() (or `clearnb task ls`).",
            dataset_id=dataset_id,
        ) from None
    if mark_of(record) is None:
        raise DatasetError(
            f"Task {dataset_id} ({record.project}/{record.name}) is not a dataset: "
            "Dataset.create did not make it. Pass the id of a dataset version.",
            dataset_id=dataset_id,
        )
    task = Task.from_record(record, backend)
    stored = task.artifacts.get(STATE_ARTIFACT)
    if stored is None:  # created, but its file list was never written
        return task, DatasetState(dataset_id, graph={dataset_id: []})
    return task, DatasetState.from_dict(stored.get())


def save_version(
    backend: Backend,
    task: Task,
    state: DatasetState,
    reference: Mapping[str, FileEntry],
    **mark: Any,
) -> None:
    """Store the file list of ``task``'s version, then its mark (with ``mark``'s changes and
    the counts against ``reference``, its parents' files)."""
    added, removed, modified = compare(state.entries, reference)
    counts = {
        "parents": state.parents,
        "file_count": len(state.entries),
        "total_size": state.total_size(),
        "added": len(added),
        "modified": len(modified),
        "removed": len(removed),
        "pending": len(state.pending()),
    }
    summary = (
        f"{counts['file_count']} files, {counts['total_size']} bytes; against its parents "
        f"{len(added)} added, {len(modified)} modified, {len(removed)} removed"
    )
    stored = backend.artifacts.save(task.id, STATE_ARTIFACT, state.as_dict())
    stored.preview = summary
    backend.store.put_artifact(stored)
    merge_mark(backend, task, **counts, **mark)


def merge_mark(backend: Backend, task: Task, **changes: Any) -> None:
    """Change some facts of ``task``'s dataset mark, keeping the others."""
    fresh = mark_of(backend.store.get_task(task.id)) or {}
    backend.store.merge_runtime(task.id, {MARK: {**fresh, **changes}})
    task.reload()


def note_use(backend: Backend, this: Task, dataset_id: str, alias: str | None) -> None:
    """Record on the task ``this`` that it read the dataset (and under which alias)."""
    if alias:
        this.set_parameter(f"{ALIAS_SECTION}/{alias}", dataset_id)
    backend.store.update_runtime(
        this.id, USED_KEY, lambda used: list(dict.fromkeys([*(used or []), dataset_id]))
    )


# -- searching -----------------------------------------------------------------------------


def find_version(
    backend: Backend,
    project: str | None,
    name: str | None,
    tags: Sequence[str] | None = None,
    version: str | None = None,
    *,
    only_completed: bool = False,
    only_published: bool = False,
    exclude: str | None = None,
) -> Found | None:
    """The version matching that has the highest version number; of equal ones (or
    without numbers) the one changed last."""
    found = []
    for record in backend.store.find_tasks(project=project, name=name, tags=tags or None):
        mark = mark_of(record)
        if mark is None or record.id == exclude:
            continue
        if (only_completed and not mark.get("final")) or (
            only_published and not mark.get("published")
        ):
            continue
        if version is not None and mark.get("version") != str(version):
            continue
        found.append((record, mark.get("version")))
    found.sort(key=lambda item: item[0].last_update, reverse=True)
    best = newest_version([(number, (record, number)) for record, number in found])
    return None if best is None else Found(best[0].id, best[1])


def not_found(backend: Backend, asked: Mapping[str, Any]) -> DatasetNotFoundError:
    """The error of a search for ``asked`` (argument: value) that found nothing."""
    searched = ", ".join(f"{k}={v!r}" for k, v in asked.items() if v not in (None, False, []))
    return DatasetNotFoundError(
        f"No dataset matches {searched} in the store at {backend.store.url}. List the "
        "datasets with Dataset.list_datasets() (or `clearnb task ls`), or pass "
        "auto_create=True to create it.",
        **asked,
    )


def list_versions(
    backend: Backend,
    project: str | None,
    partial_name: str | None,
    tags: Sequence[str] | None,
    ids: Sequence[str] | None,
    only_completed: bool,
    recursive: bool,
) -> list[dict[str, Any]]:
    """ClearML's rows of ``Dataset.list_datasets``, newest first."""
    pattern = re.compile(partial_name) if partial_name else None
    wanted = set(ids) if ids else None
    rows = []
    for record in backend.store.find_tasks(tags=tags or None):
        mark = mark_of(record)
        if mark is None or (wanted is not None and record.id not in wanted):
            continue
        if only_completed and not mark.get("final"):
            continue
        below = recursive and record.project.startswith(f"{project}/")
        if project and record.project != project and not below:
            continue
        if pattern is not None and not pattern.search(record.name):
            continue
        created = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        rows.append(
            {
                "name": record.name,
                "created": created,
                "project": record.project,
                "id": record.id,
                "tags": list(record.tags),
                "version": mark.get("version"),
            }
        )
    return rows


# -- deleting ------------------------------------------------------------------------------


def versions_to_delete(
    backend: Backend,
    project: str | None,
    name: str | None,
    version: str | None,
    entire_dataset: bool,
    force: bool,
) -> list[str]:
    """Ids of the versions ``Dataset.delete`` removes when given no id: the one version
    matching, or with ``entire_dataset`` (and ``force``) every one."""
    if entire_dataset and not force:
        raise DatasetError(
            "Dataset.delete(entire_dataset=True) removes every version of the dataset: pass "
            "force=True as well to confirm."
        )
    matching = [
        record.id
        for record in backend.store.find_tasks(project=project, name=name)
        if (mark := mark_of(record)) is not None
        and (version is None or mark.get("version") == str(version))
    ]
    if not matching:
        asked = {"dataset_project": project, "dataset_name": name, "dataset_version": version}
        raise not_found(backend, asked)
    if len(matching) > 1 and not entire_dataset:
        raise DatasetError(
            f"Dataset.delete: {len(matching)} versions match ({', '.join(matching)}); pass "
            "dataset_id= or dataset_version= to name one, or entire_dataset=True with "
            "force=True to delete them all.",
            dataset_ids=matching,
        )
    return matching


def delete_versions(
    backend: Backend, doomed: Sequence[str], *, force: bool, delete_files: bool
) -> None:
    """Delete the versions ``doomed`` (tasks and artifacts); with ``delete_files`` also
    the stored contents they list that no remaining version lists (contents are shared by
    hash, so what others list is what they still need). A version that others descend
    from is only deleted with ``force`` (theirs keep their files)."""
    marks = {r.id: m for r in backend.store.find_tasks() if (m := mark_of(r)) is not None}
    gone = set(doomed)

    def descends(node: str, seen: set[str]) -> bool:
        parents = set(marks.get(node, {}).get("parents") or []) - seen
        return bool(parents & gone) or any(descends(p, seen | parents) for p in parents)

    users = sorted(node for node in marks if node not in gone and descends(node, {node}))
    if users and not force:
        raise DatasetError(
            f"Dataset.delete: versions {users} descend from {sorted(gone)}; delete them "
            "first, or pass force=True (they keep their files).",
            dataset_ids=sorted(gone),
            used_by=users,
        )
    if delete_files:
        kept: set[str] = set()
        dropped: set[str] = set()
        for node in marks:
            _, state = load_version(backend, node)
            urls = {e.url for e in state.entries.values() if e.url}
            if node in gone:
                dropped |= urls
            else:
                kept |= urls
        blobs = BlobStore(backend.artifacts.url, backend.config.cache_dir)
        for url in sorted(dropped - kept):
            blobs.delete(url)
    for node in doomed:
        if delete_files:
            for name in backend.store.get_artifacts(node):
                backend.artifacts.delete(node, name)
        backend.store.delete_task(node)

"""ClearML's ``Dataset``: versioned sets of files, each version a task of the store.

A version is a task (type ``data_processing``) whose runtime carries the mark
``runtime["dataset"]`` (its version, parents, whether it is final, counts); its file list
(relative path, size, sha256, the version that added the file, where its content lies) is
the task's JSON artifact ``dataset_state``. File contents are stored once each by their
sha256 (:mod:`clearnb.artifacts.blobs`), so a child version that keeps or re-adds a file of
its parent stores nothing new. A finalized version is read-only; ``get_local_copy`` lays
its files (its own over its parents') into a read-only folder of the cache.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

from clearnb import current, datasetstore
from clearnb.artifacts.blobs import BlobStore
from clearnb.backend import Backend
from clearnb.compat import unused_arguments, warn_unused
from clearnb.datasetfiles import (
    FIRST_VERSION,
    DatasetState,
    FileEntry,
    assign_chunks,
    chunk_list,
    compare,
    dataset_relative,
    files_to_add,
    hashed_entries,
    matches,
    next_version,
    preview_lines,
    select_part,
)
from clearnb.datasetio import cached_copy, emptied, mismatches, store_pending, writable_copy
from clearnb.errors import DatasetError
from clearnb.logger import Logger
from clearnb.task import Task

__all__ = ["Dataset", "FileEntry"]

log = logging.getLogger(__name__)

PREVIEW_LINES = 100
"""Files listed in the preview a version reports when it is uploaded."""


def _not_writable(what: str, dataset: Dataset) -> DatasetError:
    return DatasetError(
        f"Dataset {dataset.id} ({dataset.project}/{dataset.name}, version {dataset.version}) "
        f"is finalized and read-only, so {what} cannot change it. Make a new version from it: "
        f"Dataset.create(dataset_project={dataset.project!r}, dataset_name={dataset.name!r}, "
        f"parent_datasets=[{dataset.id!r}]).",
        dataset_id=dataset.id,
    )


class Dataset:
    """A version of a dataset; make one with :meth:`create`, find one with :meth:`get`."""

    def __init__(self, task: Task, state: DatasetState, backend: Backend) -> None:
        self._task = task
        self._state = state
        self._backend = backend
        self._reference: dict[str, FileEntry] | None = None

    # -- creating and finding ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        dataset_name: str | None = None,
        dataset_project: str | None = None,
        dataset_tags: Sequence[str] | None = None,
        parent_datasets: Sequence[str | Dataset] | None = None,
        use_current_task: bool = False,
        dataset_version: str | None = None,
        output_uri: str | None = None,
        description: str | None = None,
    ) -> Dataset:
        """A new, writable version holding its parents' files (later parents' files over
        earlier ones'). Its project defaults to the current task's or the last parent's;
        ``use_current_task`` makes this process's task (a clearnb step's) the dataset.
        Without ``dataset_version`` the latest version of the same project and name is
        counted up (``1.0.0`` first); ``output_uri`` is where its files are stored."""
        if dataset_name == "":
            raise DatasetError("Dataset.create: dataset_name is empty; give the dataset a name.")
        backend = Backend.for_config()
        parents = [
            p if isinstance(p, Dataset) else cls._by_id(backend, p) for p in parent_datasets or []
        ]
        for parent in parents:
            if not parent.is_final():
                raise DatasetError(
                    f"Dataset.create: parent dataset {parent.id} ({parent.project}/{parent.name}) "
                    "is not finalized; call finalize() on it before making versions from it.",
                    dataset_id=parent.id,
                )
        this = Task.current_task()
        if dataset_name and not dataset_project and this is not None and not use_current_task:
            dataset_project = this.project
        if dataset_project is None and dataset_name is None and not use_current_task:
            use_current_task = True  # as ClearML: no names means the current task
        if use_current_task:
            task = datasetstore.adopt_task(backend, this, dataset_name, dataset_project)
        else:
            project = dataset_project or (parents[-1].project if parents else None)
            name = dataset_name or (parents[-1].name if parents else None)
            if not project or not name:
                raise DatasetError(
                    "Dataset.create needs dataset_project=... and dataset_name=... (or "
                    "parent_datasets=[...] to take them from, or use_current_task=True in a "
                    "task).",
                )
            task = datasetstore.new_version_task(
                backend, project, name, this.id if this is not None else None
            )
        if dataset_tags:
            task.add_tags(list(dataset_tags))
        if description:
            backend.store.update_task(task.id, comment=str(description))
        version = str(dataset_version).strip() if dataset_version else None
        if not version:
            latest = datasetstore.find_version(backend, task.project, task.name, exclude=task.id)
            version = next_version(latest.version) if latest is not None else FIRST_VERSION
        state = DatasetState(task.id)
        for parent in parents:
            state.entries.update(deepcopy(parent._state.entries))
            state.graph.update(deepcopy(parent._state.graph))
        state.graph[task.id] = [parent.id for parent in parents]
        dataset = cls(task, state, backend)
        dataset._reference = deepcopy(state.entries)
        mark = {
            "version": version,
            "final": False,
            "current_task": bool(use_current_task),
            "output_uri": output_uri if isinstance(output_uri, str) and output_uri else None,
        }
        dataset._save(**mark)
        return dataset

    @classmethod
    def get(
        cls,
        dataset_id: str | None = None,
        dataset_project: str | None = None,
        dataset_name: str | None = None,
        dataset_tags: Sequence[str] | None = None,
        only_completed: bool = False,
        only_published: bool = False,
        include_archived: bool = False,
        auto_create: bool = False,
        writable_copy: bool = False,
        dataset_version: str | None = None,
        alias: str | None = None,
        overridable: bool = False,
        shallow_search: bool = False,
        **kwargs: Any,
    ) -> Dataset:
        """A version by id, or the newest (highest version, then latest change) matching
        project, name, tags and version; with ``auto_create`` one is created when none
        matches, with ``writable_copy`` a new child of it is returned. ``alias`` records
        the id as parameter ``Datasets/<alias>`` of the current task, and with
        ``overridable`` a run's value of that parameter chooses the dataset."""
        invalid = sorted(k for k in kwargs if not k.startswith("_"))
        if invalid:
            raise DatasetError(f"Dataset.get: no such arguments {invalid}; check their spelling.")
        if not any([dataset_id, dataset_project, dataset_name, dataset_tags]):
            raise DatasetError(
                "Dataset.get needs dataset_id=..., or dataset_project=..., dataset_name=... "
                "and/or dataset_tags=[...] to search by."
            )
        if dataset_id and (dataset_project or dataset_name):
            raise DatasetError(
                "Dataset.get: give dataset_id, or dataset_project/dataset_name, not both."
            )
        quiet = bool(kwargs.pop("_dont_populate_runtime_props", False))
        unused = unused_arguments(
            {"include_archived": include_archived, "shallow_search": shallow_search, **kwargs},
            {"include_archived": False, "shallow_search": False},
        )
        warn_unused(
            "Dataset.get", unused, "clearnb archives no tasks and searches all matches at once"
        )
        backend = Backend.for_config()
        this = Task.current_task()
        if this is not None:
            datasetstore.record_unused(backend, this.id, "Dataset.get", unused)
        if alias and overridable and this is not None and current.attached_task_id() == this.id:
            dataset_id = this.get_parameter(f"{datasetstore.ALIAS_SECTION}/{alias}") or dataset_id
        if dataset_id:
            dataset = cls._by_id(backend, dataset_id)
        else:
            found = datasetstore.find_version(
                backend,
                dataset_project,
                dataset_name,
                dataset_tags,
                dataset_version,
                only_completed=only_completed,
                only_published=only_published,
            )
            if found is not None:
                dataset = cls._by_id(backend, found.id)
            elif auto_create:
                dataset = cls.create(dataset_name, dataset_project, dataset_tags)
            else:
                asked = {
                    "dataset_project": dataset_project,
                    "dataset_name": dataset_name,
                    "dataset_tags": list(dataset_tags or []),
                    "dataset_version": dataset_version,
                    "only_completed": only_completed,
                    "only_published": only_published,
                }
                raise datasetstore.not_found(backend, asked)
        if writable_copy:
            dataset = cls.create(
                dataset.name, dataset.project, dataset.tags, parent_datasets=[dataset]
            )
        if this is not None and not quiet:
            datasetstore.note_use(backend, this, dataset.id, alias)
        return dataset

    @classmethod
    def _by_id(cls, backend: Backend, dataset_id: str) -> Dataset:
        return cls(*datasetstore.load_version(backend, dataset_id), backend)

    @classmethod
    def list_datasets(
        cls,
        dataset_project: str | None = None,
        partial_name: str | None = None,
        tags: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        only_completed: bool = True,
        recursive_project_search: bool = True,
        include_archived: bool = True,
    ) -> list[dict[str, Any]]:
        """Datasets as ``{"name", "created", "project", "id", "tags", "version"}``, newest
        first: of ``dataset_project`` (and its subprojects when recursive), whose name
        matches the regular expression ``partial_name``, with ``tags``, among ``ids``;
        only finalized ones unless ``only_completed`` is false."""
        unused = unused_arguments(
            {"include_archived": include_archived}, {"include_archived": True}
        )
        warn_unused("Dataset.list_datasets", unused, "clearnb archives no tasks")
        return datasetstore.list_versions(
            Backend.for_config(),
            dataset_project,
            partial_name,
            tags,
            ids,
            only_completed,
            recursive_project_search,
        )

    @classmethod
    def delete(
        cls,
        dataset_id: str | None = None,
        dataset_project: str | None = None,
        dataset_name: str | None = None,
        force: bool = False,
        dataset_version: str | None = None,
        entire_dataset: bool = False,
        shallow_search: bool = False,
        delete_files: bool = True,
        delete_external_files: bool = False,
    ) -> None:
        """Delete a version (by id, or the one matching project, name and version; every
        version with ``entire_dataset`` and ``force``) with its task. One that others
        descend from needs ``force``. With ``delete_files`` its stored files go too,
        except those another version still lists."""
        if not any([dataset_id, dataset_project, dataset_name]):
            raise DatasetError(
                "Dataset.delete needs dataset_id=..., or dataset_project=... and/or "
                "dataset_name=... to say which versions to delete."
            )
        if dataset_id and (dataset_project or dataset_name):
            raise DatasetError(
                "Dataset.delete: give dataset_id, or dataset_project/dataset_name, not both."
            )
        unused = unused_arguments(
            {"shallow_search": shallow_search, "delete_external_files": delete_external_files},
            {"shallow_search": False, "delete_external_files": False},
        )
        warn_unused(
            "Dataset.delete",
            unused,
            "clearnb searches all matches at once and keeps no links to external files",
        )
        backend = Backend.for_config()
        if dataset_id:
            doomed = [cls._by_id(backend, dataset_id).id]
        else:
            doomed = datasetstore.versions_to_delete(
                backend, dataset_project, dataset_name, dataset_version, entire_dataset, force
            )
        datasetstore.delete_versions(backend, doomed, force=force, delete_files=delete_files)

    # -- facts --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The version's id (its task's)."""
        return self._task.id

    @property
    def name(self) -> str:
        """The dataset's name."""
        return self._task.name

    @property
    def project(self) -> str:
        """The dataset's project."""
        return self._task.project

    @property
    def version(self) -> str | None:
        """The version, e.g. ``"1.0.2"``."""
        value = self._mark().get("version")
        return None if value is None else str(value)

    @version.setter
    def version(self, version: str) -> None:
        self._check_writable("setting the version")
        self._merge_mark(version=str(version).strip())

    @property
    def tags(self) -> list[str]:
        """The dataset's tags."""
        return self._task.get_tags()

    @tags.setter
    def tags(self, values: Sequence[str]) -> None:
        self._backend.store.update_task(self.id, tags=list(values or []))
        self._task.reload()

    def add_tags(self, tags: str | Sequence[str]) -> None:
        """Add tags to the dataset (its task), keeping the others."""
        self._task.add_tags(tags)

    @property
    def file_entries(self) -> list[FileEntry]:
        """Every file of this version (copies of the entries), by path."""
        return [deepcopy(self._state.entries[path]) for path in sorted(self._state.entries)]

    @property
    def file_entries_dict(self) -> dict[str, FileEntry]:
        """Every file of this version by its path in the dataset (copies)."""
        return {entry.relative_path: entry for entry in self.file_entries}

    def get_logger(self) -> Logger:
        """The logger of the dataset's task: report tables, plots and text about the data."""
        return self._task.get_logger()

    def get_default_storage(self) -> str:
        """Where this version's files are stored (``output_uri``, else the artifact storage)."""
        return str(self._mark().get("output_uri") or self._backend.artifacts.url)

    def get_dependency_graph(self) -> dict[str, list[str]]:
        """Each version this one descends from (and itself) with its direct parents."""
        return deepcopy(self._state.graph)

    def get_num_chunks(self, include_parents: bool = True) -> int:
        """Chunks holding this version's files (with ``include_parents``, the parents' too)."""
        chunks = chunk_list(self._state)
        return len(chunks if include_parents else [c for c in chunks if c[0] == self.id])

    def is_final(self) -> bool:
        """Whether the version was finalized (it can no longer change)."""
        return bool(self._mark(fresh=True).get("final"))

    def is_dirty(self) -> bool:
        """Whether files added to this version still wait to be uploaded."""
        return bool(self._state.pending())

    def set_description(self, description: str) -> None:
        """Set the dataset's description (its task's comment)."""
        self._backend.store.update_task(self.id, comment=str(description))
        self._task.reload()

    # -- changing a version -----------------------------------------------------------

    def add_files(
        self,
        path: str | os.PathLike[str],
        wildcard: str | Sequence[str] | None = None,
        local_base_folder: str | os.PathLike[str] | None = None,
        dataset_path: str | None = None,
        recursive: bool = True,
        verbose: bool = False,
        max_workers: int | None = None,
    ) -> int:
        """Add a file, or the files of a folder matching ``wildcard`` (below it when
        ``recursive``), at their paths relative to ``local_base_folder`` below
        ``dataset_path``; hashed on ``max_workers`` threads. A file whose content the
        version already has (from a parent too) is kept as it is. Returns the number of
        files added (not counting changed ones)."""
        self._check_writable("add_files")
        files = files_to_add(Path(path), wildcard, local_base_folder, dataset_path, recursive)
        added = modified = 0
        lines = []
        for entry in hashed_entries(files, self.id, max_workers):
            known = self._state.entries.get(entry.relative_path)
            if known is None:
                added, what = added + 1, "Add"
            elif known.hash != entry.hash:
                modified, what = modified + 1, "Modified"
            elif known.parent_dataset_id == self.id and known.url is None:
                added, what = added + 1, "Re-added"
            else:
                lines.append(f"Unchanged {entry.relative_path}")
                continue
            self._state.entries[entry.relative_path] = entry
            lines.append(f"{what} {entry.relative_path}")
        self._save()
        self._report(lines, verbose, f"add_files({path}): {added} added, {modified} modified")
        return added

    def remove_files(
        self, dataset_path: str | None = None, recursive: bool = True, verbose: bool = False
    ) -> int:
        """Remove the files whose dataset paths match ``dataset_path`` (a wildcard; all
        files when None); returns how many were removed."""
        self._check_writable("remove_files")
        pattern = dataset_relative(dataset_path)
        gone = sorted(p for p in self._state.entries if matches(p, pattern, recursive=recursive))
        for path in gone:
            del self._state.entries[path]
        self._save()
        self._report([f"Remove {p}" for p in gone], verbose, f"removed {len(gone)} files")
        return len(gone)

    def upload(
        self,
        show_progress: bool = True,
        verbose: bool = False,
        output_url: str | None = None,
        compression: str | None = None,
        chunk_size: int | None = None,
        max_workers: int | None = None,
        retries: int = 3,
        preview: bool = True,
    ) -> None:
        """Store the content of the files added since the last upload (each file once, by
        its sha256) at ``output_url`` (default: :meth:`get_default_storage`), in chunks of
        ``chunk_size`` MB (-1: one), on ``max_workers`` threads, trying each file
        ``1 + retries`` times. ``preview`` reports the file list to the dataset's logger."""
        self._check_writable("upload")
        unused = unused_arguments({"compression": compression})
        warn_unused(
            "Dataset.upload",
            unused,
            "files are stored as they are, each under its sha256, so that versions share them",
        )
        datasetstore.record_unused(self._backend, self.id, "Dataset.upload", unused)
        if output_url:
            self._merge_mark(output_uri=str(output_url))
        store = BlobStore(self.get_default_storage(), self._backend.config.cache_dir)
        pending = self._state.pending()
        own = [c for v, c in chunk_list(self._state) if v == self.id]
        stored = [e for e in self._state.entries.values() if e.parent_dataset_id == self.id]
        first = max([c for c in own if any(e.url and e.chunk == c for e in stored)], default=-1) + 1
        assign_chunks(pending, first, chunk_size)
        problems, written = store_pending(
            store, pending, retries=retries, max_workers=max_workers, verbose=verbose
        )
        self._save()
        if problems:
            raise DatasetError.collect(
                [*problems, "(the files stored meanwhile are kept; fix these and upload again)"],
                "file that could not be uploaded",
            )
        summary = (
            f"Uploaded {len(pending)} files of dataset {self.id} to {store.url}: {written} "
            f"stored, {len(pending) - written} already there"
        )
        if preview:
            self._report(preview_lines(self.file_entries, PREVIEW_LINES), False, summary)
        if show_progress:
            print(summary)

    def finalize(
        self, verbose: bool = False, raise_on_error: bool = True, auto_upload: bool = False
    ) -> bool:
        """Close the version: it becomes read-only (and its task, unless it is the current
        task, completed). Files not uploaded yet are uploaded with ``auto_upload``, else
        this raises (or returns False without ``raise_on_error``)."""
        self._check_writable("finalize")
        if self._state.pending():
            if auto_upload:
                self.upload(show_progress=verbose)
            elif raise_on_error:
                raise DatasetError(
                    f"Dataset {self.id}: {len(self._state.pending())} added files are not "
                    "uploaded yet; call upload() first, or finalize(auto_upload=True).",
                    dataset_id=self.id,
                )
            else:
                return False
        self._save(final=True, finalized=time.time())
        rows = [["path", "size", "sha256", "version"]] + [
            [e.relative_path, e.size, e.hash, e.parent_dataset_id] for e in self.file_entries
        ]
        self.get_logger().report_table("Dataset Content", "files", table_plot=rows)
        if verbose:
            print(f"Dataset {self.id} finalized: {len(self._state.entries)} files")
        if not self._mark().get("current_task"):
            self._task.mark_completed()
        return True

    def publish(self, raise_on_error: bool = True) -> bool:
        """Mark a finalized version published (``Dataset.get(only_published=True)``)."""
        if not self.is_final():
            if not raise_on_error:
                return False
            raise DatasetError(
                f"Dataset {self.id} is not finalized, so it cannot be published; finalize() "
                "it first.",
                dataset_id=self.id,
            )
        self._merge_mark(published=True)
        return True

    def set_metadata(
        self, metadata: Any, metadata_name: str = "metadata", ui_visible: bool = True
    ) -> None:
        """Store ``metadata`` with the dataset (as an artifact of its task); a DataFrame is
        also reported as a table when ``ui_visible``."""
        if metadata_name == datasetstore.STATE_ARTIFACT:
            taken = datasetstore.STATE_ARTIFACT
            raise DatasetError(f"metadata_name {taken!r} is taken by the file list; use another.")
        self._task.upload_artifact(metadata_name, metadata)
        if ui_visible and type(metadata).__name__ == "DataFrame":
            self.get_logger().report_table(
                "Dataset Metadata", "Dataset Metadata", table_plot=metadata
            )

    def get_metadata(self, metadata_name: str = "metadata") -> Any:
        """The metadata stored by :meth:`set_metadata`, or None."""
        stored = self._task.artifacts.get(metadata_name)
        return None if stored is None else stored.get()

    # -- reading a version --------------------------------------------------------------

    def list_files(
        self, dataset_path: str | None = None, recursive: bool = True, dataset_id: str | None = None
    ) -> list[str]:
        """Paths of the files (matching the wildcard ``dataset_path``; added or last
        changed by ``dataset_id``), sorted."""
        pattern = dataset_relative(dataset_path)
        return sorted(
            path
            for path, entry in self._state.entries.items()
            if (dataset_id is None or entry.parent_dataset_id == dataset_id)
            and (pattern is None or matches(path, pattern, recursive=recursive))
        )

    def list_added_files(self, dataset_id: str | None = None) -> list[str]:
        """Files that ``dataset_id`` (by default the parents together) does not have."""
        return compare(self._state.entries, self._compared_with(dataset_id))[0]

    def list_removed_files(self, dataset_id: str | None = None) -> list[str]:
        """Files of ``dataset_id`` (by default of the parents) that this version lacks."""
        return compare(self._state.entries, self._compared_with(dataset_id))[1]

    def list_modified_files(self, dataset_id: str | None = None) -> list[str]:
        """Files whose content differs from ``dataset_id``'s (by default the parents')."""
        return compare(self._state.entries, self._compared_with(dataset_id))[2]

    def get_local_copy(
        self,
        use_soft_links: bool | None = None,
        part: int | None = None,
        num_parts: int | None = None,
        raise_on_error: bool = True,
        max_workers: int | None = None,
    ) -> str:
        """A read-only folder of the cache with the version's files (its own over its
        parents'), built once and reused. ``use_soft_links`` makes its files links to
        the stored ones (copies by default); ``part`` of ``num_parts`` holds only those
        chunks (:meth:`get_num_chunks`). Files that cannot be read raise, unless
        ``raise_on_error`` is false: then the folder lacks them."""
        if not self.is_final():
            raise DatasetError(
                f"Dataset {self.id} is not finalized yet, so it has no local copy; call "
                "finalize() first.",
                dataset_id=self.id,
            )
        entries = select_part(self._state, part, num_parts)
        name = self.id
        if part is not None:
            name += f".part-{part}-of-{num_parts or len(chunk_list(self._state))}"
        if use_soft_links:
            name += ".links"
        folder = self._backend.config.cache_dir / "datasets" / name
        store = BlobStore(self.get_default_storage(), self._backend.config.cache_dir)
        copy = cached_copy(
            folder,
            entries,
            store,
            links=bool(use_soft_links),
            max_workers=max_workers,
            raise_on_error=raise_on_error,
            what=f"dataset {self.id}",
        )
        return str(copy)

    def get_mutable_local_copy(
        self,
        target_folder: str | os.PathLike[str],
        overwrite: bool = False,
        part: int | None = None,
        num_parts: int | None = None,
        raise_on_error: bool = True,
        max_workers: int | None = None,
    ) -> str | None:
        """Copy the version's files into ``target_folder`` as ordinary writable files;
        a folder holding files already is emptied first with ``overwrite``, else this
        raises (or returns None without ``raise_on_error``)."""
        target = Path(target_folder).absolute()
        if not emptied(target, overwrite=overwrite, raise_on_error=raise_on_error):
            return None
        source = self.get_local_copy(
            part=part, num_parts=num_parts, raise_on_error=raise_on_error, max_workers=max_workers
        )
        target.mkdir(parents=True, exist_ok=True)
        return str(writable_copy(Path(source), target))

    def verify_dataset_hash(
        self, local_copy_path: str | None = None, skip_hash: bool = False, verbose: bool = False
    ) -> list[str]:
        """Paths whose file in ``local_copy_path`` (the cached copy by default) does not
        match the version's size (and, unless ``skip_hash``, sha256)."""
        folder = Path(local_copy_path or self.get_local_copy())
        bad = mismatches(folder, self.file_entries, skip_hash=skip_hash)
        if verbose:
            for path in bad:
                print(f"mismatch: {path}")
        return bad

    # -- internals ----------------------------------------------------------------------

    def _mark(self, fresh: bool = False) -> dict[str, Any]:
        task = self._task.reload() if fresh else self._task
        return datasetstore.mark_of(task.record) or {}

    def _merge_mark(self, **changes: Any) -> None:
        datasetstore.merge_mark(self._backend, self._task, **changes)

    def _check_writable(self, what: str) -> None:
        if self.is_final():
            raise _not_writable(what, self)

    def _parents_entries(self) -> dict[str, FileEntry]:
        """The parents' files together (later parents' over earlier ones'), read once."""
        if self._reference is None:
            merged: dict[str, FileEntry] = {}
            for parent in self._state.parents:
                merged.update(Dataset._by_id(self._backend, parent)._state.entries)
            self._reference = merged
        return self._reference

    def _compared_with(self, dataset_id: str | None) -> dict[str, FileEntry]:
        if dataset_id is None or dataset_id == self.id:
            return self._parents_entries()
        return dict(Dataset._by_id(self._backend, dataset_id)._state.entries)

    def _save(self, **mark: Any) -> None:
        """Store the file list, then the mark with its counts."""
        reference = self._parents_entries()
        datasetstore.save_version(self._backend, self._task, self._state, reference, **mark)

    def _report(self, lines: Sequence[str], verbose: bool, summary: str) -> None:
        if verbose:
            for line in lines:
                print(line)
        text = "\n".join([summary, *lines]) if lines else summary
        self.get_logger().report_text(text, print_console=False)

    def __repr__(self) -> str:
        return f"<Dataset {self.id} {self.project}/{self.name} v{self.version}>"

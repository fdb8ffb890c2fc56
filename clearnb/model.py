"""Models as ClearML spells them: ``OutputModel``, ``InputModel``, ``Model``.

A model is a stored weights file (or a folder: a package) with its name, framework, tags,
metadata, design (its configuration) and labels, made by a task. ``OutputModel(task)``
records one and ``update_weights`` stores its weights in the artifact storage (atomic,
hashed, see :mod:`clearnb.modelweights`); ``InputModel`` finds one (by id, or by name,
project and tags) and ``get_local_copy`` gives its verified weights; ``task.connect(model)``
records it as the task's input, and ``task.models`` lists a task's models.

Like ClearML, an output model is recorded in the store the first time it is needed (its
``id`` read, its weights or metadata stored), so an ``OutputModel`` that stores nothing
leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clearnb import current, modelweights
from clearnb.backend import Backend
from clearnb.current import CURRENT
from clearnb.errors import ClearnbError, ModelError, ModelNotFoundError
from clearnb.modelmeta import Framework, cast_metadata, design_text, metadata_entry
from clearnb.store.models import ARCHIVED_TAG
from clearnb.store.records import ModelRecord, TaskModelRecord
from clearnb.taskconfig import config_from_text
from clearnb.taskfacts import TaskFacts

__all__ = ["BaseModel", "Framework", "InputModel", "Model", "OutputModel"]

log = logging.getLogger(__name__)


class BaseModel:
    """What every model has: its facts, its weights, its metadata; ClearML's ``BaseModel``."""

    def __init__(self, record: ModelRecord, backend: Backend) -> None:
        self._record = record
        self._backend = backend
        self._stored = True

    # -- facts ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The model's id."""
        self._ensure()
        return self._record.id

    @property
    def name(self) -> str:
        """The model's name."""
        return self._record.name

    @name.setter
    def name(self, value: str) -> None:
        self._update(name=str(value))

    @property
    def project(self) -> str:
        """The project the model belongs to (its name: projects are names here)."""
        return self._record.project

    @property
    def comment(self) -> str:
        """The model's comment (its description)."""
        return self._record.comment

    @comment.setter
    def comment(self, value: str) -> None:
        self._update(comment=str(value or ""))

    @property
    def tags(self) -> list[str]:
        """The model's tags."""
        return list(self._record.tags)

    @tags.setter
    def tags(self, value: Sequence[str]) -> None:
        self._update(tags=list(value))

    @property
    def system_tags(self) -> list[str]:
        """The model's system tags (``package``, ``archived``)."""
        return list(self._record.system_tags)

    @property
    def config_text(self) -> str:
        """The model's configuration (design) as text."""
        return self._record.design

    @property
    def config_dict(self) -> Any:
        """The model's configuration read as a dict (JSON or YAML text); {} when empty."""
        return config_from_text(self._record.design, self._record.name) if self.config_text else {}

    @property
    def labels(self) -> dict[str, int]:
        """The label enumeration, ``{label: value}``."""
        return dict(self._record.labels)

    @property
    def task(self) -> str | None:
        """The id of the task that created the model."""
        return self._record.task_id

    @property
    def original_task(self) -> str | None:
        """The id of the task that created the model."""
        return self._record.task_id

    @property
    def url(self) -> str | None:
        """Where the weights are stored (a path or URL), or None before there are any."""
        return self._record.uri

    @property
    def published(self) -> bool:
        """Whether the model is published (then it cannot change)."""
        return self._record.published

    @property
    def framework(self) -> str:
        """The model's framework (e.g. ``PyTorch``), as ClearML names it."""
        return self._record.framework

    @property
    def record(self) -> ModelRecord:
        """The stored record as last read."""
        return self._record

    def reload(self) -> BaseModel:
        """Read the model again from the store; returns it."""
        if self._stored:
            self._record = self._backend.store.get_model(self._record.id)
        return self

    # -- weights ----------------------------------------------------------------------

    def get_weights(
        self,
        raise_on_error: bool = False,
        force_download: bool = False,
        extract_archive: bool = False,
    ) -> str | None:
        """A local path holding the weights, checked against their hash; with
        ``extract_archive``, the folder an archive unpacks into. On failure None (logged),
        or with ``raise_on_error`` the error."""
        return self._local(extract_archive, raise_on_error, force_download)

    def get_weights_package(
        self,
        return_path: bool = False,
        raise_on_error: bool = False,
        force_download: bool = False,
        extract_archive: bool = True,
    ) -> str | list[Path] | None:
        """The files of a packaged model (a folder): their paths, or with ``return_path``
        the folder's."""
        if modelweights.PACKAGE_TAG not in self._record.system_tags:
            raise ModelError(f"Model {self._record.id} ({self.name}) is not packaged")
        folder = self._local(extract_archive, raise_on_error, force_download)
        if folder is None or return_path:
            return folder
        return sorted(Path(folder).glob("*"))

    def get_local_copy(
        self,
        extract_archive: bool | None = None,
        raise_on_error: bool = False,
        force_download: bool = False,
    ) -> str | None:
        """A local path holding the verified weights: the folder of a packaged model
        (unless ``extract_archive`` is False), else the file (unpacked only when
        ``extract_archive``). On failure None (logged), or with ``raise_on_error`` the error.
        """
        if extract_archive is None:
            extract_archive = modelweights.PACKAGE_TAG in self._record.system_tags
        return self._local(extract_archive, raise_on_error, force_download)

    def _local(self, extract: bool, raise_on_error: bool, force: bool) -> str | None:
        try:
            return modelweights.local_copy(
                self._backend, self.reload().record, extract=extract, refresh=force
            )
        except ClearnbError as exc:
            if raise_on_error:
                raise
            log.warning("could not get the weights of model %s: %s", self._record.id, exc)
            return None

    # -- state ------------------------------------------------------------------------

    def publish(self) -> None:
        """Publish the model: it can no longer change, and ``only_published`` finds it."""
        if not self.published:
            self._update(published=True)

    def archive(self) -> None:
        """Archive the model: queries leave it out unless ``include_archived``."""
        if ARCHIVED_TAG not in self._record.system_tags:
            self._update(system_tags=[*self._record.system_tags, ARCHIVED_TAG])

    def unarchive(self) -> None:
        """Undo :meth:`archive`."""
        if ARCHIVED_TAG in self._record.system_tags:
            kept = [t for t in self._record.system_tags if t != ARCHIVED_TAG]
            self._update(system_tags=kept)

    # -- metadata ---------------------------------------------------------------------

    def set_metadata(self, key: str, value: Any, v_type: str | None = None) -> bool:
        """Set one metadata entry: its value is kept as text, with ``v_type`` (one of
        ClearML's basic type names) to cast it back. Returns True."""
        self._ensure()
        entries = {str(key): metadata_entry(key, value, v_type)}
        self._record = self._backend.store.merge_model_metadata(self._record.id, entries)
        return True

    def get_metadata(self, key: str) -> str | None:
        """The value (as text) of metadata entry ``key``, or None."""
        return self.get_all_metadata().get(str(key), {}).get("value")

    def get_metadata_casted(self, key: str) -> Any:
        """The value of metadata entry ``key`` cast to its type where possible, or None."""
        entry = self.get_all_metadata().get(str(key))
        return None if entry is None else cast_metadata(entry.get("value"), entry.get("type"))

    def get_all_metadata(self) -> dict[str, dict[str, str]]:
        """Every metadata entry: ``{key: {"key": key, "value": text, "type": type}}``."""
        return {k: dict(v) for k, v in self.reload().record.metadata.items()}

    def get_all_metadata_casted(self) -> dict[str, Any]:
        """Every metadata value cast to its type where possible, by key."""
        return {
            key: cast_metadata(entry.get("value"), entry.get("type"))
            for key, entry in self.get_all_metadata().items()
        }

    def set_all_metadata(
        self, metadata: Mapping[str, Mapping[str, Any]], replace: bool = True
    ) -> bool:
        """Set metadata ``{key: {"value": v, "type": t}}``; with ``replace``, the entries
        not given go. Returns True."""
        self._ensure()
        entries = {
            str(key): metadata_entry(key, entry.get("value"), entry.get("type"))
            for key, entry in metadata.items()
        }
        self._record = self._backend.store.merge_model_metadata(
            self._record.id, entries, replace=replace
        )
        return True

    # -- writing ----------------------------------------------------------------------

    def _ensure(self) -> None:
        """Record the model in the store if it is not there yet."""
        if not self._stored:
            self._record = self._backend.store.create_model(self._record)
            self._stored = True

    def _update(self, **fields: Any) -> None:
        if self._stored:
            self._record = self._backend.store.update_model(self._record.id, **fields)
        else:
            for name, value in fields.items():
                setattr(self._record, name, value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._record.id} {self._record.name!r}>"

    @classmethod
    def from_record(cls, record: ModelRecord, backend: Backend) -> Any:
        """A model of ``cls`` for a stored ``record`` of ``backend``'s store (nothing is
        read); code that has a model's record at hand wraps it with this."""
        model = cls.__new__(cls)
        BaseModel.__init__(model, record, backend)
        return model


class Model(BaseModel):
    """A stored model, found by its id: read-only."""

    def __init__(self, model_id: str) -> None:
        backend = Backend.for_config()
        super().__init__(backend.store.get_model(model_id), backend)

    @classmethod
    def query_models(
        cls,
        project_name: str | None = None,
        model_name: str | None = None,
        tags: Sequence[str] | None = None,
        only_published: bool = False,
        include_archived: bool = False,
        max_results: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Model]:
        """Models matching every filter given, newest first: ``model_name`` exactly,
        ``tags`` with ClearML's tag filter, ``metadata`` by value of each key."""
        backend = Backend.for_config()
        found = backend.store.find_models(
            project=project_name,
            name=model_name,
            tags=list(tags) if tags else None,
            only_published=only_published,
            include_archived=include_archived,
            limit=max_results,
            metadata=metadata,
        )
        return [Model.from_record(record, backend) for record in found]


class InputModel(Model):
    """A stored model a task uses: by id, or the newest matching name, project and tags."""

    def __init__(
        self,
        model_id: str | None = None,
        name: str | None = None,
        project: str | None = None,
        tags: Sequence[str] | None = None,
        only_published: bool = False,
    ) -> None:
        if not model_id:
            found = Model.query_models(
                project_name=project, model_name=name, tags=tags, only_published=only_published
            )
            if not found:
                raise ModelNotFoundError(
                    f"Could not locate model with project={project} name={name} tags={tags} "
                    f"published={only_published}; list them with Model.query_models().",
                    project=project,
                    name=name,
                    tags=list(tags or []),
                )
            model_id = found[0].id
        super().__init__(model_id)

    @classmethod
    def import_model(
        cls,
        weights_url: str,
        config_text: str | None = None,
        config_dict: Mapping[str, Any] | None = None,
        label_enumeration: Mapping[str, int] | None = None,
        name: str | None = None,
        project: str | None = None,
        tags: Sequence[str] | None = None,
        comment: str | None = None,
        is_package: bool = False,
        create_as_published: bool = False,
        framework: str | None = None,
    ) -> InputModel:
        """Register the weights at ``weights_url`` (a path or URL, not copied) as a model;
        a model already registered with that URL is returned instead."""
        if not weights_url:
            raise ModelError("Please provide a valid weights_url parameter")
        url = str(Path(weights_url).absolute()) if "://" not in weights_url else weights_url
        backend = Backend.for_config()
        existing = backend.store.find_models(uri=url, limit=1)
        if existing:
            return cls(existing[0].id)
        task = CURRENT.task
        record = ModelRecord(
            name=name or (f"Imported by {task.name}" if task else Path(url).stem),
            project=project or (task.project if task else "default"),
            framework=str(framework or modelweights.guess_framework(url)),
            tags=list(tags or []),
            system_tags=[modelweights.PACKAGE_TAG] if is_package else [],
            comment="\n".join(
                filter(None, [f"Imported by task id: {task.id}" if task else "", comment or ""])
            ),
            design=design_text(config_text, config_dict) or "",
            labels=dict(label_enumeration or {}),
            uri=url,
            published=create_as_published,
        )
        return cls(backend.store.create_model(record).id)

    @classmethod
    def load_model(cls, weights_url: str, load_archived: bool = False) -> InputModel | None:
        """The model registered with ``weights_url``, or None."""
        url = str(Path(weights_url).absolute()) if "://" not in weights_url else weights_url
        found = Backend.for_config().store.find_models(
            uri=url, include_archived=load_archived, limit=1
        )
        return cls(found[0].id) if found else None

    def connect(
        self, task: TaskFacts, name: str | None = None, ignore_remote_overrides: bool = False
    ) -> None:
        """Record this model as ``task``'s input under ``name`` (default: the weights'
        file name without its extension). In a run whose task already has an input model
        under that name (its clone source's), that model is used instead, unless
        ``ignore_remote_overrides``."""
        if not isinstance(task, TaskFacts):
            raise ModelError("task argument must be of Task type")
        name = name or (Path(self.url).stem if self.url else "") or "Input Model"
        store = self._backend.store
        if not ignore_remote_overrides and current.attached_task_id() == task.id:
            for link in store.get_task_models(task.id, kind="input"):
                if link.name == name and link.model_id != self._record.id:
                    self._record = store.get_model(link.model_id)
                    return
        store.set_task_model(TaskModelRecord(task.id, "input", name, self._record.id))


class OutputModel(BaseModel):
    """A model a task makes: its weights are stored with :meth:`update_weights`."""

    def __init__(
        self,
        task: TaskFacts | None = None,
        config_text: str | None = None,
        config_dict: Mapping[str, Any] | None = None,
        label_enumeration: Mapping[str, int] | None = None,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        comment: str | None = None,
        framework: str | None = None,
        base_model_id: str | None = None,
    ) -> None:
        backend, self._task_id, task_name, task_project = task_of(task)
        design = design_text(config_text, config_dict) or ""
        made = "Overwritten" if base_model_id else "Created"
        note = f"{made} by task id: {self._task_id}" + (f"\n{comment}" if comment else "")
        self._connect_name: str | None = None
        self._upload_uri: str | None = None
        if base_model_id:
            base = backend.store.get_model(base_model_id)
            super().__init__(base, backend)
            old = base.comment
            self._update(
                task_id=self._task_id,
                project=task_project,
                name=name or task_name,
                comment=note if not old else (old if note in old else f"{old}\n{note}"),
                tags=list(tags) if tags is not None else base.tags,
                framework=str(framework) if framework else base.framework,
                design=design or base.design,
                labels=dict(label_enumeration) if label_enumeration else base.labels,
            )
            self._connect_name = Path(base.uri).stem if base.uri else None
            self._link(self._connect_name or self.name)
            return
        record = ModelRecord(
            name=name or task_name,
            project=task_project,
            task_id=self._task_id,
            framework=str(framework or ""),
            tags=list(tags or []),
            comment=note,
            design=design,
            labels=dict(label_enumeration or {}),
        )
        super().__init__(record, backend)
        self._stored = False

    @property
    def config_text(self) -> str:
        """The model's configuration (design) as text; settable."""
        return self._record.design

    @config_text.setter
    def config_text(self, value: str) -> None:
        self.update_design(config_text=value)

    @property
    def config_dict(self) -> Any:
        """The model's configuration as a dict; settable."""
        return super().config_dict

    @config_dict.setter
    def config_dict(self, value: Mapping[str, Any]) -> None:
        self.update_design(config_dict=value)

    @property
    def labels(self) -> dict[str, int]:
        """The label enumeration, ``{label: value}``; settable."""
        return dict(self._record.labels)

    @labels.setter
    def labels(self, value: Mapping[str, int]) -> None:
        self.update_labels(value)

    @property
    def upload_storage_uri(self) -> str | None:
        """Where weights are stored when no ``upload_uri`` is given (None: the artifact
        storage)."""
        return self._upload_uri

    def connect(
        self, task: TaskFacts | None, name: str | None = None, ignore_remote_overrides: bool = False
    ) -> None:
        """Record this model as ``task``'s output under ``name``; ``task`` must be the
        model's own (an output model belongs to the task that makes it). Nothing overrides
        an output model, so ``ignore_remote_overrides`` changes nothing."""
        if task is None or task.id != self._task_id:
            raise ModelError(
                "Can only connect preexisting model to task, but this is a fresh model"
            )
        if name:
            self._connect_name = name
        self._link(self._connect_name or self.name)

    def set_upload_destination(self, uri: str) -> None:
        """Store later weights below ``uri`` (a path or fsspec URL) instead of the
        artifact storage."""
        if uri:
            self._upload_uri = str(uri)

    def update_weights(
        self,
        weights_filename: str | None = None,
        upload_uri: str | None = None,
        target_filename: str | None = None,
        auto_delete_file: bool = True,
        register_uri: str | None = None,
        iteration: int | None = None,
        update_comment: bool = True,
        is_package: bool = False,
        async_enable: bool = True,
    ) -> str:
        """Store the weights file ``weights_filename`` (a folder is stored as a package),
        or record ``register_uri`` as the weights without copying it; returns where they
        are.

        The file is stored (atomically, with its sha256) in the artifact storage, or below
        ``upload_uri``, named ``target_filename`` if given; with ``auto_delete_file`` (the
        default, as ClearML's) the local file is removed once it is stored. The model is
        recorded as the task's output under the weights' file name without extension.
        Storing is done before this returns (``async_enable`` changes nothing).
        """
        self._check_editable()
        if bool(weights_filename) == bool(register_uri):
            raise ModelError(
                "Model update must have either local weights file to upload, "
                "or pre-uploaded register_uri, never both"
            )
        if weights_filename and Path(weights_filename).is_dir():
            return self.update_weights_package(
                weights_path=weights_filename,
                upload_uri=upload_uri,
                target_filename=target_filename or Path(weights_filename).name,
                auto_delete_file=auto_delete_file,
                iteration=iteration,
                async_enable=async_enable,
            )
        source = str(weights_filename or register_uri)
        self._ensure()
        fields: dict[str, Any] = {
            "framework": self.framework or modelweights.guess_framework(target_filename or source),
            "iteration": iteration,
        }
        if update_comment:
            fields["comment"] = f"snapshot {source} stored\n{self.comment}".rstrip("\n")
        if weights_filename:
            stored = modelweights.store_file(
                self._backend,
                self._record,
                self._task_id,
                Path(weights_filename),
                target_filename,
                upload_uri or self._upload_uri,
            )
            fields.update(uri=stored.url, hash=stored.hash, size=stored.size, codec=stored.codec)
        else:
            fields.update(uri=source, hash="", size=0, codec="")
        if is_package and modelweights.PACKAGE_TAG not in self._record.system_tags:
            fields["system_tags"] = [*self._record.system_tags, modelweights.PACKAGE_TAG]
        self._update(**fields)
        self._link(self._connect_name or Path(target_filename or source).stem or "Output Model")
        if weights_filename and auto_delete_file:
            modelweights.delete_local(Path(weights_filename))
        return str(self._record.uri)

    def update_weights_package(
        self,
        weights_filenames: Sequence[str] | None = None,
        weights_path: str | None = None,
        upload_uri: str | None = None,
        target_filename: str | None = None,
        auto_delete_file: bool = True,
        iteration: int | None = None,
        async_enable: bool = True,
    ) -> str:
        """Store several weights files, or the folder ``weights_path``, as one package (a
        zip of them, unpacked again by :meth:`get_local_copy`); returns where it is. With
        ``auto_delete_file`` the local files (and folder) are removed once stored."""
        self._check_editable()
        if bool(weights_filenames) == bool(weights_path):
            raise ModelError(
                "Model update weights package should get either directory path to pack or a "
                "list of files"
            )
        self._ensure()
        files = [Path(f) for f in weights_filenames or ()]
        stored = modelweights.store_package(
            self._backend,
            self._record,
            self._task_id,
            files=files,
            folder=Path(weights_path) if weights_path else None,
            target_filename=target_filename,
            upload_uri=upload_uri or self._upload_uri,
        )
        listed = [str(f) for f in files] if files else [str(weights_path)]
        system_tags = list(dict.fromkeys([*self._record.system_tags, modelweights.PACKAGE_TAG]))
        self._update(
            uri=stored.url,
            hash=stored.hash,
            size=stored.size,
            codec=stored.codec,
            iteration=iteration,
            system_tags=system_tags,
            comment=f"snapshot {listed} stored\n{self.comment}".rstrip("\n"),
        )
        self._link(self._connect_name or Path(stored.url).stem)
        if auto_delete_file:
            for path in files or [Path(str(weights_path))]:
                modelweights.delete_local(path)
        return str(self._record.uri)

    def update_design(
        self, config_text: str | None = None, config_dict: Mapping[str, Any] | None = None
    ) -> bool:
        """Set the model's configuration (design), as text or as a dict."""
        self._check_editable()
        self._update(design=design_text(config_text, config_dict) or "")
        return True

    def update_labels(self, labels: Mapping[str, int]) -> bool:
        """Set the label enumeration, ``{label: value}`` (values are integers)."""
        self._check_editable()
        if not all(isinstance(k, str) and isinstance(v, int) for k, v in labels.items()):
            raise ModelError("A label enumeration maps str labels to int values.")
        self._update(labels=dict(labels))
        return True

    @classmethod
    def wait_for_uploads(
        cls, timeout: float | None = None, max_num_uploads: int | None = None
    ) -> None:
        """Return at once: weights are stored before ``update_weights`` returns."""

    def _check_editable(self) -> None:
        if self._stored and self.reload().published:
            raise ModelError(
                f"Model {self._record.id} ({self.name}) is published and cannot be changed"
            )

    def _link(self, name: str) -> None:
        self._ensure()
        link = TaskModelRecord(self._task_id, "output", name, self._record.id)
        self._backend.store.set_task_model(link)


def task_of(task: TaskFacts | None) -> tuple[Backend, str, str, str]:
    """The backend, id, name and project of ``task``, or of this process's task (the one
    ``Task.init`` returned, or the run's); raises if there is none."""
    if task is not None:
        if not isinstance(task, TaskFacts):
            raise ModelError("task argument must be of Task type")
        record = task.record
        return task.backend, task.id, record.name, record.project
    if CURRENT.task is not None:
        found = CURRENT.task
        return found.backend, found.id, found.name, found.project
    attached = current.attached_task_id()
    if attached:
        backend = Backend.for_config()
        record = backend.store.get_task(attached)
        return backend, record.id, record.name, record.project
    raise ModelError(
        "task object was not provided, and no current task was found: call Task.init() "
        "first, or pass task=..."
    )

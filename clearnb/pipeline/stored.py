"""Opening stored pipelines again, as ClearML's ``PipelineController.get`` and ``clone``.

:class:`StoredMethods` finds a pipeline stored in the store (a draft, a pipeline sent to a
queue, a past run) with :mod:`clearnb.pipeline.drafts` and opens it with the controller's
own ``from_definition`` (a draft, ready to run in its Task) or ``from_run`` (a past run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import PipelineError
from clearnb.pipeline import drafts
from clearnb.store import pipelines as runs

P = TypeVar("P", bound="StoredMethods")


class StoredMethods:
    """The classmethods of ``PipelineController`` that open a stored pipeline."""

    @classmethod
    def from_definition(
        cls: type[P], data: Mapping[str, Any], task: str | None = None, **options: Any
    ) -> P:
        """A pipeline built from definition ``data``; ``task`` adopts that controller Task."""
        raise NotImplementedError

    @classmethod
    def from_run(cls: type[P], task_id: str, config: Config | None = None) -> P:
        """A past run of a pipeline, opened by its task id."""
        raise NotImplementedError

    @property
    def id(self) -> str:
        """Id of the pipeline's Task."""
        raise NotImplementedError

    @classmethod
    def get(
        cls: type[P],
        pipeline_id: str | None = None,
        pipeline_project: str | None = None,
        pipeline_name: str | None = None,
        pipeline_version: str | None = None,
        pipeline_tags: Sequence[str] | None = None,
        shallow_search: bool = False,
    ) -> P:
        """A stored pipeline: by id, or by project and name (the highest semantic version,
        or ``pipeline_version``; else the newest). One not run yet (a draft) comes back
        ready to :meth:`start` in its own Task; a run as :meth:`from_run` opens it.
        ``shallow_search`` looks only at the newest 500 pipelines."""
        if pipeline_id and (pipeline_project or pipeline_name):
            raise PipelineError("PipelineController.get takes pipeline_id or project and name")
        store = Backend.for_config(Config.from_env()).store
        if pipeline_id:
            record = drafts.stored_pipeline(store, pipeline_id)
        else:
            record = drafts.find(
                store,
                project=pipeline_project,
                name=pipeline_name,
                version=pipeline_version,
                tags=pipeline_tags,
                shallow=shallow_search,
            )
        definition = drafts.definition_of(record)
        if definition is not None and runs.run_document(record) is None:  # not run yet
            return cls.from_definition(definition, task=record.id)
        return cls.from_run(record.id)

    @classmethod
    def clone(
        cls: type[P],
        pipeline_controller: StoredMethods | str,
        name: str | None = None,
        comment: str | None = None,
        parent: str | None = None,
        project: str | None = None,
        version: str | None = None,
    ) -> P:
        """A draft copy of a stored pipeline (one with a definition: a draft, or one sent
        to a queue), renamed, moved or versioned as asked; ready to :meth:`enqueue`."""
        store = Backend.for_config(Config.from_env()).store
        source = pipeline_controller
        record = store.get_task(source if isinstance(source, str) else source.id)
        copied = drafts.clone_record(
            record, name=name, comment=comment, parent=parent, project=project, version=version
        )
        store.create_task(copied)
        definition = drafts.definition_of(copied)
        assert definition is not None
        return cls.from_definition(definition, task=copied.id)

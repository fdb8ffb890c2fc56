"""``${...}`` references to the values a step receives, and to content for cache keys.

``${pipeline.<arg>}`` is the pipeline's argument; ``${<step>.id}`` the id of the Task that
ran a step; ``${<step>.parameters.<Section>/<name>}`` a parameter it ran with;
``${<step>.artifacts.<name>.url|hash|size}`` a field of an artifact it stored (the file
checked against its hash first when a step reads it by URL); ``${<step>.<return>}`` a
function step's return value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any

from clearnb.backend import Backend
from clearnb.errors import ArtifactNotFoundError, PipelineError
from clearnb.execution.runner import NOTEBOOK_ARTIFACT
from clearnb.notebook.parameters import split_key
from clearnb.pipeline import cache, functions, references
from clearnb.pipeline.references import Reference
from clearnb.pipeline.spec import StepSpec, has_reference


class Resolver:
    """Resolves references against the pipeline's arguments and the steps' runs."""

    def __init__(
        self,
        parameters: Mapping[str, Any],
        executed_of: Callable[[str], str | None],
        backend: Backend,
    ) -> None:
        self.parameters = parameters
        self.executed_of = executed_of
        self.backend = backend

    def resolve(self, step: StepSpec, containers: Collection[str] = ()) -> dict[str, Any]:
        """What ``step`` receives: its inputs with every reference replaced by its value.

        A value of a key in ``containers`` (a declared list or dict) written as text with
        references in it (``"[${a.id}, ${b.id}]"``) becomes that list or dict, each
        reference's value in its place.
        """
        lookup = functools.partial(self.lookup, for_function=step.is_function)
        return {
            key: references.substitute_literal(value, lookup)
            if key in containers and isinstance(value, str)
            else references.substitute(value, lookup)
            for key, value in step.inputs().items()
        }

    def _executed(self, ref: Reference) -> str:
        executed = self.executed_of(ref.step)
        if executed is None:
            raise PipelineError(f"{ref.text}: step {ref.step!r} has no run to read from")
        return executed

    def lookup(self, ref: Reference, for_function: bool) -> Any:
        """The value ``ref`` stands for (a function step gets return values as inputs)."""
        if ref.step == "pipeline":
            return self.parameters[ref.name]
        executed = self._executed(ref)
        if ref.kind == "id":
            return executed
        store = self.backend.store
        if ref.kind == "step_parameter":
            section, name = split_key(ref.name)
            values = store.get_task(executed).parameters.get(section, {})
            if name not in values:
                raise PipelineError(
                    f"{ref.text}: step {ref.step!r} ran without a parameter {ref.name!r}"
                )
            return values[name]
        try:
            artifact = store.get_artifact(executed, ref.name)
        except ArtifactNotFoundError as exc:
            stored = ", ".join(repr(n) for n in exc.fields.get("available", [])) or "none"
            raise PipelineError(
                f"{ref.text}: step {ref.step!r} stored no artifact {ref.name!r} (it stored: "
                f"{stored}). Store it in that step with task.upload_artifact({ref.name!r}, "
                "value), or reference one of those it stores",
                step=ref.step,
                artifact=ref.name,
            ) from None
        if ref.kind == "return":
            if for_function:
                return functions.artifact_input(executed, ref.name)
            self.backend.artifacts.verify(artifact)
            return artifact.url
        if ref.field == "url":  # the step reads the file itself: it must be the one written
            self.backend.artifacts.verify(artifact)
        return getattr(artifact, ref.field)

    def content_of(self, ref: Reference) -> Any:
        """What a reference stands for, by content (for cache keys)."""
        if ref.step == "pipeline":
            return self.parameters.get(ref.name)
        executed = self.executed_of(ref.step)
        if executed is None:
            return None
        store = self.backend.store
        if ref.kind == "id":
            hashes = {
                name: a.hash
                for name, a in store.get_artifacts(executed).items()
                if name != NOTEBOOK_ARTIFACT and not a.metadata.get("figure")
            }
            return "artifacts:" + cache.artifacts_digest(hashes)
        if ref.kind == "step_parameter":
            return self.lookup(ref, False)
        return "artifact:" + store.get_artifact(executed, ref.name).hash

    def cache_key(self, step: StepSpec, resolved: Mapping[str, Any], code_hash: str) -> str:
        """The cache key of ``step`` receiving ``resolved``.

        References count as written (replaced by the content they stand for); other values
        as the step receives them (a pre-execute callback may have changed them).
        """
        written = step.inputs()
        parameters = {
            key: written[key] if key in written and has_reference(written[key]) else value
            for key, value in resolved.items()
        }
        return cache.cache_key(code_hash, parameters, self.content_of)

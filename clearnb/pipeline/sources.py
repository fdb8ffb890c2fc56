"""Where a step's notebook comes from: a file, a template in the store, or a function.

A notebook step runs its file, or the notebook of its template (a registered task found by
id, or by project and name); a Python script is read as a notebook (see
:mod:`clearnb.notebook.scripts`). A function step runs a notebook generated from the
function's source. Either way the step has a notebook to run, its overrides, and the hash
of its code (for the cache key).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clearnb.errors import PipelineError, TaskNotFoundError
from clearnb.notebook.files import code_fingerprint, load_notebook
from clearnb.notebook.parameters import NotebookParameters
from clearnb.pipeline import functions
from clearnb.pipeline.spec import Serialization, StepSpec
from clearnb.store import Store, TaskRecord

Stash = Callable[[str, str, Any], dict[str, Any]]
"""``stash(step, argument, value)``: stores a value that cannot travel as JSON and returns
the reference a generated notebook loads it by."""


class Sources:
    """Finds the notebook of each step, in the store and on disk."""

    def __init__(self, store: Store, functions_folder: Path) -> None:
        self.store = store
        self.functions_folder = functions_folder

    def template_of(self, step: StepSpec) -> TaskRecord | None:
        """The template task of ``step`` (None for a file or function step)."""
        if step.base_task_id:
            return self.store.get_task(step.base_task_id)
        if step.base_task_name or step.base_task_project:
            found = self.store.find_tasks(
                project=step.base_task_project, name=step.base_task_name, limit=20
            )
            for record in found:
                if record.notebook and record.task_type != "controller":
                    return record
            raise TaskNotFoundError(
                f"no template {step.base_task_project}/{step.base_task_name}: run the step "
                "notebook once in Jupyter, or the step script once with python (Task.init "
                "registers it), register it with Task.create(project_name=..., "
                "task_name=..., notebook=...), or pass notebook='path.ipynb' (or 'step.py') "
                "to add_step"
            )
        return None

    def check_template(self, step: StepSpec, *, runs_here: bool = True) -> None:
        """Refuse at once a step whose template is found but cannot run: it names no
        notebook, or (for a step that ``runs_here``, not on an agent that may see other
        files) its notebook is no longer where it was registered (moved or renamed). A
        template not found yet is left to :meth:`PipelineController.start` to report."""
        if step.notebook or not (step.base_task_id or step.base_task_name):
            return
        try:
            template = self.template_of(step)
        except TaskNotFoundError:
            named = self.store.find_tasks(
                project=step.base_task_project, name=step.base_task_name, limit=1
            )
            if step.base_task_id or not named:
                return
            template = named[0]  # found by its name, but none of that name has a notebook
        if template is None:
            return
        label = f"{template.project}/{template.name} ({template.id})"
        if not template.notebook:
            raise PipelineError(
                f"step {step.name!r}: the template {label} has no notebook, so it cannot run. "
                "Register the step notebook again (run it once in Jupyter, or "
                "Task.create(project_name=..., task_name=..., notebook='step.ipynb')), or pass "
                "notebook='step.ipynb' to add_step."
            )
        if runs_here and "://" not in template.notebook and not Path(template.notebook).exists():
            raise PipelineError(
                f"step {step.name!r}: the notebook of the template {label}, "
                f"{template.notebook}, is gone (moved or renamed?). Register it again from its "
                "new place (run it once in Jupyter, or Task.create(..., notebook='new/path.ipynb'"
                ")), or pass notebook='new/path.ipynb' to add_step."
            )

    def notebook_of(self, step: StepSpec) -> str:
        """The path of the notebook a notebook step runs."""
        if step.notebook:
            return step.notebook
        template = self.template_of(step)
        if template is None or not template.notebook:
            raise PipelineError(f"the template of step {step.name!r} has no notebook")
        return template.notebook

    def declared(self, step: StepSpec) -> tuple[str, NotebookParameters, Any]:
        """A notebook step's path, the parameters it declares, and its loaded notebook."""
        path = self.notebook_of(step)
        nb = load_notebook(path)
        template = self.template_of(step)
        return path, NotebookParameters.of(nb, template.parameters if template else None), nb

    def materialize(
        self,
        step: StepSpec,
        resolved: Mapping[str, Any],
        stash: Stash,
        serialization: Serialization | None = None,
    ) -> tuple[str, dict[str, Any], str]:
        """The notebook to run, its overrides, and the hash of its code (a function
        step's notebook passes its values with the pipeline's ``serialization``)."""
        if not step.is_function:
            path = self.notebook_of(step)
            return path, dict(resolved), code_fingerprint(load_notebook(path))
        assert step.function is not None
        kwargs: dict[str, Any] = {}
        for key, value in resolved.items():
            kwargs[key] = value if jsonable(value) else stash(step.name, key, value)
        given = {key: None for key in kwargs}  # any type: the run's values come as overrides
        nb = functions.build_notebook(
            step.name,
            step.function,
            {**signature_defaults(step.function), **given},
            step.function_return,
            step.helper_functions,
            (serialization or Serialization()).pair(),
        )
        written = functions.write_notebook(nb, self.functions_folder)
        overrides = {f"{functions.KWARGS_SECTION}/{k}": v for k, v in kwargs.items()}
        return str(written), overrides, code_fingerprint(nb)


def jsonable(value: Any) -> bool:
    """True if ``value`` survives ``json.dumps``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def storable(value: Any) -> Any:
    """``value`` itself if it is JSON-able, else its ``repr`` (what parameters record)."""
    return value if jsonable(value) else repr(value)


def signature_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The function's keyword arguments with their defaults (None where none, or not JSON)."""
    defaults: dict[str, Any] = {}
    for name, parameter in inspect.signature(functions.innermost(function)).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = parameter.default
        defaults[name] = (
            None if default is inspect.Parameter.empty or not jsonable(default) else default
        )
    return defaults


def missing_template(step: StepSpec) -> bool:
    """True if ``step`` names no notebook in any way (a base task factory makes one)."""
    return not (step.notebook or step.base_task_id or step.base_task_name or step.base_task_factory)


def made_when_run(step: StepSpec) -> bool:
    """True if ``step``'s notebook is known only when it runs (its base task factory)."""
    return step.base_task_factory is not None and not (
        step.notebook or step.base_task_id or step.base_task_name
    )

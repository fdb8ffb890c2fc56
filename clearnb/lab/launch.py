"""What the JupyterLab extension changes: runs it starts, templates, renamed notebooks.

Runs started from JupyterLab run in child processes of the Jupyter server
(``python -m clearnb.lab.child``), so a notebook run or a pipeline never blocks the
server; they end with the server (:meth:`Launcher.close`, and the parent-death signal
where Linux has one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from clearnb.errors import ClearnbError
from clearnb.notebook.files import load_notebook
from clearnb.notebook.parameters import NotebookParameters, parse_text, split_key
from clearnb.status import TASK_FINAL

if TYPE_CHECKING:
    from clearnb.backend import Backend

log = logging.getLogger(__name__)

COPIES_FOLDER = "clearnb-runs"
"""Folder under the server's root for read-only copies of executed notebooks that the
server cannot show where they are (outside its root, or in a hidden folder)."""
ACTIONS = ("abort", "retry_failed", "run_again", "force")
"""What ``POST runs/<id>/action`` accepts."""
STARTUP_TIMEOUT = 120.0
"""Seconds a pipeline child has to say which run it started."""


class BadRequest(ClearnbError):
    """A request the extension refuses (HTTP 400); nothing was written."""


class NotFound(ClearnbError):
    """An id or path that names nothing (HTTP 404)."""


class Conflict(ClearnbError):
    """An action that is not possible now (HTTP 409); nothing was written."""


def notebook_path(root_dir: str, path: Any) -> Path:
    """The file at ``path`` (relative to the server's root), refusing what leaves the root."""
    if not isinstance(path, str) or not path.strip():
        raise BadRequest(
            "Give the notebook's path relative to the server's root, e.g. 'step.ipynb'."
        )
    relative = PurePosixPath(path.strip().lstrip("/"))
    if ".." in relative.parts:
        raise BadRequest(f"The path {path!r} leaves the server's root; give a path inside it.")
    root = Path(root_dir).resolve()
    file = (root / relative).resolve()
    if file != root and root not in file.parents:
        raise BadRequest(f"The path {path!r} leaves the server's root; give a path inside it.")
    if not file.is_file():
        raise NotFound(f"There is no notebook at {path!r} under the server's root {root}.")
    return file


def server_path(root_dir: str, file: str | os.PathLike[str]) -> str | None:
    """``file`` relative to the server's root, or None if it is outside or hidden there."""
    root = Path(root_dir).resolve()
    resolved = Path(file).resolve()
    if root not in resolved.parents:
        return None
    relative = resolved.relative_to(root)
    if any(part.startswith(".") for part in relative.parts):
        return None
    return relative.as_posix()


def notebook_parameters(backend: Backend, root_dir: str, path: Any) -> dict[str, Any]:
    """The parameters of the notebook at ``path``, as a typed form shows them."""
    file = notebook_path(root_dir, path)
    nb = _load(file)
    declared = NotebookParameters.of(nb)
    sections = {
        section: [
            {
                "name": parameter.name,
                "type": parameter.type_name,
                "default": _json_or_none(parameter.default) if parameter.literal else None,
                "source": parameter.source,
                "literal": parameter.literal,
            }
            for parameter in found.values()
        ]
        for section, found in declared.sections.items()
        if found
    }
    return {
        "path": path,
        "has_parameters_cell": declared.cell is not None,
        "sections": sections,
        "template": template_of(backend, file),
    }


def typed_overrides(file: Path, overrides: Any) -> dict[str, Any]:
    """The form's text values typed like the notebook's defaults (a text parameter stays
    text; an untyped one is read as a number, bool, None, list or dict where it looks so)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
        raise BadRequest('"overrides" must be an object of {"Section/name": "value"}.')
    declared = NotebookParameters.of(_load(file)).sections
    typed: dict[str, Any] = {}
    for key, value in overrides.items():
        section, name = split_key(key)
        parameter = declared.get(section, {}).get(name)
        if isinstance(value, str) and not (parameter and parameter.type_name == "str"):
            typed[key] = parse_text(value)
        else:
            typed[key] = value
    return typed


def template_of(backend: Backend, file: Path) -> dict[str, Any] | None:
    """The newest template registered for the notebook ``file``, if any."""
    for record in backend.store.find_tasks(status="created"):
        if record.runtime.get("template") and record.notebook == str(file):
            return {"task_id": record.id, "project": record.project, "name": record.name}
    return None


def register_template(backend: Backend, root_dir: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Register the notebook ``body["path"]`` as a template under its project and name."""
    file = notebook_path(root_dir, body.get("path"))
    project, name = body.get("project"), body.get("name")
    for label, value in (("project", project), ("name", name)):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f'Give the template\'s {label} as a non-empty "{label}" text.')
    assert isinstance(project, str) and isinstance(name, str)
    nb = _load(file)
    for record in backend.store.find_tasks(
        project=project.strip(), name=name.strip(), status="created"
    ):
        if record.runtime.get("template"):
            if record.notebook != str(file):
                raise Conflict(
                    f"The template {project}/{name} already registers {record.notebook}; "
                    "choose another name, or rename that template first."
                )
            return {"task_id": record.id, "project": record.project, "name": record.name}
    from clearnb.notebook.files import code_fingerprint
    from clearnb.store.records import TaskRecord

    record = TaskRecord(
        project=project.strip(),
        name=name.strip(),
        notebook=str(file),
        parameters=NotebookParameters.of(nb).defaults(),
        runtime={"code_hash": code_fingerprint(nb), "template": True},
    )
    backend.store.create_task(record)
    return {"task_id": record.id, "project": record.project, "name": record.name}


def notebook_renamed(backend: Backend, root_dir: str, old_path: Any, new_path: Any) -> list[str]:
    """Point the templates and drafts of the notebook (or folder) at ``old_path`` to
    ``new_path``; returns the ids of the tasks changed."""
    for label, value in (("old_path", old_path), ("new_path", new_path)):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f'Give "{label}" as a path relative to the server\'s root.')
    root = Path(root_dir).resolve()
    old = str(root / str(old_path).strip().lstrip("/"))
    new = str(root / str(new_path).strip().lstrip("/"))
    changed = []
    for record in backend.store.find_tasks(status="created"):
        notebook = record.notebook or ""
        if notebook == old:
            moved = new
        elif notebook.startswith(old + os.sep):
            moved = new + notebook[len(old) :]
        else:
            continue
        backend.store.update_task(record.id, notebook=moved)
        changed.append(record.id)
    return changed


def executed_notebook(backend: Backend, root_dir: str, task_id: str) -> str:
    """A path under the server's root where the task's executed notebook can be opened:
    the notebook itself, or a read-only copy in :data:`COPIES_FOLDER`."""
    store = backend.store
    record = store.get_task(task_id)
    artifacts = store.get_artifacts(task_id)
    source: Path | None = None
    if "notebook" in artifacts:
        with contextlib.suppress(ClearnbError, OSError):
            source = backend.artifacts.local_copy(artifacts["notebook"])
    if source is None and record.output_notebook and Path(record.output_notebook).is_file():
        source = Path(record.output_notebook)
    if source is None:
        raise NotFound(f"The task {task_id} has no executed notebook (it has not run yet).")
    shown = server_path(root_dir, source)
    if shown is not None:
        return shown
    folder = Path(root_dir) / COPIES_FOLDER
    folder.mkdir(exist_ok=True)
    copy = folder / f"{_safe(record.name)}-{task_id[:8]}.ipynb"
    if copy.exists():
        copy.chmod(stat.S_IRUSR | stat.S_IWUSR)
    shutil.copyfile(source, copy)
    copy.chmod(stat.S_IRUSR)
    return f"{COPIES_FOLDER}/{copy.name}"


def abort_task(backend: Backend, task_id: str, reason: Any) -> None:
    """Stop the task: out of its queue, or its kernel stopped by whoever runs it."""
    record = backend.store.get_task(task_id)
    if record.status in TASK_FINAL:
        raise Conflict(f"The task {task_id} already ended {record.status}; nothing to stop.")
    text = reason if isinstance(reason, str) and reason.strip() else "aborted from JupyterLab"
    backend.store.request_abort(task_id, text)


class Launcher:
    """Starts runs in child processes and ends those still running when closed."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.children: list[asyncio.subprocess.Process] = []

    async def run_notebook(self, root_dir: str, body: Mapping[str, Any]) -> str:
        """Run the notebook ``body["path"]`` with ``body["overrides"]`` here or on
        ``body["queue"]``; returns the new task's id (the run goes on)."""
        from clearnb.dispatch import enqueue, prepare_run

        file = notebook_path(root_dir, body.get("path"))
        queue = body.get("queue")
        if queue is not None and (not isinstance(queue, str) or not queue.strip()):
            raise BadRequest('"queue" must be a queue name, or null to run here.')
        names = {key: body.get(key) for key in ("project", "name")}
        for key, value in names.items():
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadRequest(f'"{key}" must be a non-empty text, or left out.')
        overrides = typed_overrides(file, body.get("overrides"))
        record = prepare_run(
            self.backend,
            file,
            overrides,
            project_name=names["project"],
            task_name=names["name"],
            check_kernel_installed=queue is None,
        )
        if queue is not None:
            enqueue(self.backend, record.id, queue.strip(), warn=False)
        else:
            await self._start("task", record.id, cwd=file.parent)
        return record.id

    async def pipeline_action(self, run_id: str, action: Any) -> dict[str, Any]:
        """Abort the pipeline run, or start a new run of it (retry failed, again, forced)."""
        from clearnb.lab.views import pipeline_view

        if action not in ACTIONS:
            raise BadRequest(f'"action" must be one of {", ".join(ACTIONS)}, not {action!r}.')
        record = self.backend.store.get_task(run_id)
        allowed = pipeline_view(record)["actions"]
        if action not in allowed:
            raise Conflict(
                f"The run {run_id} is {record.status}: {action} is not possible now "
                f"(possible: {', '.join(allowed) or 'nothing'})."
            )
        if action == "abort":
            self.backend.store.request_abort(run_id, "aborted from JupyterLab")
            return {"run_id": run_id, "started": False}
        process = await self._start("pipeline", run_id, action)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)
        except asyncio.TimeoutError:
            raise Conflict(
                f"The new run of {run_id} did not start within {STARTUP_TIMEOUT:.0f} s."
            ) from None
        words = line.decode(errors="replace").strip().split(" ", 1)
        if words[0] != "run" or len(words) < 2:
            message = words[1] if len(words) > 1 else "it exited before starting"
            raise Conflict(f"The pipeline could not be started again: {message}")
        return {"run_id": words[1], "started": True}

    async def _start(self, *arguments: str, cwd: Path | None = None) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clearnb.lab.child",
            *arguments,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.children = [child for child in self.children if child.returncode is None]
        self.children.append(process)
        return process

    async def close(self, grace: float = 10.0) -> None:
        """End the runs still going (each settles aborted), then kill what is left."""
        running = [child for child in self.children if child.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in running:
            try:
                await asyncio.wait_for(child.wait(), grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        self.children.clear()


def _load(file: Path) -> Any:
    try:
        return load_notebook(file)
    except ClearnbError as exc:
        raise BadRequest(str(exc)) from exc


def _json_or_none(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _safe(name: str) -> str:
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return kept[:60] or "task"

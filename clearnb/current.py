"""The task of this process: the one ``Task.init`` attached to or recorded.

Inside a notebook run by clearnb, the kernel's environment names the run's task
(:data:`TASK_ID_ENV`, as ClearML's ``CLEARML_TASK_ID``) and ``Task.init`` attaches to it.
Run by hand in Jupyter, ``Task.init`` records a new task from the notebook the kernel runs
(told by Jupyter or VS Code), so that it can serve as a template; run as ``python
script.py``, from that script.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearnb.config import TASK_ID_ENV
from clearnb.errors import ClearnbError
from clearnb.notebook.files import code_fingerprint, load_notebook
from clearnb.notebook.parameters import GENERAL, defaults_of
from clearnb.store.records import TaskRecord

if TYPE_CHECKING:
    from clearnb.frameworks import FrameworkHooks
    from clearnb.logger import Logger
    from clearnb.task import Task

log = logging.getLogger(__name__)

__all__ = [
    "CURRENT",
    "TASK_ID_ENV",
    "CurrentTask",
    "attached_task_id",
    "error_of",
    "find_notebook",
    "in_ipython",
    "init_names",
    "interactive_record",
    "running_script",
    "watch_cells",
    "watch_failures",
]


class CurrentTask:
    """This process's task, and the logger of the run's task asked for before ``Task.init``.

    A process has one current task, as in ClearML (``Task.current_task()``), so there is one
    instance, :data:`CURRENT`; hold ``lock`` to read or change the task or the logger, and
    ``frameworks_lock`` for the framework bindings.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.task: Task | None = None
        self.logger: Logger | None = None
        """Made by ``Logger.current_logger()`` in a run before ``Task.init``; the task that
        attaches to the run takes it over, so both report through one logger."""
        self.frameworks_lock = threading.Lock()
        self.frameworks: FrameworkHooks | None = None
        """The framework bindings (:mod:`clearnb.frameworks`), once installed."""


CURRENT = CurrentTask()
"""The current task of this process."""


def attached_task_id() -> str | None:
    """The id of the run's task when clearnb runs this notebook (else None)."""
    return os.environ.get(TASK_ID_ENV) or None


def in_ipython() -> bool:
    """Whether this code runs in an IPython shell or kernel."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and get() is not None


def init_names(
    record: TaskRecord, project_name: str | None, task_name: str | None
) -> dict[str, str]:
    """The names ``Task.init`` gives the run ``record`` that was started without them:
    ``{"project": ..., "name": ...}``, only those the run left open and ``Task.init`` gives."""
    given = {"project": project_name, "name": task_name}
    return {
        field: value
        for field in record.runtime.get("names_from_init", [])
        if (value := given.get(field))
    }


def watch_cells(flush: Callable[[], Any]) -> None:
    """Call ``flush`` at the end of every IPython cell, and when the process exits."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    if shell is not None:
        shell.events.register("post_run_cell", lambda *_: flush())
    atexit.register(flush)


def watch_failures(on_error: Callable[[BaseException], Any]) -> None:
    """Call ``on_error(exc)`` with each exception that escapes the user's code: a failing
    IPython cell, or a script's uncaught exception (before the process exits)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        shell = None
    if shell is not None:

        def after_cell(result: Any) -> None:
            if result.error_in_exec is not None:
                on_error(result.error_in_exec)

        shell.events.register("post_run_cell", after_cell)
        return
    previous = sys.excepthook

    def uncaught(kind: type[BaseException], exc: BaseException, trace: Any) -> None:
        try:
            on_error(exc)
        except Exception:  # the user's traceback matters more than ours
            log.warning("could not record the task's failure", exc_info=True)
        previous(kind, exc, trace)

    sys.excepthook = uncaught


def error_of(exc: BaseException) -> dict[str, Any]:
    """How an exception that ended the user's code is recorded as a task's error."""
    return {
        "reason": f"{type(exc).__name__}: {exc}",
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def running_script() -> Path | None:
    """The script this process runs as ``python script.py`` (``__main__.__file__``).

    None in IPython, for ``python -c`` and the interactive interpreter, and for a package's
    ``__main__.py`` (``python -m package``), which cannot run on its own as a step.
    """
    if in_ipython():
        return None
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not file:
        return None
    path = Path(file)
    if path.suffix != ".py" or path.name == "__main__.py" or not path.is_file():
        return None
    return path.absolute()


def find_notebook(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The notebook this kernel runs, or the script this process runs: given, told by
    Jupyter or VS Code, or the script of ``python script.py``."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    script = running_script()  # first: a script started from a notebook inherits its session
    if script is not None:
        return script
    session = os.environ.get("JPY_SESSION_NAME")
    if session:  # started by a Jupyter server, which knows the notebook's path now
        told = notebook_from_server()
        if told is not None:
            return told
    if session and session.endswith(".ipynb") and Path(session).exists():
        return Path(session).absolute()
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        shell = None
    if shell is not None:
        vscode = shell.user_ns.get("__vsc_ipynb_file__")
        if vscode and Path(vscode).exists():
            return Path(vscode).absolute()
    return None


def notebook_from_server(timeout: float = 2.0) -> Path | None:
    """The notebook of this kernel's session as the Jupyter server that runs it says now.

    The kernel's environment (``JPY_SESSION_NAME``) keeps the path the notebook had when
    the kernel started; after File > Rename it is stale, while the server's sessions follow
    the notebook. None when this is not a kernel of a running server, or it cannot tell.
    """
    try:
        from ipykernel.connect import get_connection_file
        from jupyter_server.serverapp import list_running_servers

        kernel_file = Path(get_connection_file()).name
    except Exception:  # not a kernel, or no server package here
        return None
    kernel_id = kernel_file.removeprefix("kernel-").removesuffix(".json")
    for server in list_running_servers():
        try:
            sessions = _server_sessions(server, timeout)
        except Exception:  # a server that needs a password, or one that is gone
            continue
        for session in sessions:
            if (session.get("kernel") or {}).get("id") == kernel_id and session.get("path"):
                path = Path(server.get("root_dir") or ".") / str(session["path"])
                return path.absolute() if path.exists() else None
    return None


def _server_sessions(server: Mapping[str, Any], timeout: float) -> list[dict[str, Any]]:
    import json
    import urllib.request

    request = urllib.request.Request(str(server["url"]).rstrip("/") + "/api/sessions")
    if server.get("token"):
        request.add_header("Authorization", f"token {server['token']}")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        found = json.loads(answer.read())
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def ended_for_other_notebook(task: Any, notebook: str | os.PathLike[str] | None) -> bool:
    """End ``task`` (the one open in this process, running) if ``notebook`` names another
    notebook than its own; True if it was ended."""
    if notebook is None or task.status != "running":
        return False
    if str(find_notebook(notebook)) == task.notebook:
        return False
    task.flush()
    task.mark_completed()
    return True


def interactive_record(
    project_name: str | None,
    task_name: str | None,
    task_type: str,
    tags: Sequence[str] | None,
    notebook: str | os.PathLike[str] | None,
) -> TaskRecord:
    """The record of a task started by hand (status ``running``), not yet stored.

    The notebook (``notebook``, the one this kernel runs, or the script this process
    runs) is its template: its parameters cell gives the ``General`` section, its code
    the fingerprint. Without a readable notebook the task is recorded all the same, with a
    warning.
    """
    path = find_notebook(notebook)
    parameters: dict[str, dict[str, Any]] = {}
    runtime: dict[str, Any] = {"interactive": True}
    if path is not None:
        try:
            nb = load_notebook(path)
            parameters = {GENERAL: defaults_of(nb)} if defaults_of(nb) else {}
            runtime["code_hash"] = code_fingerprint(nb)
            # a pipeline step copies it, as it copies Task.create's; enqueued, it runs itself
            runtime["template"] = True
        except ClearnbError as exc:
            log.warning("not registering %s as a template: %s", path, exc)
            path = None
    if path is None:
        log.warning(
            "clearnb could not tell which notebook or script this is, so the task cannot "
            "serve as a template; pass Task.init(..., notebook='path/to/step.ipynb')."
        )
    return TaskRecord(
        project=project_name or "default",
        name=task_name or (Path(path).stem if path else "untitled"),
        status="running",
        task_type=task_type,
        notebook=str(path) if path else None,
        parameters=parameters,
        tags=list(tags or []),
        runtime=runtime,
        started=time.time(),
    )

"""A step notebook renamed in Jupyter stays a template that can run (or says so at once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController, Task
from clearnb.errors import PipelineError
from tests.helpers import isolated_home, notebook, wait_until


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_home(tmp_path / "home", monkeypatch)


def test_a_template_without_a_notebook_is_refused_at_add_step(home: Path) -> None:
    from clearnb.backend import Backend
    from clearnb.store.records import TaskRecord

    store = Backend.for_config().store
    store.create_task(TaskRecord(project="p", name="empty", runtime={"template": True}))
    pipe = PipelineController(name="x", project="p")
    with pytest.raises(PipelineError, match=r"has no notebook.*notebook='step.ipynb'"):
        pipe.add_step("s", base_task_project="p", base_task_name="empty")
    assert pipe.get_pipeline_dag() == {}


def test_a_template_whose_notebook_moved_is_refused_at_add_step_with_the_fix(
    home: Path, tmp_path: Path
) -> None:
    step = tmp_path / "step.ipynb"
    shutil.copy(notebook("pipeline/trivial"), step)
    template = Task.create(project_name="p", task_name="step", notebook=str(step))
    step.rename(tmp_path / "renamed.ipynb")
    pipe = PipelineController(name="x", project="p")
    with pytest.raises(PipelineError, match=r"is gone \(moved or renamed\?\).*new/path"):
        pipe.add_step("s", base_task_id=template.id)
    # on an agent's queue the file may be elsewhere: left for the agent
    assert pipe.add_step("q", base_task_id=template.id, execution_queue="remote")


def test_notebook_given_to_task_init_wins_over_the_earlier_task(home: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first.ipynb", tmp_path / "second.ipynb"
    shutil.copy(notebook("params"), first)
    shutil.copy(notebook("pipeline/trivial"), second)
    one = Task.init(project_name="p", task_name="one", notebook=str(first))
    try:
        assert Task.init(project_name="p", task_name="one", notebook=str(first)).id == one.id
        two = Task.init(project_name="p", task_name="two", notebook=str(second))
        assert two.id != one.id and two.notebook == str(second)
        assert one.reload().status == "completed"
        assert two.get_parameters_as_dict()["General"]["x"] == 0
    finally:
        Task.current_task() and Task.current_task().close()  # type: ignore[union-attr]


@pytest.fixture
def jupyter_server(tmp_path: Path, home: Path) -> Iterator[dict[str, Any]]:
    """A real Jupyter server (a process of its own) serving ``tmp_path / 'root'``."""
    root = tmp_path / "root"
    root.mkdir()
    runtime = tmp_path / "runtime"
    token = "t" * 24
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "CLEARNB_HOME": str(home)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--port=0",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.jpserver_extensions={'clearnb.lab': False}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        info = wait_until(
            lambda: next(iter(sorted(runtime.glob("jpserver-*.json"))), None), 60, "the server"
        )
        server = json.loads(Path(info).read_text())
        yield {"url": server["url"], "token": token, "root": root, "runtime": runtime, "env": env}
    finally:
        process.terminate()
        process.wait(30)


def call(server: dict[str, Any], method: str, route: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        server["url"] + route,
        method=method,
        data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"token {server['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
    return json.loads(text) if text else None


@pytest.mark.slow
def test_a_notebook_renamed_in_jupyter_registers_under_its_new_path(
    jupyter_server: dict[str, Any],
) -> None:
    from jupyter_client import BlockingKernelClient

    root = jupyter_server["root"]
    shutil.copy(notebook("params"), root / "step.ipynb")
    session = call(
        jupyter_server,
        "POST",
        "api/sessions",
        {
            "path": "step.ipynb",
            "type": "notebook",
            "name": "step.ipynb",
            "kernel": {"name": "python3"},
        },
    )
    # File > Rename in JupyterLab: the file moves, then its session follows it
    call(jupyter_server, "PATCH", "api/contents/step.ipynb", {"path": "renamed.ipynb"})
    call(jupyter_server, "PATCH", f"api/sessions/{session['id']}", {"path": "renamed.ipynb"})
    client = BlockingKernelClient(
        connection_file=str(jupyter_server["runtime"] / f"kernel-{session['kernel']['id']}.json")
    )
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        code = (
            "import os; from clearnb import Task\n"
            "t = Task.init(project_name='p', task_name='renamed')\n"
            "print('ENV', os.environ.get('JPY_SESSION_NAME'))\n"
            "print('NOTEBOOK', t.notebook)"
        )
        lines: list[str] = []
        client.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda m: lines.append(
                m["content"].get("text", "") if m["msg_type"] == "stream" else ""
            ),
        )
    finally:
        client.stop_channels()
    printed = "".join(lines)
    assert f"ENV {root / 'step.ipynb'}" in printed, printed  # the kernel's stale path
    assert f"NOTEBOOK {root / 'renamed.ipynb'}" in printed, printed

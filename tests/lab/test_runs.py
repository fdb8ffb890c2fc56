"""Runs started and stopped through ``/clearnb/api``: real kernels in the server's children."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from clearnb.backend import Backend
from clearnb.lab.launch import COPIES_FOLDER
from clearnb.pipeline.controller import PipelineController
from tests.helpers import notebook, process_exists
from tests.lab.conftest import Api

pytestmark = pytest.mark.slow


def copy_notebook(root: Path, name: str, target: str | None = None) -> str:
    relative = target or Path(name).name + ".ipynb"
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook(name), root / relative)
    return relative


async def settled(backend: Backend, task_id: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        record = backend.store.get_task(task_id)
        if record.status in ("completed", "failed", "aborted"):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {record.status} after {timeout} s")
        await asyncio.sleep(0.1)


async def test_a_notebook_run_here_takes_its_changed_parameter_and_opens_read_only(
    api: Api, backend: Backend, jp_root_dir: Path, jp_fetch: Any
) -> None:
    path = copy_notebook(jp_root_dir, "params", "steps/params.ipynb")
    code, answer = await api("notebook/run", body={"path": path, "overrides": {"count": "41"}})
    assert code == 200
    record = await settled(backend, answer["task_id"])
    assert record.status == "completed", record.error
    assert record.parameters["General"]["count"] == 41

    code, detail = await api(f"tasks/{record.id}")
    assert code == 200 and detail["executed_notebook"]
    assert detail["overrides"] == {"General/count": 41}
    assert "seen" in [artifact["name"] for artifact in detail["artifacts"]]

    code, opened = await api(f"tasks/{record.id}/notebook", body={})
    assert code == 200 and opened["path"].startswith(f"{COPIES_FOLDER}/")
    copy = jp_root_dir / opened["path"]
    assert not copy.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    served = await jp_fetch("api", "contents", *opened["path"].split("/"))
    content = json.loads(served.body)["content"]
    injected = [
        c for c in content["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
    ]
    assert "count = 41" in "".join(injected[0]["source"])
    # opened again (a newer copy over the read-only one)
    assert (await api(f"tasks/{record.id}/notebook", body={}))[0] == 200


async def test_a_failed_runs_details_carry_its_traceback(
    api: Api, backend: Backend, jp_root_dir: Path
) -> None:
    path = copy_notebook(jp_root_dir, "raises")
    _, answer = await api("notebook/run", body={"path": path, "overrides": {"value": "7"}})
    record = await settled(backend, answer["task_id"])
    assert record.status == "failed"
    _, detail = await api(f"tasks/{record.id}")
    assert "ValueError" in detail["error"]["reason"]
    assert "boom 7" in detail["error"]["traceback"]
    assert "\x1b[" not in detail["error"]["traceback"]
    assert "before the error" in detail["logs"]["stdout"]
    assert detail["task"]["status"] == "failed" and detail["task"]["error"]


async def test_a_run_here_is_aborted_and_its_process_ends(
    api: Api, backend: Backend, jp_root_dir: Path, jp_serverapp: Any
) -> None:
    path = copy_notebook(jp_root_dir, "loops")
    _, answer = await api("notebook/run", body={"path": path})
    task_id = answer["task_id"]
    app = next(iter(jp_serverapp.extension_manager.extension_apps["clearnb.lab"]))
    launcher = app.lab_state.launcher
    child = launcher.children[-1]
    deadline = time.monotonic() + 60
    while backend.store.get_task(task_id).status != "running" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    code, _ = await api(f"tasks/{task_id}/abort", body={"reason": "enough"})
    assert code == 200
    record = await settled(backend, task_id, timeout=30)
    assert record.status == "aborted" and "enough" in record.error["reason"]
    await asyncio.wait_for(child.wait(), 30)
    assert not process_exists(child.pid)


async def test_runs_started_here_end_with_the_server(
    api: Api, backend: Backend, jp_root_dir: Path, jp_serverapp: Any
) -> None:
    path = copy_notebook(jp_root_dir, "loops")
    _, answer = await api("notebook/run", body={"path": path})
    app = next(iter(jp_serverapp.extension_manager.extension_apps["clearnb.lab"]))
    child = app.lab_state.launcher.children[-1]
    while backend.store.get_task(answer["task_id"]).status != "running":
        await asyncio.sleep(0.1)
    await app.stop_extension()
    record = await settled(backend, answer["task_id"], timeout=30)
    assert record.status == "aborted" and "Jupyter server" in record.error["reason"]
    assert child.returncode is not None and not process_exists(child.pid)


async def test_a_failed_pipeline_is_retried_and_run_again(
    api: Api, backend: Backend, tmp_path: Path
) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    broken = steps / "maybe_fail.ipynb"
    shutil.copy(notebook("pipeline/maybe_fail"), broken)
    shutil.copy(notebook("pipeline/trivial"), steps / "trivial.ipynb")
    pipe = PipelineController(name="lab retry", project="lab")
    pipe.add_step("first", notebook=str(steps / "trivial.ipynb"))
    pipe.add_step("broken", parents=["first"], notebook=str(broken))
    await asyncio.get_running_loop().run_in_executor(None, lambda: pipe.start(wait=True))
    pipe.stop()
    assert not pipe.is_successful()
    _, view = await api(f"runs/{pipe.id}")
    assert view["actions"] == ["retry_failed", "run_again", "force"]
    assert view["steps"]["broken"]["status"] == "failed"

    nb = nbformat.read(broken, 4)
    nb.cells[0].source = "fail = False\nmessage = 'fixed'"
    nbformat.write(nb, broken)
    code, answer = await api(f"runs/{pipe.id}/action", body={"action": "retry_failed"})
    assert code == 200 and answer["started"] and answer["run_id"] != pipe.id
    retried = await settled(backend, answer["run_id"])
    assert retried.status == "completed", retried.error
    _, view = await api(f"runs/{retried.id}")
    assert view["steps"]["broken"]["status"] == "completed"
    assert (
        view["steps"]["first"]["task_id"]
        == (await api(f"runs/{pipe.id}"))[1]["steps"]["first"]["task_id"]
    )

    code, again = await api(f"runs/{retried.id}/action", body={"action": "force"})
    assert code == 200
    forced = await settled(backend, again["run_id"])
    assert forced.status == "completed"
    _, view = await api(f"runs/{forced.id}")
    assert {step["status"] for step in view["steps"].values()} == {"completed"}

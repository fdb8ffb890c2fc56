"""The ``/clearnb/api`` routes on a real Jupyter server, against a real SQLite store."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from clearnb.backend import Backend
from clearnb.store.pipelines import CONTROLLER_TASK_TYPE, write_run
from clearnb.store.records import TaskRecord, WorkerRecord
from tests.helpers import notebook
from tests.lab.conftest import Api


def add_task(backend: Backend, **fields: Any) -> TaskRecord:
    record = TaskRecord(**{"project": "lab", "name": "a task", **fields})
    return backend.store.create_task(record)


def add_pipeline_run(backend: Backend, status: str = "running", **fields: Any) -> TaskRecord:
    record = add_task(
        backend, name="demo", task_type=CONTROLLER_TASK_TYPE, status="running", **fields
    )
    now = time.time()
    nodes = {
        "prepare": {
            "name": "prepare",
            "parents": [],
            "status": "completed",
            "started": now - 5,
            "ended": now - 3,
            "executed": None,
            "kind": "notebook",
            "source": "a.ipynb",
            "parameters": {"General/n": 3},
        },
        "train": {
            "name": "train",
            "parents": ["prepare"],
            "status": "running",
            "started": now - 3,
            "ended": None,
            "executed": None,
            "kind": "notebook",
            "source": "b.ipynb",
            "parameters": {"General/rate": "${prepare.n}"},
            "resolved": {"General/rate": 3},
        },
        "report": {
            "name": "report",
            "parents": ["train"],
            "status": "pending",
            "kind": "notebook",
            "source": "c.ipynb",
        },
    }
    write_run(
        backend.store,
        record.id,
        {
            "name": "demo",
            "project": "lab",
            "status": status,
            "started": now - 5,
            "ended": None if status == "running" else now,
            "order": list(nodes),
            "nodes": nodes,
        },
    )
    return backend.store.get_task(record.id)


async def test_every_route_needs_a_login(
    http_server_client: Any, jp_serverapp: Any, jp_http_port: int, jp_base_url: str
) -> None:
    client = AsyncHTTPClient()
    for method, route in [
        ("GET", "store"),
        ("GET", "runs"),
        ("GET", "queues"),
        ("GET", "events"),
        ("POST", "notebook/run"),
        ("POST", "tasks/abc/abort"),
    ]:
        url = f"http://localhost:{jp_http_port}{jp_base_url}clearnb/api/{route}"
        body = "{}" if method == "POST" else None
        response = await client.fetch(
            url, method=method, body=body, raise_error=False, request_timeout=5
        )
        assert response.code == 403, (route, response.code)
        assert "log in" in json.loads(response.body)["error"]


async def test_the_store_the_server_sees_is_shown(api: Api, lab_home: Path) -> None:
    code, answer = await api("store")
    assert code == 200
    assert answer["home"] == str(lab_home)
    assert answer["store_url"].endswith("clearnb.db")
    assert answer["version"]


async def test_runs_are_listed_newest_first_and_filtered(api: Api, backend: Backend) -> None:
    old = add_task(
        backend,
        name="old one",
        status="completed",
        created=time.time() - 100,
        started=time.time() - 100,
        completed=time.time() - 90,
    )
    failed = add_task(
        backend,
        name="broken",
        project="other",
        status="failed",
        error={"reason": "cell 3 raised ValueError"},
    )
    run = add_pipeline_run(backend)
    add_task(backend, name="a step", parent=run.id, status="running")
    add_task(backend, name="template", runtime={"template": True})

    code, answer = await api("runs")
    assert code == 200
    assert [row["id"] for row in answer["runs"]] == [run.id, failed.id, old.id]
    pipeline = answer["runs"][0]
    assert pipeline["kind"] == "pipeline" and pipeline["status"] == "running"
    assert pipeline["progress"]["done"] == 1 and pipeline["progress"]["total"] == 3
    assert pipeline["progress"]["running"] == ["train"]
    assert answer["runs"][1]["error"] == "cell 3 raised ValueError"
    assert answer["runs"][2]["duration"] == pytest.approx(10, abs=0.01)

    assert [r["id"] for r in (await api("runs", params={"kind": "task"}))[1]["runs"]] == [
        failed.id,
        old.id,
    ]
    assert [
        r["id"] for r in (await api("runs", params={"status": "failed,completed"}))[1]["runs"]
    ] == [failed.id, old.id]
    assert [r["id"] for r in (await api("runs", params={"project": "other"}))[1]["runs"]] == [
        failed.id
    ]
    assert [r["id"] for r in (await api("runs", params={"text": "BROK"}))[1]["runs"]] == [failed.id]
    assert [r["id"] for r in (await api("runs", params={"text": old.id[:6]}))[1]["runs"]] == [
        old.id
    ]
    assert len((await api("runs", params={"limit": "2"}))[1]["runs"]) == 2
    with_steps = (await api("runs", params={"steps": "1"}))[1]["runs"]
    assert "a step" in [row["name"] for row in with_steps]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"kind": "everything"}, "kind must be one of"),
        ({"limit": "ten"}, "whole number"),
        ({"limit": "0"}, "between 1 and"),
    ],
)
async def test_bad_filters_are_refused_with_what_to_send(
    api: Api, params: dict[str, str], words: str
) -> None:
    code, answer = await api("runs", params=params)
    assert code == 400
    assert words in answer["error"] and answer["status"] == 400


async def test_a_pipeline_run_has_its_graph_steps_and_actions(api: Api, backend: Backend) -> None:
    run = add_pipeline_run(backend)
    code, answer = await api(f"runs/{run.id}")
    assert code == 200
    assert answer["order"] == ["prepare", "train", "report"]
    assert [node["name"] for node in answer["graph"]["nodes"]] == answer["order"]
    assert answer["graph"]["edges"] == [["prepare", "train"], ["train", "report"]]
    assert answer["steps"]["train"]["parameters"] == {"General/rate": 3}
    assert answer["steps"]["prepare"]["duration"] == pytest.approx(2, abs=0.01)
    assert answer["actions"] == ["abort"]

    finished = add_pipeline_run(backend, status="failed")
    assert (await api(f"runs/{finished.id}"))[1]["actions"] == [
        "retry_failed",
        "run_again",
        "force",
    ]


async def test_unknown_ids_are_404_with_a_json_error(api: Api) -> None:
    for route in ("runs/nosuchid", "tasks/nosuchid"):
        code, answer = await api(route)
        assert code == 404 and "nosuchid" in answer["error"]
    code, answer = await api("tasks/nosuchid/abort", body={})
    assert code == 404


async def test_bad_bodies_are_refused_and_write_nothing(api: Api, backend: Backend) -> None:
    run = add_pipeline_run(backend)
    before = backend.store.get_task(run.id)
    for raw in (b"not json", b"[1, 2]"):
        code, answer = await api(f"runs/{run.id}/action", raw=raw)
        assert code == 400 and "JSON" in answer["error"]
    code, answer = await api(f"runs/{run.id}/action", body={"action": "explode"})
    assert code == 400 and "abort, retry_failed" in answer["error"]
    code, answer = await api(f"runs/{run.id}/action", body={"action": "force"})
    assert code == 409 and "running" in answer["error"]
    after = backend.store.get_task(run.id)
    assert after.abort_requested is None and after.last_update == before.last_update
    assert len(backend.store.find_tasks()) == 1


async def test_a_pipeline_run_is_aborted_through_its_task(api: Api, backend: Backend) -> None:
    run = add_pipeline_run(backend)
    code, answer = await api(f"runs/{run.id[:8]}/action", body={"action": "abort"})
    assert code == 200 and answer == {"run_id": run.id, "started": False}
    assert backend.store.get_task(run.id).abort_requested == "aborted from JupyterLab"


async def test_a_queued_task_is_aborted_and_a_finished_one_is_left_alone(
    api: Api, backend: Backend
) -> None:
    queued = add_task(backend, notebook="x.ipynb", runtime={"injected": {}})
    backend.store.enqueue_task(queued.id, "gpu")
    code, answer = await api(f"tasks/{queued.id[:8]}/abort", body={"reason": "not needed"})
    assert code == 200 and answer["task"]["status"] == "aborted", "a short id is enough"
    assert backend.store.get_task(queued.id).status == "aborted"

    done = add_task(backend, status="completed")
    code, answer = await api(f"tasks/{done.id}/abort", body={})
    assert code == 409 and "already ended completed" in answer["error"]
    assert backend.store.get_task(done.id).status == "completed"


async def test_queues_show_what_waits_and_agents_what_they_run(api: Api, backend: Backend) -> None:
    waiting = add_task(backend, name="waits", notebook="x.ipynb", runtime={"injected": {}})
    backend.store.enqueue_task(waiting.id, "cpu")
    running = add_task(backend, name="runs", status="running", worker="host:1")
    backend.store.put_worker(
        WorkerRecord(
            id="host:1",
            host="host",
            pid=1,
            queues=["cpu", "io"],
            running=[running.id],
            status="busy",
        )
    )
    backend.store.put_worker(
        WorkerRecord(id="old:2", host="old", pid=2, queues=["io"], last_seen=time.time() - 600)
    )
    code, answer = await api("queues")
    assert code == 200
    queues = {queue["name"]: queue for queue in answer["queues"]}
    assert [row["id"] for row in queues["cpu"]["waiting"]] == [waiting.id]
    assert queues["cpu"]["agents"] == ["host:1"] and queues["io"]["agents"] == ["host:1"]
    agents = {agent["name"]: agent for agent in answer["agents"]}
    assert agents["host:1"]["alive"] and [r["id"] for r in agents["host:1"]["running"]] == [
        running.id
    ]
    assert not agents["old:2"]["alive"] and agents["old:2"]["age"] > 500


def copy_notebook(root: Path, name: str, target: str | None = None) -> str:
    relative = target or name
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook(name.removesuffix(".ipynb")), root / relative)
    return relative


async def test_a_notebooks_parameters_are_read_for_a_typed_form(
    api: Api, jp_root_dir: Path
) -> None:
    path = copy_notebook(jp_root_dir, "params.ipynb", "steps/params.ipynb")
    code, answer = await api("notebook/parameters", params={"path": path})
    assert code == 200 and answer["has_parameters_cell"] and answer["template"] is None
    general = {p["name"]: p for p in answer["sections"]["General"]}
    assert general["count"]["type"] == "int" and general["count"]["default"] == 1
    assert general["ratio"]["type"] == "float" and general["label"]["type"] == "str"
    assert general["anything"]["type"] == "any" and general["anything"]["source"] == "None"
    extra = {p["name"]: p["default"] for p in answer["sections"]["Extra"]}
    assert extra == {"depth": 3, "mode": "fast"}


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("missing.ipynb", 404, "There is no notebook"),
        ("../outside.ipynb", 400, "leaves the server's root"),
        ("", 400, "relative to the server's root"),
        ("notes.txt", 400, ""),
    ],
)
async def test_bad_notebook_paths_are_refused(
    api: Api, jp_root_dir: Path, path: str, code: int, words: str
) -> None:
    (jp_root_dir / "notes.txt").write_text("not a notebook")
    (jp_root_dir.parent / "outside.ipynb").write_text("{}")
    got, answer = await api("notebook/parameters", params={"path": path})
    assert got == code and words in answer["error"]


async def test_a_notebook_is_registered_as_a_template_once(
    api: Api, backend: Backend, jp_root_dir: Path
) -> None:
    path = copy_notebook(jp_root_dir, "params.ipynb")
    code, first = await api(
        "notebook/register", body={"path": path, "project": "lab", "name": "params"}
    )
    assert code == 200
    template = backend.store.get_task(first["task_id"])
    assert template.runtime["template"] and template.notebook == str(jp_root_dir / path)
    assert template.parameters["General"]["count"] == 1
    code, again = await api(
        "notebook/register", body={"path": path, "project": "lab", "name": "params"}
    )
    assert code == 200 and again["task_id"] == first["task_id"]
    other = copy_notebook(jp_root_dir, "raises.ipynb")
    code, answer = await api(
        "notebook/register", body={"path": other, "project": "lab", "name": "params"}
    )
    assert code == 409 and "already registers" in answer["error"]
    code, answer = await api("notebook/register", body={"path": path, "project": "", "name": "x"})
    assert code == 400 and "project" in answer["error"]
    assert len(backend.store.find_tasks()) == 1
    assert (await api("notebook/parameters", params={"path": path}))[1]["template"][
        "task_id"
    ] == first["task_id"]


async def test_a_renamed_notebook_stays_its_templates_notebook(
    api: Api, backend: Backend, jp_root_dir: Path, jp_fetch: Any
) -> None:
    path = copy_notebook(jp_root_dir, "params.ipynb", "work/step.ipynb")
    _, made = await api("notebook/register", body={"path": path, "project": "lab", "name": "step"})
    # renamed through the server's contents API (as JupyterLab's File > Rename does)
    await jp_fetch(
        "api",
        "contents",
        "work",
        "step.ipynb",
        method="PATCH",
        body=json.dumps({"path": "work/renamed.ipynb"}),
    )
    renamed = str(jp_root_dir / "work/renamed.ipynb")
    await wait_for(
        lambda: backend.store.get_task(made["task_id"]).notebook == renamed, "the rename"
    )
    # a folder moved: told by the front end
    shutil.move(jp_root_dir / "work", jp_root_dir / "moved")
    code, answer = await api("notebook/renamed", body={"old_path": "work", "new_path": "moved"})
    assert code == 200 and answer["updated"] == [made["task_id"]]
    assert backend.store.get_task(made["task_id"]).notebook == str(
        jp_root_dir / "moved/renamed.ipynb"
    )
    code, answer = await api("notebook/renamed", body={"old_path": 3, "new_path": "x"})
    assert code == 400


async def test_a_bad_override_is_refused_before_any_task_is_made(
    api: Api, backend: Backend, jp_root_dir: Path
) -> None:
    path = copy_notebook(jp_root_dir, "params.ipynb")
    code, answer = await api("notebook/run", body={"path": path, "overrides": {"count": "many"}})
    assert code == 400 and "count" in answer["error"]
    code, answer = await api("notebook/run", body={"path": path, "overrides": ["count"]})
    assert code == 400 and "overrides" in answer["error"]
    code, answer = await api("notebook/run", body={"path": path, "queue": ""})
    assert code == 400 and "queue" in answer["error"]
    assert backend.store.find_tasks() == []


async def test_a_notebook_sent_to_a_queue_waits_there_typed(
    api: Api, backend: Backend, jp_root_dir: Path
) -> None:
    path = copy_notebook(jp_root_dir, "params.ipynb")
    code, answer = await api(
        "notebook/run",
        body={
            "path": path,
            "queue": "cpu",
            "name": "from lab",
            "overrides": {"count": "7", "label": "7", "anything": "[1, 2]", "Extra/depth": "5"},
        },
    )
    assert code == 200
    record = backend.store.get_task(answer["task_id"])
    assert record.status == "queued" and record.queue == "cpu" and record.name == "from lab"
    assert record.parameters["General"]["count"] == 7
    assert record.parameters["General"]["label"] == "7"
    assert record.parameters["General"]["anything"] == [1, 2]
    assert record.parameters["Extra"]["depth"] == 5


async def test_the_event_stream_tells_each_change_once(
    api: Api, backend: Backend, jp_fetch: Any
) -> None:
    received: list[dict[str, Any]] = []
    buffer = bytearray()

    def on_chunk(chunk: bytes) -> None:
        buffer.extend(chunk)
        while b"\n\n" in buffer:
            message, _, rest = bytes(buffer).partition(b"\n\n")
            buffer[:] = rest
            lines = dict(
                line.split(": ", 1) for line in message.decode().splitlines() if ": " in line
            )
            if "data" in lines:
                received.append({"event": lines.get("event"), **json.loads(lines["data"])})

    import asyncio

    stream = asyncio.ensure_future(
        jp_fetch(
            "clearnb",
            "api",
            "events",
            streaming_callback=on_chunk,
            request_timeout=30,
            raise_error=False,
        )
    )
    await wait_for(lambda: received, "the hello message")
    assert received[0]["event"] == "hello" and received[0]["reload"] is False
    record = add_task(backend, name="watched")
    await wait_for(lambda: any(record.id in m["tasks"] for m in received), "the new task")
    backend.store.update_task(record.id, status="running", started=time.time())
    await wait_for(
        lambda: any(
            r["id"] == record.id and r["status"] == "running" for m in received for r in m["runs"]
        ),
        "the status change",
    )
    await asyncio.sleep(0.6)  # further looks at an unchanged store tell nothing
    told = [m for m in received if record.id in m["tasks"]]
    assert len(told) == 2, told
    stream.cancel()


async def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not arrive within {timeout} s")
        await asyncio.sleep(0.05)

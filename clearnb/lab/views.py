"""What the JupyterLab extension shows, as plain JSON-ready data read from the store.

One row per pipeline run or task (:func:`run_row`), a pipeline run's graph and steps
(:func:`pipeline_view`), one task's details (:func:`task_detail`), and the queues with the
agents that serve them (:func:`queues_view`). Nothing here writes to the store.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from clearnb.cli.runs import effective_status
from clearnb.execution.capture import strip_ansi
from clearnb.status import PIPELINE_FINAL, RUNNING, STEP_FINISHED, TASK_FINAL
from clearnb.store.pipelines import CONTROLLER_TASK_TYPE, run_document
from clearnb.widgets.dag import layout

if TYPE_CHECKING:
    from clearnb.backend import Backend
    from clearnb.store import Store
    from clearnb.store.records import ArtifactRecord, TaskRecord, WorkerRecord

PIPELINE = "pipeline"
TASK = "task"
KINDS = ("all", PIPELINE, TASK)
"""What ``GET runs?kind=`` accepts."""
PREVIEW_IMAGE_BYTES = 400_000
"""Images up to this size are sent inline with a task's details."""
LOG_CHARACTERS = 20_000
"""Characters of each output stream sent with a task's details (the end of it)."""
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif"}
"""Artifact files shown as pictures, by their name's ending."""
AGENT_ALIVE_WITHIN = 30.0
"""Seconds since an agent's last heartbeat within which it counts as alive."""


def kind_of(record: TaskRecord) -> str:
    """``pipeline`` for a pipeline run's Task, ``task`` for any other."""
    if record.task_type == CONTROLLER_TASK_TYPE and run_document(record) is not None:
        return PIPELINE
    return TASK


def run_row(record: TaskRecord, progress: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One line of the runs sidebar for ``record``; ``progress`` is a running task's last
    known cell (``{"cell": i, "cells": n}``), if the caller follows its events."""
    document = run_document(record) if record.task_type == CONTROLLER_TASK_TYPE else None
    row: dict[str, Any] = {
        "id": record.id,
        "kind": PIPELINE if document is not None else TASK,
        "project": record.project,
        "name": record.name,
        "status": record.status,
        "created": record.created,
        "started": record.started,
        "completed": record.completed,
        "duration": _duration(record.started, record.completed, record.status in TASK_FINAL),
        "progress": {},
        "queue": record.queue,
        "parent": record.parent,
        "tags": list(record.tags),
        "error": (record.error or {}).get("reason"),
        "last_update": record.last_update,
    }
    if document is not None:
        status = effective_status(record, document)
        nodes: Mapping[str, Mapping[str, Any]] = document.get("nodes") or {}
        done = sum(1 for node in nodes.values() if node.get("status") in STEP_FINISHED)
        running = [name for name, node in nodes.items() if node.get("status") == RUNNING]
        row.update(
            name=document.get("name") or record.name,
            project=document.get("project") or record.project,
            status=status,
            started=document.get("started") or record.started,
            completed=document.get("ended") or record.completed,
            progress={
                "done": done,
                "total": len(nodes),
                "running": running,
                "label": f"{done}/{len(nodes)} steps",
            },
        )
        row["duration"] = _duration(row["started"], row["completed"], status in PIPELINE_FINAL)
    elif record.status == RUNNING and progress and progress.get("cells"):
        cell, cells = int(progress.get("cell", 0)), int(progress["cells"])
        row["progress"] = {"done": cell, "total": cells, "label": f"cell {cell + 1}/{cells}"}
    return row


def matches(row: Mapping[str, Any], *, kind: str, statuses: Iterable[str], text: str) -> bool:
    """Whether a row passes the sidebar's filters (``statuses`` empty: any status)."""
    wanted = set(statuses)
    if kind != "all" and row["kind"] != kind:
        return False
    if wanted and row["status"] not in wanted:
        return False
    if text:
        needle = text.casefold()
        haystack = (str(row["name"]).casefold(), str(row["project"]).casefold())
        if not any(needle in part for part in haystack) and not row["id"].startswith(needle):
            return False
    return True


def pipeline_view(record: TaskRecord) -> dict[str, Any]:
    """A pipeline run: its row, the graph the widget's canvas draws, its steps."""
    document = run_document(record) or {}
    nodes: Mapping[str, Mapping[str, Any]] = document.get("nodes") or {}
    order = [name for name in document.get("order") or nodes if name in nodes]
    row = run_row(record)
    steps = {}
    for name in order:
        node = nodes[name]
        started, ended = node.get("started"), node.get("ended")
        steps[name] = {
            "name": name,
            "status": node.get("status", "pending"),
            "parents": list(node.get("parents") or []),
            "kind": node.get("kind", "notebook"),
            "source": node.get("source"),
            "task_id": node.get("executed"),
            "started": started,
            "ended": ended,
            "duration": _duration(started, ended, node.get("status") in STEP_FINISHED),
            "error": (node.get("error") or {}).get("reason"),
            "parameters": dict(node.get("resolved") or node.get("parameters") or {}),
            "queue": node.get("queue"),
            "warnings": list(node.get("warnings") or []),
        }
    return {
        "run": row,
        "graph": layout(nodes, order),
        "steps": steps,
        "order": order,
        "parameters": dict(record.parameters.get("Args") or {}),
        "actions": pipeline_actions(row["status"], steps),
    }


def pipeline_actions(status: str, steps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The actions a pipeline run in ``status`` allows now."""
    if status not in PIPELINE_FINAL:
        return ["abort"]
    actions = ["run_again", "force"]
    if any(
        step["status"] in ("failed", "aborted", "skipped", "pending") for step in steps.values()
    ):
        actions.insert(0, "retry_failed")
    return actions


def task_detail(
    backend: Backend, record: TaskRecord, progress: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One task's details: its row (with ``progress``, as :func:`run_row`), parameters and
    overrides, error, artifacts, metrics, logs."""
    store = backend.store
    artifacts = store.get_artifacts(record.id)
    error = None
    if record.error:
        lines = record.error.get("traceback") or []
        text = "".join(lines) if isinstance(lines, list) else str(lines)
        if isinstance(lines, list) and lines and not any(line.endswith("\n") for line in lines):
            text = "\n".join(lines)
        error = {"reason": record.error.get("reason"), "traceback": strip_ansi(text)}
    overridden = record.runtime.get("overrides") or []
    overrides = {}
    for key in overridden:
        section, _, name = str(key).rpartition("/")
        value = record.parameters.get(section or "General", {}).get(name)
        overrides[str(key)] = value
    logs = {r.title: str(r.payload.get("text", "")) for r in store.get_reports(record.id, "log")}
    return {
        "task": run_row(record, progress),
        "notebook": record.notebook,
        "parameters": record.parameters,
        "overrides": overrides,
        "error": error,
        "artifacts": [_artifact(backend, a) for a in artifacts.values()],
        "metrics": _metrics(store, record.id),
        "logs": {stream: logs.get(stream, "")[-LOG_CHARACTERS:] for stream in ("stdout", "stderr")},
        "executed_notebook": "notebook" in artifacts or bool(record.output_notebook),
    }


def queues_view(store: Store, now: float | None = None) -> dict[str, Any]:
    """Every queue with what waits in it, and every agent with what it runs."""
    now = time.time() if now is None else now
    workers = store.get_workers()
    waiting: dict[str, list[dict[str, Any]]] = {}
    for record in store.queued_tasks():
        waiting.setdefault(record.queue or "", []).append(run_row(record))
    names = set(waiting)
    agents = []
    for worker in workers:
        if worker.status == "stopped":
            continue
        names.update(worker.queues)
        agents.append(_agent(store, worker, now))
    queues = [
        {
            "name": name,
            "waiting": waiting.get(name, []),
            "agents": [a["name"] for a in agents if name in a["queues"] and a["alive"]],
        }
        for name in sorted(names)
    ]
    return {"queues": queues, "agents": agents}


def _agent(store: Store, worker: WorkerRecord, now: float) -> dict[str, Any]:
    running = []
    for task_id in worker.running:
        try:
            running.append(run_row(store.get_task(task_id)))
        except Exception:  # finished and deleted meanwhile
            continue
    return {
        "name": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "status": worker.status,
        "heartbeat": worker.last_seen,
        "age": max(0.0, now - worker.last_seen),
        "alive": now - worker.last_seen <= AGENT_ALIVE_WITHIN,
        "running": running,
    }


def _duration(started: float | None, ended: float | None, final: bool) -> float | None:
    if not started:
        return None
    if ended:
        return max(0.0, ended - started)
    return None if final else max(0.0, time.time() - started)


def _artifact(backend: Backend, record: ArtifactRecord) -> dict[str, Any]:
    image = None
    kind = IMAGE_TYPES.get(record.url.rsplit(".", 1)[-1].lower())
    if kind and record.codec in ("figure", "file") and record.size <= PREVIEW_IMAGE_BYTES:
        try:
            data = backend.artifacts.local_copy(record).read_bytes()
            image = f"data:{kind};base64,{base64.b64encode(data).decode()}"
        except Exception:  # a missing or altered file: no picture, the row still shows
            image = None
    return {
        "name": record.name,
        "type": record.type,
        "size": record.size,
        "preview": record.preview,
        "url": record.url,
        "codec": record.codec,
        "image": image,
    }


def _metrics(store: Store, task_id: str) -> list[dict[str, Any]]:
    series: dict[tuple[str, str], list[list[float | None]]] = {}
    for row in store.get_scalars(task_id):
        series.setdefault((row.title, row.series), []).append([row.iteration, row.value])
    return [
        {"title": title, "series": name, "points": points}
        for (title, name), points in series.items()
    ]

"""Plain records the store reads and writes; no behaviour beyond (de)serialising."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from clearnb.status import TASK_FINAL as FINAL_STATUSES
from clearnb.status import TASK_STATUSES

__all__ = ["FINAL_STATUSES", "TASK_STATUSES"]


def new_id() -> str:
    """A new random task id (32 hex digits, as ClearML's)."""
    return uuid.uuid4().hex


@dataclass
class TaskRecord:
    """One run of a notebook (or function), or a draft/template of one."""

    project: str
    name: str
    id: str = field(default_factory=new_id)
    status: str = "created"
    task_type: str = "notebook"
    """``notebook``, ``function`` or ``controller``."""
    notebook: str | None = None
    """Path or URL of the source notebook the task runs."""
    output_notebook: str | None = None
    """URL of the executed notebook, once there is one."""
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Parameters by section: ``{"General": {"test_size": 0.2}, "Sec": {...}}``."""
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    """Id of the task this one was cloned from or launched by (controller)."""
    error: dict[str, Any] | None = None
    """For a failed task: ``reason`` and, where a cell raised, ``cell_index``, ``ename``,
    ``evalue`` and ``traceback``."""
    runtime: dict[str, Any] = field(default_factory=dict)
    """Free-form run facts: cell timings, kernel name, stdout/stderr tails, ..."""
    comment: str = ""
    cache_key: str | None = None
    """Fingerprint of code, resolved parameters and input artifacts, for reusing a run."""
    created: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    last_update: float = field(default_factory=time.time)
    queue: str | None = None
    """The queue a task waits in (status ``queued``) or was taken from."""
    enqueued: float | None = None
    worker: str | None = None
    """Id of the agent running the task (``host:pid``), while it runs on one."""
    lease_expires: float | None = None
    """The running task's agent must renew its lease before this time, or lose the task."""
    abort_requested: str | None = None
    """Why someone asked to stop the task; the agent running it stops its kernel."""
    configuration: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Configuration objects by name: ``{"name": {"value": text, "type": ..., "description":
    ...}}`` (``task.connect_configuration``)."""


@dataclass
class WorkerRecord:
    """An agent serving queues, as last seen in the store."""

    id: str
    host: str
    pid: int
    queues: list[str]
    capacity: int = 1
    running: list[str] = field(default_factory=list)
    status: str = "idle"
    """``idle``, ``busy`` or ``stopped``."""
    started: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)


@dataclass
class ArtifactRecord:
    """A named, hashed, typed value stored by a codec under a task."""

    task_id: str
    name: str
    url: str
    """Where the stored file (or folder archive) lives: an fsspec URL or local path."""
    codec: str
    """Name of the codec that wrote it (``npy``, ``parquet``, ``json``, ``file``, ...)."""
    type: str
    """Python type of the original object, e.g. ``numpy.ndarray``."""
    hash: str
    """sha256 hex digest of the stored bytes."""
    size: int
    """Size in bytes of the stored file."""
    preview: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


@dataclass
class ModelRecord:
    """A model: its weights (a stored file or folder, or a registered URL) and what
    describes them."""

    name: str
    id: str = field(default_factory=new_id)
    project: str = "default"
    task_id: str | None = None
    """Id of the task that created the model."""
    framework: str = ""
    tags: list[str] = field(default_factory=list)
    system_tags: list[str] = field(default_factory=list)
    """``package`` (the weights are a folder), ``archived``."""
    comment: str = ""
    design: str = ""
    """The model's configuration as text (``config_text``; ``config_dict`` as JSON)."""
    labels: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    """``{key: {"key": key, "value": text, "type": type name}}``, as ClearML's."""
    uri: str | None = None
    """Where the weights are: the stored file, or a URL registered as it is."""
    hash: str = ""
    """sha256 of the stored weights file (empty for a registered URL)."""
    size: int = 0
    codec: str = ""
    """How the weights were stored (``file``, ``folder``); empty for a registered URL."""
    iteration: int | None = None
    published: bool = False
    created: float = field(default_factory=time.time)
    last_update: float = field(default_factory=time.time)


@dataclass
class TaskModelRecord:
    """A model connected to a task, as its input or its output, under a name."""

    task_id: str
    kind: str
    """``input`` or ``output``."""
    name: str
    model_id: str
    created: float = field(default_factory=time.time)


@dataclass
class ScalarRecord:
    """One reported scalar: ``report_scalar(title, series, value, iteration)``."""

    task_id: str
    title: str
    series: str
    iteration: int
    value: float
    timestamp: float = field(default_factory=time.time)


@dataclass
class ReportRecord:
    """A text, table or figure reported through the logger."""

    task_id: str
    kind: str
    """``text``, ``table``, ``figure`` or ``log``."""
    title: str = ""
    series: str = ""
    iteration: int = 0
    payload: dict[str, Any] = field(default_factory=dict)
    """For text ``{"text": ...}``; table ``{"columns": [...], "rows": [[...]]}``;
    figure ``{"artifact": name}``."""
    timestamp: float = field(default_factory=time.time)


@dataclass
class EventRecord:
    """A persisted status or progress change of a task (feeds callbacks, widget, CLI)."""

    task_id: str
    kind: str
    """e.g. ``task_started``, ``cell_started``, ``cell_finished``, ``task_finished``."""
    payload: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    """Assigned by the store on insert; increases within a store."""
    timestamp: float = field(default_factory=time.time)

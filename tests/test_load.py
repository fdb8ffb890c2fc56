"""Eight pipelines of ten steps run at once against one store: nothing is lost or repeated.

Each pipeline has its own controller (its own thread and kernel pool, two steps at a time),
so 80 step kernels (separate processes) and 8 controllers write to the one SQLite store and
artifact folder together. Every step must run exactly once (side file and store agree),
every status must reach the store (no write given up on), and every artifact must be
recorded with a hash its file matches.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb.backend import Backend
from tests.pipeline_process import SHAPES, build

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PIPELINES = 8
STEPS = list(SHAPES["fan"])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    yield tmp_path / "home"


def test_eight_pipelines_at_once_lose_nothing(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="clearnb")
    side_file = tmp_path / "side.jsonl"
    pipes = [build("fan", str(side_file), 0.0, 2, f"load {index}") for index in range(PIPELINES)]
    began = time.monotonic()
    for pipe in pipes:
        pipe.start()
    deadline = began + 240  # all eight within 4 minutes, inside the test's 300 s
    for pipe in pipes:
        left = max(0.0, deadline - time.monotonic())
        assert pipe.wait(timeout=left / 60), f"{pipe.name} did not finish in 4 minutes"
    took = time.monotonic() - began
    for pipe in pipes:
        pipe.stop()
        assert pipe.wait_for_picture(60)
    backend = Backend.for_config()
    store = backend.store
    failed = {
        f"{pipe.name}/{record.runtime.get('pipeline_step')}": (record.error or {}).get("reason")
        for pipe in pipes
        for record in store.find_tasks(parent=pipe.id)
        if record.status != "completed"
    }
    assert [pipe.status for pipe in pipes] == ["completed"] * PIPELINES, failed

    controllers = store.find_tasks(task_type="controller")
    assert sorted(r.id for r in controllers) == sorted(pipe.id for pipe in pipes)
    assert all(r.status == "completed" for r in controllers)
    steps = [r for r in store.find_tasks() if r.task_type != "controller"]
    assert len(steps) == PIPELINES * len(STEPS)
    assert all(r.status == "completed" for r in steps)
    ran = Counter((r.parent, r.runtime["pipeline_step"]) for r in steps)
    assert set(ran.values()) == {1}
    for pipe in pipes:
        state = store.get_task(pipe.id).runtime["pipeline"]
        assert state["status"] == "completed"
        assert {name: node["status"] for name, node in state["nodes"].items()} == dict.fromkeys(
            STEPS, "completed"
        )
        executed = {node["executed"] for node in state["nodes"].values()}
        assert executed == {r.id for r in steps if r.parent == pipe.id}

    lines = [json.loads(line) for line in side_file.read_text().splitlines()]
    for event in ("start", "done"):
        noted = Counter(
            (line["pipeline"], line["step"]) for line in lines if line["event"] == event
        )
        assert len(noted) == PIPELINES * len(STEPS) and set(noted.values()) == {1}, event

    artifacts = 0
    outputs: dict[str, set[str]] = {}
    for record in [*controllers, *steps]:
        for name, artifact in store.get_artifacts(record.id).items():
            backend.artifacts.verify(artifact)  # the file has the recorded size and sha256
            artifacts += 1
            if name == "out":
                outputs.setdefault(record.runtime["pipeline_step"], set()).add(artifact.hash)
    assert artifacts >= PIPELINES * (2 * len(STEPS) + 1)
    assert all(len(hashes) == 1 for hashes in outputs.values()), "same inputs, same bytes"
    assert len(outputs) == len(STEPS)

    lost = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lost == [], "a status, event or artifact write was given up on"
    print(
        f"\n{PIPELINES} pipelines x {len(STEPS)} steps in {took:.1f} s: "
        f"{len(steps)} step tasks completed, each run once; {len(controllers)} pipelines "
        f"completed; {artifacts} artifacts verified"
    )

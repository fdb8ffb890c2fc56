"""A step's memory limit travels with it through a queue to the agent that runs it."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from clearnb import PipelineController
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import PipelineError
from tests.executors.agents import Agents, agent_environ
from tests.helpers import NOTEBOOKS, wait_until_gone

pytestmark = pytest.mark.timeout(120)

HOG = NOTEBOOKS / "faults" / "hog.ipynb"


def test_an_agent_stops_a_step_over_its_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    monkeypatch.delenv("CLEARNB_STORE_URL", raising=False)
    store = Backend.for_config(Config.from_env()).store
    with Agents(store, agent_environ(home), tmp_path) as agents:
        agents.start("limited", ["cpu"])
        pipe = PipelineController(name="limits", project="queues", default_execution_queue="cpu")
        pipe.add_step("hog", notebook=HOG, memory_limit="300MB", time_limit=60)
        pipe.start()
        assert pipe.wait(timeout=1.5), "the pipeline ended"  # minutes (90 s): inside the 120 s
        with contextlib.suppress(PipelineError):
            pipe.stop()
        output = agents.output()
    record = store.get_task(pipe.get_pipeline_dag()["hog"].executed or "")
    assert record.status == "failed", output
    assert record.runtime["agent"] == "limited"
    assert record.runtime["memory_limit"] == 300_000_000
    reason = (record.error or {}).get("reason", "")
    assert re.fullmatch(
        r"the kernel used [\d.]+ [kMG]B, over the step's memory limit of 300 MB, while running "
        r"cell 5 of 5; the kernel was stopped",
        reason,
    ), reason
    assert store.get_artifact(record.id, "notebook").size > 0, "the notebook so far is kept"
    assert wait_until_gone(record.runtime["kernel_pid"])

"""Every status change of every step reaches a pipeline's listeners, in every run mode.

One diamond pipeline (a -> b, a -> c, {b, c} -> d) runs locally, with a step on a queue
served by an agent, with its controller on an agent, resumed after a failure, and served
from the cache. In each mode a listener records every event, and every step's events must
tell its whole story: a chain from ``pending`` to the status the pipeline reports at the
end, each event starting where the one before ended, never moving back.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.errors import PipelineError
from clearnb.events import PIPELINE_STATUS, STEP_PROGRESS, STEP_STATUS, PipelineEvent
from clearnb.status import (
    CACHED,
    COMPLETED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    STEP_FINISHED,
)
from tests.executors.agents import Agents, agent_environ
from tests.helpers import NOTEBOOKS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

STEPS = NOTEBOOKS / "pipeline"
TRIVIAL = str(STEPS / "trivial.ipynb")
NEEDS_FILE = str(STEPS / "needs_file.ipynb")

RAN = (PENDING, QUEUED, RUNNING, COMPLETED)
"""The path of a step that ran and completed."""
RAN_AND_FAILED = (PENDING, QUEUED, RUNNING, FAILED)
TAKEN = (PENDING, COMPLETED)
"""The path of a step whose result a resumed run takes from the earlier run: nothing runs."""
FROM_CACHE = (PENDING, CACHED)
BELOW_A_FAILURE = (PENDING, SKIPPED)
PIPELINE_RAN = (PENDING, RUNNING, COMPLETED)

ORDER = {PENDING: 0, QUEUED: 1, RUNNING: 2, **{status: 3 for status in STEP_FINISHED}}
"""How far along a status is: a step's (and a pipeline's) events only move forward."""


class Recorder:
    """A listener that keeps every event it receives, in order."""

    def __init__(self) -> None:
        self.events: list[PipelineEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: PipelineEvent) -> None:
        with self._lock:
            self.events.append(event)

    def take(self) -> list[PipelineEvent]:
        """The events received so far; the recorder starts afresh."""
        with self._lock:
            taken, self.events = self.events, []
        return taken


def story(events: Sequence[PipelineEvent]) -> str:
    """The status events as ``previous->status`` pairs, to show in a failure."""
    return ", ".join(f"{e.previous}->{e.status}" for e in events) or "(no event)"


def assert_chain(
    label: str, chain: Sequence[PipelineEvent], final: str, expected: Sequence[str]
) -> None:
    """``chain`` leads from pending to ``final``, one event per step, along ``expected``."""
    told = f"{label} received: {story(chain)}; expected {' -> '.join(expected)}"
    assert chain, f"{label} ended {final!r} with no status event. {told}"
    assert chain[0].previous == PENDING, f"{label}: its first event is not from pending. {told}"
    for before, after in itertools.pairwise(chain):
        assert after.previous == before.status, (
            f"{label}: an event from {after.previous!r} follows one that ended at "
            f"{before.status!r}. {told}"
        )
        assert ORDER[after.status] > ORDER[before.status], (
            f"{label}: {before.status!r} -> {after.status!r} does not move forward. {told}"
        )
    assert chain[-1].status == final, (
        f"{label}: the last event says {chain[-1].status!r}, but it ended {final!r}. {told}"
    )
    path = [PENDING, *(e.status for e in chain)]
    assert path == list(expected), f"{label} went {' -> '.join(path)}. {told}"


def assert_events(
    pipe: PipelineController,
    events: Sequence[PipelineEvent],
    steps: Mapping[str, Sequence[str]],
    pipeline: Sequence[str] = PIPELINE_RAN,
) -> None:
    """Every step's and the pipeline's events of one run tell their whole path."""
    dag = pipe.get_pipeline_dag()
    assert set(dag) == set(steps)
    strangers = {e.step for e in events if e.kind != PIPELINE_STATUS} - set(dag)
    assert not strangers, f"events of steps the pipeline does not have: {strangers}"
    for name, node in dag.items():
        chain = [e for e in events if e.kind == STEP_STATUS and e.step == name]
        assert_chain(f"step {name!r}", chain, node.status, steps[name])
        announced = PENDING
        for event in events:
            if event.step != name:
                continue
            if event.kind == STEP_STATUS:
                announced = event.status
            elif event.kind == STEP_PROGRESS:
                assert event.status == announced, (
                    f"step {name!r}: a progress event says {event.status!r} while its last "
                    f"status event said {announced!r}: {story(chain)}"
                )
    chain = [e for e in events if e.kind == PIPELINE_STATUS]
    assert all(e.step is None for e in chain), "pipeline events name no step"
    assert_chain("the pipeline", chain, pipe.status, pipeline)


def diamond(
    name: str,
    *,
    b: str = TRIVIAL,
    c: str = TRIVIAL,
    c_queue: str | None = None,
    needed: Path | None = None,
    cache: bool = False,
) -> PipelineController:
    """a -> b, a -> c, {b, c} -> d. A trivial ``b`` or ``c`` gets the id of ``a``; a
    ``needs_file`` one gets ``needed`` as the file it fails without."""
    pipe = PipelineController(name=name, project="events")

    def overrides(notebook: str, x: int) -> dict[str, object]:
        if notebook == NEEDS_FILE:
            return {"General/path": str(needed)}
        return {"General/x": x, "General/parent_id": "${a.id}"}

    pipe.add_step(
        "a", notebook=TRIVIAL, parameter_override={"General/x": 1}, cache_executed_step=cache
    )
    pipe.add_step(
        "b",
        notebook=b,
        parents=["a"],
        parameter_override=overrides(b, 2),
        cache_executed_step=cache,
    )
    pipe.add_step(
        "c",
        notebook=c,
        parents=["a"],
        parameter_override=overrides(c, 3),
        execution_queue=c_queue,
        cache_executed_step=cache,
    )
    pipe.add_step(
        "d",
        notebook=TRIVIAL,
        parents=["b", "c"],
        parameter_override={"General/x": 4},
        cache_executed_step=cache,
    )
    return pipe


def run(pipe: PipelineController, recorder: Recorder, **start: Any) -> list[PipelineEvent]:
    """Start, wait, stop; the events the run sent."""
    pipe.start(**start)
    assert pipe.wait(timeout=2), "the run ended"
    with contextlib.suppress(PipelineError):  # a failed run is what one test wants
        pipe.stop()
    return recorder.take()


def executed(pipe: PipelineController) -> dict[str, str | None]:
    return {name: node.executed for name, node in pipe.get_pipeline_dag().items()}


@dataclass
class Home:
    """A fresh store, shared by this process and the agents a test starts."""

    backend: Backend
    env: dict[str, str]
    folder: Path

    def agents(self) -> Agents:
        return Agents(self.backend.store, self.env, self.folder)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    folder = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(folder))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    monkeypatch.delenv("CLEARNB_STORE_URL", raising=False)
    yield Home(Backend.for_config(Config.from_env()), agent_environ(folder), tmp_path)


def test_a_local_run_announces_every_transition(home: Home) -> None:
    pipe = diamond("local")
    recorder = Recorder()
    pipe.add_listener(recorder)
    events = run(pipe, recorder)
    assert_events(pipe, events, dict.fromkeys("abcd", RAN))


def test_a_step_on_an_agent_announces_every_transition(home: Home) -> None:
    pipe = diamond("one step queued", c_queue="q")
    recorder = Recorder()
    pipe.add_listener(recorder)
    with home.agents() as agents:
        agents.start("q-agent", ["q"])
        events = run(pipe, recorder)
        output = agents.output()
    ran_c = home.backend.store.get_task(executed(pipe)["c"] or "")
    assert ran_c.runtime.get("agent") == "q-agent", output
    assert_events(pipe, events, dict.fromkeys("abcd", RAN))


def test_a_controller_on_an_agent_announces_every_transition(home: Home) -> None:
    pipe = diamond("controller queued")
    recorder = Recorder()
    pipe.add_listener(recorder)
    with home.agents() as agents:
        agents.start("services-agent", ["services"])
        events = run(pipe, recorder, queue="services")
        output = agents.output()
    assert home.backend.store.get_task(pipe.id).runtime.get("agent") == "services-agent", output
    assert pipe.status == COMPLETED, output
    assert_events(pipe, events, dict.fromkeys("abcd", RAN), (PENDING, QUEUED, RUNNING, COMPLETED))


def test_a_resumed_run_announces_the_steps_it_takes_and_runs(home: Home) -> None:
    needed = home.folder / "needed"
    pipe = diamond("resumed", b=NEEDS_FILE, c=NEEDS_FILE, needed=needed)
    recorder = Recorder()
    pipe.add_listener(recorder)
    events = run(pipe, recorder)
    assert pipe.status == FAILED
    first = executed(pipe)
    assert_events(
        pipe,
        events,
        {"a": RAN, "b": RAN_AND_FAILED, "c": RAN_AND_FAILED, "d": BELOW_A_FAILURE},
        (PENDING, RUNNING, FAILED),
    )
    needed.touch()  # what b and c failed for
    events = run(pipe, recorder, resume=True)
    again = executed(pipe)
    assert again["a"] == first["a"], "a is taken from the earlier run"
    assert all(again[name] not in (None, first[name]) for name in "bcd"), (first, again)
    assert_events(pipe, events, {"a": TAKEN, "b": RAN, "c": RAN, "d": RAN})


def test_a_run_served_from_the_cache_announces_every_step_cached(home: Home) -> None:
    pipe = diamond("cached", cache=True)
    recorder = Recorder()
    pipe.add_listener(recorder)
    events = run(pipe, recorder)
    assert_events(pipe, events, dict.fromkeys("abcd", RAN))
    first = executed(pipe)
    events = run(pipe, recorder)
    assert executed(pipe) == first, "no step ran: each took the first run's task"
    assert_events(pipe, events, dict.fromkeys("abcd", FROM_CACHE))

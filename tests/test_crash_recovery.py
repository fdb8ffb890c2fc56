"""A process running a pipeline is killed with SIGKILL half-way; nothing is lost.

The pipeline (five recorded steps in a diamond, run by ``tests/pipeline_process.py`` in a
process of its own) is killed while a chosen step runs, as the store shows it: that step
(and any step that can run beside it) is held once started, so that the kill lands while
it runs, however slow the machine, and while no step is writing an artifact. Then: the
killed run's kernels are gone; opening the run (``PipelineController.from_run``, ``clearnb
pipeline show``, or resuming it) settles it, so that no step stays ``running``; every
stored artifact is whole (its file has the recorded sha256; no temporary file is recorded);
and resuming in a new process runs exactly the steps that had not completed, ending with
the same artifacts, byte for byte, as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from clearnb import PipelineController
from clearnb.artifacts import ArtifactStorage
from clearnb.artifacts.hashing import sha256_file
from clearnb.cli import main as cli
from clearnb.config import Config
from clearnb.store import Store, open_store
from tests.helpers import wait_until
from tests.pipeline_process import SHAPES, release_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPOSITORY = Path(__file__).resolve().parent.parent
STEPS = list(SHAPES["diamond"])
SECONDS = 1.0
"""How long each step works."""
KILL_POINTS = [("s1", "from_run"), ("s3", "cli"), ("s5", "resume")]
"""The step running when the controller is killed, and how the run is opened afterwards."""
HELD = {"s1": ["s1"], "s3": ["s2", "s3"], "s5": ["s5"]}
"""For each kill point, the steps held once started: the victim and what may run beside it."""


def start_pipeline(home: Path, side_file: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CLEARNB_HOME": str(home), "PYTHONPATH": str(REPOSITORY)}
    env.pop("CLEARNB_TASK_ID", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.pipeline_process",
            str(side_file),
            "--seconds",
            str(SECONDS),
            *args,
        ],
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def first_line(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the pipeline process printed nothing"
    result: dict[str, Any] = json.loads(line)
    return result


def run_to_the_end(home: Path, side_file: Path, *args: str) -> tuple[str, dict[str, Any]]:
    process = start_pipeline(home, side_file, *args)
    pipeline_id = first_line(process)["pipeline"]
    out, _ = process.communicate(timeout=180)
    final: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return pipeline_id, final


def side_lines(side_file: Path, pipeline_id: str, event: str) -> list[str]:
    """The steps that noted ``event`` in the side file during run ``pipeline_id``."""
    if not side_file.exists():
        return []
    lines = [json.loads(line) for line in side_file.read_text().splitlines() if line]
    return [
        line["step"] for line in lines if line["pipeline"] == pipeline_id and line["event"] == event
    ]


def processes_of(home: Path) -> list[int]:
    """Processes (other than this one) whose environment points at ``home``."""
    marker = f"CLEARNB_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in environment and state != "Z":
            found.append(int(entry.name))
    return found


def final_artifacts(
    store: Store, storage: ArtifactStorage, executed: dict[str, str]
) -> dict[str, str]:
    """sha256 of the file of every artifact the steps produced (not their executed
    notebooks, which hold timings), by ``step/name``; each file is verified first."""
    hashes = {}
    for step, task_id in executed.items():
        for name, record in store.get_artifacts(task_id).items():
            if name == "notebook" or record.metadata.get("figure"):
                continue
            digest, _ = sha256_file(storage.local_copy(record))
            hashes[f"{step}/{name}"] = digest
    return hashes


def artifact_problems(store: Store, storage: ArtifactStorage) -> list[str]:
    """Every recorded artifact whose file is missing, altered or a temporary file."""
    problems = []
    for task in store.find_tasks():
        for name, record in store.get_artifacts(task.id).items():
            if any(part.startswith(".") for part in Path(record.url).parts):
                problems.append(f"{task.id}/{name}: a temporary file is recorded: {record.url}")
            try:
                storage.verify(record)
            except Exception as exc:
                problems.append(f"{task.id}/{name}: {exc}")
    return problems


def leftover_temporary_files(home: Path) -> list[Path]:
    return [path for path in (home / "artifacts").rglob(".*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The artifacts of an uninterrupted run of the same pipeline."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    home = folder / "home"
    _, final = run_to_the_end(home, folder / "side.jsonl")
    assert final["status"] == "completed", final
    config = Config.at(home)
    with open_store(config.store_url) as store:
        storage = ArtifactStorage(config.artifact_url, config.cache_dir)
        executed = {name: node["executed"] for name, node in final["nodes"].items()}
        hashes = final_artifacts(store, storage, executed)
    assert sorted(hashes) == [f"{step}/out" for step in STEPS]
    return hashes


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    yield tmp_path / "home"


def kill_while_running(
    home: Path, side_file: Path, store: Store, victim: str
) -> tuple[str, dict[str, Any]]:
    """Start the pipeline, SIGKILL its process while step ``victim`` runs (its Task is
    ``running`` in the store and its notebook has started; it is held there); return the
    pipeline's id and its stored state as the killed process left it."""
    process = start_pipeline(home, side_file, "--hold", ",".join(HELD[victim]))
    try:
        pipeline_id = first_line(process)["pipeline"]

        def victim_runs() -> bool:
            assert process.poll() is None, "the pipeline ended before the kill point"
            running = [
                r.runtime.get("pipeline_step")
                for r in store.find_tasks(parent=pipeline_id, status="running")
            ]
            return victim in running and victim in side_lines(side_file, pipeline_id, "start")

        wait_until(victim_runs, 120, f"step {victim} to run")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
    return pipeline_id, store.get_task(pipeline_id).runtime["pipeline"]


@pytest.mark.parametrize(("victim", "opened_by"), KILL_POINTS)
def test_a_killed_pipeline_resumes_without_losing_or_repeating_work(
    home: Path, tmp_path: Path, reference: dict[str, str], victim: str, opened_by: str
) -> None:
    side_file = tmp_path / "side.jsonl"
    config = Config.from_env()
    store = open_store(config.store_url)
    storage = ArtifactStorage(config.artifact_url, config.cache_dir)
    try:
        killed, left = kill_while_running(home, side_file, store, victim)
        # What the SIGKILL left: the run and the victim look as if they still ran.
        assert left["status"] == "running"
        assert left["nodes"][victim]["status"] == "running"
        assert store.get_task(killed).status == "running"

        deadline = time.monotonic() + 30
        while processes_of(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_of(home) == [], "the killed controller's kernels outlived it"

        if opened_by == "from_run":
            opened = PipelineController.from_run(killed)
            statuses = {name: node.status for name, node in opened.get_pipeline_dag().items()}
            assert opened.status == "aborted"
            assert "running" not in statuses.values() and "queued" not in statuses.values()
        elif opened_by == "cli":
            shown = CliRunner().invoke(cli, ["pipeline", "show", killed])
            assert shown.exit_code == 0, shown.output
            assert "status   aborted" in shown.output
            assert "stopped without finishing the run" in shown.output
        if opened_by != "resume":
            record = store.get_task(killed)
            assert record.status == "aborted"
            assert "stopped without finishing the run" in record.error["reason"]
            assert record.runtime["pipeline"]["status"] == "aborted"
            steps = store.find_tasks(parent=killed)
            assert all(step.status in ("completed", "aborted") for step in steps), [
                (step.name, step.status) for step in steps
            ]

        assert artifact_problems(store, storage) == []
        completed_before = {
            step.runtime["pipeline_step"]
            for step in store.find_tasks(parent=killed, status="completed")
        }
        assert victim not in completed_before

        resumed, final = run_to_the_end(home, side_file, "--resume", killed)
        assert final["status"] == "completed", final

        settled = store.get_task(killed).runtime["pipeline"]
        assert settled["status"] == "aborted"
        assert {n for n, s in settled["nodes"].items() if s["status"] == "completed"} == (
            completed_before
        )
        to_run = sorted(set(STEPS) - completed_before)
        assert sorted(side_lines(side_file, resumed, "start")) == to_run, "run again: only these"
        assert sorted(side_lines(side_file, resumed, "done")) == to_run
        ran_here = store.find_tasks(parent=resumed)
        assert sorted(r.runtime["pipeline_step"] for r in ran_here) == to_run
        assert all(r.status == "completed" for r in ran_here)
        for step in completed_before:  # the resumed run took them as they were
            assert final["nodes"][step]["executed"] == settled["nodes"][step]["executed"]
        done_twice = [
            step
            for step in STEPS
            if side_lines(side_file, killed, "done").count(step)
            + side_lines(side_file, resumed, "done").count(step)
            > 1
        ]
        # A step whose notebook ended just before the kill, but whose Task the controller
        # had not yet recorded as completed, runs again: only such steps may finish twice.
        assert not set(done_twice) & completed_before

        executed = {name: node["executed"] for name, node in final["nodes"].items()}
        finals = final_artifacts(store, storage, executed)
        assert finals == reference
        differing = sum(reference[key] != value for key, value in finals.items())
        assert differing == 0, "the resumed run's artifacts are the uninterrupted run's"
        assert artifact_problems(store, storage) == []
        assert store.find_tasks(status=("created", "queued", "running")) == []
        assert leftover_temporary_files(home) == [], "no half-written artifact is left"
        print(
            f"\nkill at {victim} (opened by {opened_by}): completed before the kill "
            f"{sorted(completed_before)}, run on resume {to_run}, steps run twice "
            f"{len(done_twice)}, artifacts differing {differing}, temporary files left "
            f"{len(leftover_temporary_files(home))}"
        )
    finally:
        store.close()


def test_a_live_controller_is_not_settled(home: Path, tmp_path: Path) -> None:
    """Opening a run whose controller still runs leaves it alone."""
    side_file = tmp_path / "side.jsonl"
    config = Config.from_env()
    process = start_pipeline(home, side_file, "--hold", "s1")
    store = open_store(config.store_url)
    try:
        pipeline_id = first_line(process)["pipeline"]
        wait_until(lambda: side_lines(side_file, pipeline_id, "start"), 120, "step s1 to start")
        opened = PipelineController.from_run(pipeline_id)
        assert opened.status == "running"
        shown = CliRunner().invoke(cli, ["pipeline", "show", pipeline_id])
        assert "status   running" in shown.output
        Path(release_file(str(side_file))).touch()  # s1 was held until now: the run goes on
        out, _ = process.communicate(timeout=180)
        assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
        assert store.get_task(pipeline_id).status == "completed"
    finally:
        process.kill()
        process.wait(30)
        store.close()

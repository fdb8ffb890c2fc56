"""``clearnb run`` (follow a pipeline notebook), ``clearnb pipeline ls`` and ``show``."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.pipeline.node import Node
from clearnb.store.records import ArtifactRecord, TaskRecord
from tests.helpers import NOTEBOOKS, kernel_pids_of, notebook, process_exists, wait_until
from tests.test_cli import CLEARNB, Result, clearnb, invoke

pytestmark = pytest.mark.timeout(180)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RUN_ID = re.compile(r"^task\s+([0-9a-f]{32})\s", re.MULTILINE)


def run_id_in(output: str) -> str:
    found = RUN_ID.search(output)
    assert found, output
    return found.group(1)


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARNB_")}
    env["CLEARNB_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        patch.delenv("CLEARNB_TASK_ID", raising=False)
        yield path


@pytest.fixture(scope="module")
def completed(home: Path) -> Result:
    """``clearnb run`` of the fake pipeline notebook, which ends completed."""
    return clearnb(home, "run", str(notebook("fake_pipeline")), "--project", "p", "--name", "n")


@pytest.fixture(scope="module")
def failed(home: Path) -> Result:
    """``clearnb run`` of the fake pipeline with a failing step."""
    return clearnb(home, "run", str(notebook("fake_pipeline")), "-p", "fail", "True")


# -- clearnb run ------------------------------------------------------------------------------


def test_run_logs_each_status_change_once_and_ends_with_the_summary(
    home: Path, completed: Result
) -> None:
    assert completed.returncode == 0, completed.output
    assert not ANSI.search(completed.output), "no escape codes when not on a terminal"
    run_id = run_id_in(completed.stdout)
    log = [re.sub(r"^\[\s*[0-9.hms]+\] ", "", line) for line in completed.stderr.splitlines()]
    assert log[0] == f"task {run_id} (p/n): running {notebook('fake_pipeline')}"
    assert "pipeline fake: 4 steps (prepare, baseline, train, evaluate)" in log
    finals = [
        "step prepare: completed",
        "step baseline: cached",
        "step train: completed",
        "step evaluate: completed",
    ]
    positions = []
    for final in finals:
        matches = [i for i, line in enumerate(log) if line.startswith(final)]
        assert len(matches) == 1, (final, completed.stderr)
        positions.append(matches[0])
    assert positions == sorted(positions)
    assert log[-1] == "pipeline fake: completed"
    changes = [line for line in log if line.startswith("step ")]
    assert len(changes) == len(set(changes)), "a line only when a status changes"
    running = [line for line in changes if ": running" in line]
    assert running, "steps are seen running while the notebook runs"
    assert all(line.startswith("step ") for line in log[2:-1] if "pipeline fake:" not in line)

    out = completed.stdout
    assert re.search(r"^notebook completed$", out, re.MULTILINE)
    assert "pipeline fake (tests, version 1.0): completed, 4 of 4 steps done" in out
    table = out.split("pipeline fake", 1)[1].splitlines()[1:]
    assert table[0].split() == ["STEP", "STATUS", "DURATION", "RETRIES", "TASK", "ERROR"]
    store = Backend.for_config().store
    steps = {r.runtime["pipeline_step"]: r.id for r in store.find_tasks(parent=run_id)}
    assert set(steps) == {"prepare", "train", "evaluate"}
    rows = {row.split()[0]: row.split() for row in table[1:]}
    assert rows["prepare"][1:2] + rows["prepare"][3:] == ["completed", "0", steps["prepare"]]
    assert rows["baseline"][1:] == ["cached", "-", "0", steps["prepare"]]
    assert rows["evaluate"][4] == steps["evaluate"]
    record = store.get_task(run_id)
    assert (record.task_type, record.status) == ("controller", "completed")
    assert record.runtime["pipeline"]["status"] == "completed"


def test_a_failed_pipeline_exits_1_with_the_reason(failed: Result) -> None:
    assert failed.returncode == 1, failed.output
    log = failed.stderr
    assert re.search(
        r"step train: failed \([0-9.]+s; cell In \[3\] raised ValueError: bad data\)", log
    )
    assert "step evaluate: skipped" in log
    assert log.rstrip().endswith("pipeline fake: failed")
    out = failed.stdout
    assert re.search(r"^notebook completed$", out, re.MULTILINE), "the notebook itself completed"
    assert "failed, 2 of 4 steps done (1 failed)" in out
    train = next(line for line in out.splitlines() if line.split()[:1] == ["train"])
    assert train.split()[1] == "failed"
    assert train.endswith("cell In [3] raised ValueError: bad data")
    evaluate = next(line for line in out.splitlines() if line.split()[:1] == ["evaluate"])
    assert evaluate.split() == ["evaluate", "skipped", "-", "0", "-"]


def test_a_notebook_without_a_pipeline_exits_1_and_says_so(tmp_path: Path) -> None:
    result = clearnb(tmp_path, "run", str(notebook("no_params")))
    assert result.returncode == 1, result.output
    assert "notebook completed" in result.stdout
    assert "The notebook did not start a pipeline" in result.stdout
    assert "clearnb task run" in result.stdout


def test_a_bad_parameter_is_a_usage_error(tmp_path: Path) -> None:
    result = clearnb(tmp_path, "run", str(notebook("fake_pipeline")), "-p", "pause", "soon")
    assert result.returncode == 2, result.output
    assert "pause" in result.stderr and "'soon' cannot be converted" in result.stderr
    assert invoke(tmp_path, "task", "ls").stdout.startswith("No tasks yet")


STEP_IN_CELL_3 = re.compile(r"▸ prepare\s+running\s+[0-9.]+s\s+cell 3/5")
"""The line of step ``prepare`` while it runs its third cell (of five)."""


def test_on_a_terminal_the_view_is_redrawn_in_place(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    env = environment(tmp_path)
    env.pop("NO_COLOR")
    env["COLUMNS"] = "100"
    gate = tmp_path / "cell-seen"  # the notebook shows the cell until the view has drawn it
    process = subprocess.Popen(
        [str(CLEARNB), "run", str(notebook("fake_pipeline")), "-p", "gate", str(gate)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)
            if not gate.exists() and STEP_IN_CELL_3.search(ANSI.sub("", read_so_far())):
                gate.touch()

    def read_so_far() -> str:
        return b"".join(chunks).decode(errors="replace")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=120)
    reader.join(10)
    os.close(master)
    screen = b"".join(chunks).decode()
    assert process.returncode == 0, screen + stdout
    assert re.search(r"\x1b\[\d+F", screen), "the cursor moves up to redraw"
    assert "\x1b[2K" in screen
    frames = screen.split("\x1b[J")
    assert len(frames) > 3, "the view is redrawn while the pipeline runs"
    assert "cell 3/5" in screen, "progress of a running step, from its cell events"
    assert "\x1b[32mcompleted" in screen, "statuses are coloured"
    plain = ANSI.sub("", screen)
    assert STEP_IN_CELL_3.search(plain)
    assert "notebook fake_pipeline.ipynb: cell" in plain
    redrawn = plain.split("\n", 1)[1].splitlines()
    assert all(len(line) < 100 for line in redrawn), "no line wraps and spoils the redraw"
    assert screen.rstrip("\r\n").endswith("\x1b[J"), "the live view is erased at the end"
    assert "completed, 4 of 4 steps done" in ANSI.sub("", stdout)


SLOW_CONTROLLER = NOTEBOOKS / "pipeline" / "slow_controller.ipynb"
"""A real PipelineController: quick, then slow (sleeps 120 s), then after."""
STEP_RUNNING = re.compile(r"step (\w+): running \(task ([0-9a-f]{32})\)")


def test_ctrl_c_stops_the_run_and_its_steps_reports_and_exits_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(CLEARNB), "run", str(SLOW_CONTROLLER)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(tmp_path),
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    store = Backend.open(Config.at(tmp_path)).store

    def slow_task() -> str | None:
        while not lines.empty():
            seen.append(lines.get())
        assert process.poll() is None, "".join(seen)
        running = (STEP_RUNNING.search(line) for line in seen)
        return next((m.group(2) for m in running if m and m.group(1) == "slow"), None)

    slow = wait_until(slow_task, 120, "step slow to run")

    def sleeping() -> bool:  # the step's kernel runs its last cell: the 120 s sleep
        cells = [e for e in store.get_events(slow) if e.kind == "cell_started"]
        return bool(cells) and cells[-1].payload["index"] == cells[-1].payload["count"] - 1

    wait_until(sleeping, 120, "step slow to start sleeping")
    kernels = kernel_pids_of(tmp_path)
    assert len(kernels) >= 2, "the controller notebook's kernel and the step's kernel run"
    process.send_signal(signal.SIGINT)
    assert process.stdout is not None
    stdout = process.stdout.read()
    process.wait(60)
    reader.join(10)
    while not lines.empty():
        seen.append(lines.get())
    assert process.returncode == 130, "".join(seen) + stdout
    assert any("interrupted" in line for line in seen)
    run_id = run_id_in(stdout)
    assert "notebook aborted" in stdout
    assert "interrupted from the command line" in stdout
    assert "pipeline slow (tests): aborted, " in stdout, "the controller stopped too"
    record = store.get_task(run_id)
    assert record.status == "aborted"
    state = record.runtime["pipeline"]
    assert state["status"] == "aborted"
    assert {name: node["status"] for name, node in state["nodes"].items()} == {
        "quick": "completed",
        "slow": "aborted",
        "after": "skipped",
    }
    assert state["nodes"]["slow"]["executed"] == slow
    steps = {r.runtime["pipeline_step"]: r.status for r in store.find_tasks(parent=run_id)}
    assert steps == {"quick": "completed", "slow": "aborted"}, "no step is left running"
    wait_until(lambda: not kernel_pids_of(tmp_path), 30, "the kernels to end")
    assert [pid for pid in kernels if process_exists(pid)] == [], "no kernel is left"
    listed = invoke(tmp_path, "pipeline", "ls")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(run_id))
    assert row.split()[1] == "aborted", "a pipeline whose task ended is no longer running"


# -- clearnb pipeline ls / show ----------------------------------------------------------------


def pipeline_state(
    name: str, status: str, steps: dict[str, dict[str, Any]], started: float
) -> dict[str, Any]:
    nodes = {}
    for step, fields in steps.items():
        base = Node(step).state()
        base.update(fields)
        nodes[step] = base
    ended = started + 42 if status in ("completed", "failed", "aborted") else None
    return {
        "name": name,
        "project": "proj",
        "version": "2.0",
        "status": status,
        "started": started,
        "ended": ended,
        "order": list(steps),
        "nodes": nodes,
    }


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Two pipelines, a pipeline task with no state yet, and a plain notebook task."""
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    store = Backend.for_config().store
    now = time.time()
    older = pipeline_state(
        "etl",
        "completed",
        {
            "load": {"status": "completed", "started": now - 500, "ended": now - 490},
            "clean": {
                "status": "cached",
                "parents": ["load"],
                "executed": "e" * 32,
                "parameters": {"General/rows": "${load.artifacts.table.size}"},
                "resolved": {"General/rows": 150},
            },
        },
        now - 500,
    )
    newer = pipeline_state(
        "train",
        "failed",
        {
            "split": {
                "status": "completed",
                "started": now - 100,
                "ended": now - 95,
                "executed": "f" * 32,
                "parameters": {"General/test_size": 0.25},
                "resolved": {"General/test_size": 0.25},
            },
            "fit": {
                "status": "failed",
                "parents": ["split"],
                "started": now - 95,
                "ended": now - 60,
                "retries": 2,
                "executed": "9" * 32,
                "error": {"reason": "cell In [4] raised MemoryError: too big"},
            },
            "score": {"status": "skipped", "parents": ["fit"]},
        },
        now - 100,
    )
    ids = {}
    for key, state, created in (("etl", older, now - 500), ("train", newer, now - 100)):
        record = TaskRecord(
            project="proj",
            name=state["name"],
            task_type="controller",
            status="completed",
            parameters={"Args": {"epochs": 3, "url": "s3://bucket/x"}},
            runtime={"pipeline": state},
            created=created,
            started=created,
            completed=created + 42,
        )
        ids[key] = store.create_task(record).id
    ids["fresh"] = store.create_task(
        TaskRecord(project="other", name="fresh", task_type="controller", created=now - 300)
    ).id
    ids["notebook"] = store.create_task(TaskRecord(project="proj", name="plain")).id
    store.put_artifact(
        ArtifactRecord(
            ids["train"], "pipeline_dag", "/tmp/dag.png", "figure", "PIL.Image.Image", "0", 10
        )
    )
    return ids


def test_ls_lists_pipelines_newest_first(tmp_path: Path, stored: dict[str, str]) -> None:
    result = invoke(tmp_path, "pipeline", "ls")
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STARTED", "DURATION", "STEPS", "PROJECT/NAME"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == [stored["train"], stored["fresh"], stored["etl"]]
    assert stored["notebook"] not in result.stdout
    train, fresh, etl = rows
    assert train[1] == "failed" and train[-1] == "proj/train"
    assert "1/3," in train and train[train.index("1/3,") + 1 : -1] == ["1", "failed"]
    assert train[4] == "42.0s"
    assert etl[1] == "completed" and "2/2" in etl and etl[-1] == "proj/etl"
    assert fresh[1] == "created" and "-" in fresh and fresh[-1] == "other/fresh"


def test_ls_filters_by_project_and_limits(tmp_path: Path, stored: dict[str, str]) -> None:
    only = invoke(tmp_path, "pipeline", "ls", "--project", "other").stdout.splitlines()
    assert [line.split()[0] for line in only[1:]] == [stored["fresh"]]
    one = invoke(tmp_path, "pipeline", "ls", "--limit", "1").stdout.splitlines()
    assert [line.split()[0] for line in one[1:]] == [stored["train"]]


def test_ls_on_an_empty_store_says_how_to_start(tmp_path: Path) -> None:
    result = invoke(tmp_path, "pipeline", "ls")
    assert result.returncode == 0
    assert result.stdout == "No pipelines yet. Run one with: clearnb run NOTEBOOK\n"


def test_show_gives_status_arguments_steps_and_parameters(
    tmp_path: Path, stored: dict[str, str]
) -> None:
    result = invoke(tmp_path, "pipeline", "show", stored["train"])
    assert result.returncode == 0, result.output
    out = result.stdout
    assert out.startswith(f"pipeline train\ntask     {stored['train']}\n")
    assert "project  proj (version 2.0)" in out
    assert re.search(r"^status\s+failed$", out, re.MULTILINE)
    assert "(42.0s)" in out
    assert "arguments:\n  epochs = 3\n  url = 's3://bucket/x'\n" in out
    assert "pipeline train (proj, version 2.0): failed, 1 of 3 steps done (1 failed)" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert rows["fit"].split()[:5] == ["fit", "failed", "35.0s", "2", "9" * 32]
    assert rows["fit"].endswith("cell In [4] raised MemoryError: too big")
    assert rows["score"].split() == ["score", "skipped", "-", "0", "-"]
    assert "step parameters:\n  split:\n    General/test_size = 0.25\n" in out
    assert "DAG picture: /tmp/dag.png" in out


def test_show_marks_resolved_references(tmp_path: Path, stored: dict[str, str]) -> None:
    out = invoke(tmp_path, "pipeline", "show", stored["etl"]).stdout
    assert "    General/rows = 150  <- ${load.artifacts.table.size}" in out
    assert "DAG picture" not in out


def test_show_json_dumps_the_state(tmp_path: Path, stored: dict[str, str]) -> None:
    result = invoke(tmp_path, "pipeline", "show", stored["train"], "--json")
    assert result.returncode == 0
    state = json.loads(result.stdout)
    record = Backend.for_config().store.get_task(stored["train"])
    assert state == record.runtime["pipeline"]
    assert state["nodes"]["fit"]["retries"] == 2


def test_show_of_a_pipeline_without_steps_yet(tmp_path: Path, stored: dict[str, str]) -> None:
    result = invoke(tmp_path, "pipeline", "show", stored["fresh"])
    assert result.returncode == 0
    assert "status   created" in result.stdout
    assert "The pipeline has not recorded any step yet." in result.stdout


def test_show_of_a_task_that_is_not_a_pipeline(tmp_path: Path, stored: dict[str, str]) -> None:
    result = invoke(tmp_path, "pipeline", "show", stored["notebook"])
    assert result.returncode == 1
    assert f"Task {stored['notebook']} is a notebook task, not a pipeline" in result.stderr
    assert f"clearnb task show {stored['notebook']}" in result.stderr


def test_show_of_an_unknown_id_exits_1(tmp_path: Path) -> None:
    result = clearnb(tmp_path, "pipeline", "show", "0123456789abcdef0123456789abcdef")
    assert result.returncode == 1, result.output
    assert "No task with id '0123456789abcdef0123456789abcdef'" in result.stderr
    assert result.stdout == ""


def test_show_and_ls_after_a_real_run(home: Path, completed: Result, failed: Result) -> None:
    first, second = run_id_in(completed.stdout), run_id_in(failed.stdout)
    listed = clearnb(home, "pipeline", "ls")
    assert listed.returncode == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows[:2]] == [(second, "failed"), (first, "completed")]
    assert rows[1][-1] == "tests/fake"
    shown = clearnb(home, "pipeline", "show", first)
    assert shown.returncode == 0, shown.output
    assert "arguments:\n  fail = False\n  pause = 0.3\n" in shown.stdout
    assert "    General/data = '/store/General/data'  <- ${prepare.artifacts.data.url}" in (
        shown.stdout
    )


def test_the_short_ids_shown_elsewhere_are_accepted(tmp_path: Path, stored: dict[str, str]) -> None:
    short = stored["train"][:8]
    shown = invoke(tmp_path, "pipeline", "show", short)
    assert shown.returncode == 0, shown.output
    assert stored["train"] in shown.stdout and "train" in shown.stdout
    assert invoke(tmp_path, "task", "show", short).returncode == 0
    aborted = invoke(tmp_path, "task", "abort", short)
    assert aborted.returncode == 0 and "already ended completed" in aborted.stdout
    unknown = invoke(tmp_path, "pipeline", "show", "0000dead")
    assert unknown.returncode == 1 and "No task with id '0000dead'" in unknown.stderr

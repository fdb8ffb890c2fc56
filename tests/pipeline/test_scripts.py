"""ClearML-style pipeline scripts run as ``python script.py``: a started run is not lost.

ClearML's ``pipe.start()`` waits for the run in a script; here the process waits for it
before it exits, and Ctrl-C during that wait (or during ``pipe.wait()``) aborts it cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.store.records import TaskRecord
from tests.helpers import NOTEBOOKS, kernel_pids_of, wait_until, wait_until_gone

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
STEPS = NOTEBOOKS / "pipeline"


def environment(home: Path) -> dict[str, str]:
    """The environment of a script: its own store, this tree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARNB_")}
    env["CLEARNB_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def write_script(folder: Path, body: str) -> Path:
    script = folder / "pipeline_script.py"
    script.write_text(textwrap.dedent(body))
    return script


def controller_runs(home: Path) -> list[TaskRecord]:
    store = Backend.for_config(Config.at(home)).store
    return store.find_tasks(task_type="controller")


def steps_of(home: Path, run: TaskRecord) -> dict[str, str]:
    store = Backend.for_config(Config.at(home)).store
    return {r.runtime["pipeline_step"]: r.status for r in store.find_tasks(parent=run.id)}


def test_a_script_ending_after_start_runs_its_pipeline(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        f"""
        from clearnb import PipelineController

        pipe = PipelineController(name="scripted", project="scripts", version="1.0")
        pipe.add_step(name="first", notebook={str(STEPS / "trivial.ipynb")!r})
        pipe.add_step(name="second", notebook={str(STEPS / "trivial.ipynb")!r}, parents=["first"])
        pipe.add_step(name="third", notebook={str(STEPS / "trivial.ipynb")!r}, parents=["second"])
        pipe.start()
        print("start returned", flush=True)
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "start returned" in done.stdout, "start() returns at once; the exit waits"
    (run,) = controller_runs(tmp_path)
    assert run.status == "completed", run.error
    assert run.runtime["pipeline"]["status"] == "completed"
    assert steps_of(tmp_path, run) == {
        "first": "completed",
        "second": "completed",
        "third": "completed",
    }
    assert kernel_pids_of(tmp_path) == []


SLOW_SCRIPT = f"""
from clearnb import PipelineController

pipe = PipelineController(name="slow script", project="scripts")
pipe.add_step(
    name="slow",
    notebook={str(STEPS / "sleepy.ipynb")!r},
    parameter_override={{"General/seconds": 120}},
)
pipe.add_step(name="after", notebook={str(STEPS / "trivial.ipynb")!r}, parents=["slow"])
pipe.start()
print("start returned", flush=True)
"""


@pytest.mark.parametrize(
    "ending",
    [
        "",
        "pipe.wait()\nprint('wait returned', flush=True)\n",
    ],
)
def test_ctrl_c_aborts_the_run_a_script_waits_for(tmp_path: Path, ending: str) -> None:
    script = write_script(tmp_path, SLOW_SCRIPT + ending)
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    reader = threading.Thread(
        target=lambda: errors.extend(iter(process.stderr.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()

    def sleeping() -> bool:
        runs = controller_runs(tmp_path)
        return bool(runs) and steps_of(tmp_path, runs[0]).get("slow") == "running"

    wait_until(sleeping, 120, "step slow to run")
    if not ending:  # the main script has ended: the interpreter waits for the run
        wait_until(lambda: any("before exiting" in line for line in errors), 60, "the exit wait")
    kernels = wait_until(lambda: kernel_pids_of(tmp_path), 60, "the step's kernel")
    process.send_signal(signal.SIGINT)
    assert process.stdout is not None
    stdout = process.stdout.read()
    process.wait(90)
    reader.join(10)
    output = stdout + "".join(errors)
    assert "start returned" in stdout
    assert "wait returned" not in stdout, "Ctrl-C in wait() stops the script"
    if ending:
        assert process.returncode != 0 and "KeyboardInterrupt" in output, output
    (run,) = controller_runs(tmp_path)
    assert run.status == "aborted", output
    assert "interrupted (Ctrl-C)" in (run.error or {}).get("reason", ""), run.error
    state = run.runtime["pipeline"]
    assert state["status"] == "aborted"
    assert {name: node["status"] for name, node in state["nodes"].items()} == {
        "slow": "aborted",
        "after": "skipped",
    }
    assert steps_of(tmp_path, run) == {"slow": "aborted"}, "no step is left running"
    wait_until(lambda: not kernel_pids_of(tmp_path), 30, "the kernels to end")
    left = [pid for pid in kernels if not wait_until_gone(pid, 30)]
    assert left == [], "no kernel is left"


STUCK_SCRIPT = f"""
import time
from clearnb import PipelineController

def stuck(pipeline, node, parameters):
    print("callback running", flush=True)
    time.sleep(300)  # the run cannot settle while this goes on

pipe = PipelineController(name="stuck script", project="scripts")
pipe.add_step(
    name="first", notebook={str(STEPS / "trivial.ipynb")!r}, pre_execute_callback=stuck
)
pipe.start()
pipe.wait()
"""


def test_a_second_ctrl_c_exits_at_once_when_the_run_cannot_settle(tmp_path: Path) -> None:
    script = write_script(tmp_path, STUCK_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    readers = [
        threading.Thread(target=lambda s=stream: lines.extend(iter(s.readline, "")), daemon=True)
        for stream in (process.stdout, process.stderr)
    ]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: any("callback running" in line for line in lines), 120, "the callback")
        process.send_signal(signal.SIGINT)
        wait_until(
            lambda: any("Ctrl-C again to exit at once" in line for line in lines), 30, "the abort"
        )
        assert process.poll() is None, "the first Ctrl-C waits for the run to settle"
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 130, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

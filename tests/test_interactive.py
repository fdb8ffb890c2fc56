"""A step notebook run by hand in Jupyter: ``Task.init`` records a task and a template.

The kernel here is started the way Jupyter starts one (outside clearnb's runner, with the
notebook's path in ``JPY_SESSION_NAME``); what it records is read from other processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jupyter_client.manager import KernelManager

from clearnb import Task
from clearnb.config import Config
from clearnb.execution.runner import NotebookRunner
from tests.helpers import notebook, wait_until_gone

pytestmark = pytest.mark.timeout(180)

PROJECT = "examples"
NAME = "pipeline step 2 process dataset"
STEP = notebook("step_process")

SEED_CODE = f"""\
from clearnb import Task, StorageManager
task = Task.init(project_name={PROJECT!r}, task_name={NAME!r})
args = {{"dataset_url": "", "random_state": 42, "test_size": 0.2}}
task.connect(args)
task.connect({{"lr": 0.1}}, name="Train")
import numpy as np
task.upload_artifact("X_train", np.arange(6).reshape(2, 3))
print("task id:", task.id)
print("args:", sorted(args.items()))
"""

READ_BACK = f"""\
import json
from clearnb import Task
task = Task.get_task(project_name={PROJECT!r}, task_name={NAME!r})
artifact = task.artifacts["X_train"]
value = artifact.get()
print(json.dumps({{
    "id": task.id,
    "status": task.get_status(),
    "notebook": task.notebook,
    "parameters": task.get_parameters_as_dict(),
    "runtime": task.runtime,
    "X_train": value.tolist(),
    "dtype": str(value.dtype),
    "artifact": {{
        "url": artifact.url, "hash": artifact.hash, "size": artifact.size,
        "type": artifact.type, "preview": artifact.preview,
    }},
}}))
"""


def clean_environ(home: Path) -> dict[str, str]:
    """This process's environment with only ``home`` as clearnb's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARNB_")}
    env.pop("JPY_SESSION_NAME", None)
    env["CLEARNB_HOME"] = str(home)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


class HandKernel:
    """A kernel started as Jupyter starts one for a notebook, outside clearnb's runner."""

    def __init__(self, env: dict[str, str], cwd: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.manager = KernelManager(
            kernel_name="python3",
            transport="ipc",
            ip=str(folder / "ipc"),
            connection_file=str(folder / "kernel.json"),
        )
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.pid: int = self.manager.provisioner.pid  # type: ignore[union-attr]
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> str:
        """Execute ``code`` as a cell; return what it printed, or fail with its traceback."""
        printed: list[str] = []

        def on_output(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])

        reply = self.client.execute_interactive(code, timeout=60, output_hook=on_output)
        content = reply["content"]
        if content["status"] != "ok":
            trace = "\n".join(content.get("traceback", []))
            raise AssertionError(
                f"cell failed: {content.get('ename')}: {content.get('evalue')}\n{trace}"
            )
        return "".join(printed)

    def shutdown(self) -> None:
        """Ask the kernel to shut down, as Jupyter's "Shut Down Kernel" does."""
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


@dataclass
class HandRun:
    """What the seed code recorded from a hand-started kernel, seen from elsewhere."""

    home: Path
    printed: str
    seen_while_running: dict[str, Any]
    kernel_pid: int


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        patch.delenv("CLEARNB_TASK_ID", raising=False)
        yield path


@pytest.fixture(scope="module")
def hand_run(home: Path, tmp_path_factory: pytest.TempPathFactory) -> HandRun:
    """Run the seed code in a hand-started kernel, read it back from another process while
    the kernel lives, then shut the kernel down."""
    env = clean_environ(home)
    kernel = HandKernel(
        {**env, "JPY_SESSION_NAME": str(STEP)}, STEP.parent, tmp_path_factory.mktemp("kernel")
    )
    try:
        printed = kernel.run(SEED_CODE)
        done = python(READ_BACK, env)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
    finally:
        kernel.shutdown()
    return HandRun(home, printed, seen, kernel.pid)


def test_another_process_finds_the_task_by_project_and_name(hand_run: HandRun) -> None:
    seen = hand_run.seen_while_running
    assert f"task id: {seen['id']}" in hand_run.printed
    assert seen["status"] == "running"
    assert seen["notebook"] == str(STEP), "the notebook is registered with the task"
    assert seen["runtime"]["interactive"] is True
    assert len(seen["runtime"]["code_hash"]) == 64


def test_parameters_are_recorded_by_section(hand_run: HandRun) -> None:
    parameters = hand_run.seen_while_running["parameters"]
    assert parameters["General"] == {
        "rows": 2,
        "cols": 3,
        "dataset_url": "",
        "random_state": 42,
        "test_size": 0.2,
    }, "the parameters cell's defaults and the connected args"
    assert type(parameters["General"]["test_size"]) is float
    assert parameters["Train"] == {"lr": 0.1}
    assert set(parameters) == {"General", "Train"}
    printed_args = "args: [('dataset_url', ''), ('random_state', 42), ('test_size', 0.2)]"
    assert printed_args in hand_run.printed, "connect leaves a hand-run dict as it is"


def test_the_uploaded_artifact_loads_in_another_process(hand_run: HandRun) -> None:
    seen = hand_run.seen_while_running
    assert seen["X_train"] == [[0, 1, 2], [3, 4, 5]] and seen["dtype"] == "int64"
    facts = seen["artifact"]
    assert facts["type"] == "numpy.ndarray"
    assert facts["url"].startswith(str(hand_run.home / "artifacts" / seen["id"] / "X_train"))
    assert facts["url"].endswith(".npy") and Path(facts["url"]).stat().st_size == facts["size"]
    assert len(facts["hash"]) == 64 and facts["size"] > 48
    assert "(2, 3)" in facts["preview"] and "int64" in facts["preview"]


def test_the_task_completes_when_the_kernel_shuts_down(hand_run: HandRun) -> None:
    assert wait_until_gone(hand_run.kernel_pid)
    task = Task.get_task(project_name=PROJECT, task_name=NAME)
    assert task.id == hand_run.seen_while_running["id"]
    assert task.status == "completed", "atexit finished the hand-started task"
    assert task.record.completed is not None and task.record.started is not None
    assert task.error is None


def test_the_task_serves_as_a_template_for_runs(hand_run: HandRun, home: Path) -> None:
    template = Task.get_task(project_name=PROJECT, task_name=NAME)
    draft = Task.clone(template, name="step 2 run")
    draft.set_parameter("General/rows", 3)
    draft.set_parameter("Train/lr", "0.3")
    with NotebookRunner(Config.at(home), pool_size=0) as runner:
        run = runner.execute(task=draft)
    assert run.id == draft.id and run.status == "completed", run.error
    assert run.parent == template.id
    np.testing.assert_array_equal(run.artifacts["X_train"].get(), np.arange(9).reshape(3, 3))
    seen = run.artifacts["seen"].get()
    assert seen["train"] == {"lr": 0.3}, "the Train override reached connect, typed as float"
    assert seen["args"]["random_state"] == 42
    assert template.reload().get_parameters_as_dict()["Train"] == {"lr": 0.1}


def test_running_connect_again_records_the_edited_values(home: Path, tmp_path: Path) -> None:
    env = clean_environ(home)
    kernel = HandKernel({**env, "JPY_SESSION_NAME": str(STEP)}, STEP.parent, tmp_path)
    try:
        kernel.run(
            "from clearnb import Task\n"
            "task = Task.init(project_name='tests', task_name='edited by hand')\n"
            "train = task.connect({'lr': 0.1, 'epochs': 2}, name='Train')\n"
        )
        printed = kernel.run(
            "task = Task.init(project_name='tests', task_name='edited by hand')\n"
            "train = task.connect({'lr': 0.5, 'epochs': 2}, name='Train')\n"
            "print(task.id, train)\n"
        )
    finally:
        kernel.shutdown()
    task_id, _, shown = printed.strip().partition(" ")
    assert shown == "{'lr': 0.5, 'epochs': 2}", "the edited value is kept, not the old one"
    task = Task.get_task(task_id=task_id)
    assert task.get_parameters_as_dict()["Train"] == {"lr": 0.5, "epochs": 2}
    assert len(Task.get_tasks(project_name="tests", task_name="edited by hand")) == 1


INIT_WITH_NOTEBOOK = """\
import sys
from clearnb import Task
task = Task.init(project_name="scripts", task_name=sys.argv[1], notebook=sys.argv[2] or None)
print(task.id)
"""


def test_init_is_told_the_notebook_when_jupyter_does_not_say(home: Path) -> None:
    env = clean_environ(home)
    done = subprocess.run(
        [sys.executable, "-c", INIT_WITH_NOTEBOOK, "told", str(STEP)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    task = Task.get_task(task_id=done.stdout.strip())
    assert task.notebook == str(STEP) and task.name == "told"
    assert task.get_parameters_as_dict() == {"General": {"rows": 2, "cols": 3}}
    assert task.status == "completed", "the script's exit finished the task"
    assert "could not tell which notebook" not in done.stderr


def test_init_without_a_notebook_warns_that_it_is_no_template(home: Path) -> None:
    env = clean_environ(home)
    done = subprocess.run(
        [sys.executable, "-c", INIT_WITH_NOTEBOOK, "anonymous", ""],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    task = Task.get_task(task_id=done.stdout.strip())
    assert task.notebook is None and task.get_parameters_as_dict() == {}
    assert task.status == "completed"
    assert "could not tell which notebook" in done.stderr
    assert "notebook='path/to/step.ipynb'" in done.stderr

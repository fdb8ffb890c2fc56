"""The ``clearnb`` command, through the installed console script and click's runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from clearnb import Task
from clearnb.cli import main
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(180)

CLEARNB = Path(sys.executable).parent / "clearnb"
"""The console script pip installed next to this Python."""
TASK_ID = re.compile(r"^task\s+([0-9a-f]{32})$", re.MULTILINE)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clearnb(home: Path, *args: str) -> Result:
    """Run the installed ``clearnb`` command with ``home`` as CLEARNB_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARNB_")}
    env["CLEARNB_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    done = subprocess.run(
        [str(CLEARNB), *args], env=env, capture_output=True, text=True, timeout=120
    )
    return Result(done.returncode, done.stdout, done.stderr)


def invoke(home: Path, *args: str) -> Result:
    """Run the command in this process with click's runner."""
    result = CliRunner().invoke(main, list(args), env={"CLEARNB_HOME": str(home)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def task_id_in(output: str) -> str:
    found = TASK_ID.search(output)
    assert found, output
    return found.group(1)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        patch.delenv("CLEARNB_TASK_ID", raising=False)
        yield path


@pytest.fixture(scope="module")
def completed(home: Path) -> Result:
    """``clearnb task run`` of the params notebook, with an override."""
    return clearnb(
        home, "task", "run", str(notebook("params")), "-p", "count", "3",
        "--project", "p", "--name", "n",
    )  # fmt: skip


@pytest.fixture(scope="module")
def failed(home: Path) -> Result:
    """``clearnb task run`` of a notebook whose cell raises."""
    return clearnb(home, "task", "run", str(notebook("raises")), "-p", "value", "5")


def test_run_prints_the_task_and_its_status(completed: Result) -> None:
    assert completed.returncode == 0, completed.output
    task_id = task_id_in(completed.stdout)
    assert re.search(r"^status\s+completed$", completed.stdout, re.MULTILINE)
    assert re.search(r"^name\s+p/n$", completed.stdout, re.MULTILINE)
    assert f"task {task_id} started" in completed.stderr
    assert "cell 3/6" in completed.stderr, "progress lines go to stderr"
    task = Task.get_task(task_id=task_id)
    assert (task.project, task.name, task.status) == ("p", "n", "completed")
    assert task.get_parameter("General/count") == 3
    assert task.artifacts["seen"].get()["count"] == 3
    assert f"output   {task.output_notebook}" in completed.stdout


def test_a_failing_notebook_exits_1_and_shows_the_error(failed: Result) -> None:
    assert failed.returncode == 1, failed.output
    assert re.search(r"^status\s+failed$", failed.stdout, re.MULTILINE)
    assert "raised ValueError: boom 5" in failed.stdout
    task = Task.get_task(task_id=task_id_in(failed.stdout))
    assert task.status == "failed" and task.error is not None
    assert task.error["evalue"] == "boom 5"


def test_a_value_that_does_not_convert_exits_2_and_records_nothing(tmp_path: Path) -> None:
    result = clearnb(tmp_path, "task", "run", str(notebook("params")), "-p", "count", "abc")
    assert result.returncode == 2, result.output
    assert "parameter 'count' of params.ipynb is an int" in result.stderr
    assert "'abc' cannot be converted" in result.stderr
    assert "started" not in result.stderr
    assert invoke(tmp_path, "task", "ls").stdout.startswith("No tasks yet")


def test_an_unknown_parameter_lists_the_declared_ones(tmp_path: Path) -> None:
    result = invoke(tmp_path, "task", "run", str(notebook("params")), "-p", "cuont", "2")
    assert result.returncode == 2
    assert "does not declare a parameter 'cuont'" in result.stderr
    assert "anything, count, flag, items, label, ratio" in result.stderr
    assert invoke(tmp_path, "task", "ls").stdout.startswith("No tasks yet")


def test_a_missing_notebook_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(tmp_path, "task", "run", str(tmp_path / "missing.ipynb"))
    assert result.returncode == 2
    assert "missing.ipynb" in result.stderr and "not found" in result.stderr


def test_ls_on_an_empty_store_says_how_to_start(tmp_path: Path) -> None:
    result = invoke(tmp_path, "task", "ls")
    assert result.returncode == 0
    assert result.stdout == "No tasks yet. Run one with: clearnb task run NOTEBOOK\n"
    assert json.loads(invoke(tmp_path, "task", "ls", "--json").stdout) == []


def test_ls_lists_tasks_newest_first(home: Path, completed: Result, failed: Result) -> None:
    first, second = task_id_in(completed.stdout), task_id_in(failed.stdout)
    result = clearnb(home, "task", "ls")
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STARTED", "DURATION", "PROJECT/NAME"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        (second, "failed", "default/raises"),
        (first, "completed", "p/n"),
    ]
    only = invoke(home, "task", "ls", "--status", "completed", "--json")
    assert [t["id"] for t in json.loads(only.stdout)] == [first]
    assert (
        json.loads(invoke(home, "task", "ls", "--project", "p", "--json").stdout)[0]["id"] == first
    )
    assert len(json.loads(invoke(home, "task", "ls", "--limit", "1", "--json").stdout)) == 1


def test_show_gives_parameters_artifacts_and_output(home: Path, completed: Result) -> None:
    task_id = task_id_in(completed.stdout)
    result = clearnb(home, "task", "show", task_id)
    assert result.returncode == 0, result.output
    out = result.stdout
    assert re.search(r"^status\s+completed$", out, re.MULTILINE)
    assert "  General/count = 3 *" in out, "the override is marked"
    assert "  General/ratio = 0.5\n" in out, "a default is not"
    assert "  Extra/mode = 'fast'" in out
    assert "(* overridden for this run)" in out
    task = Task.get_task(task_id=task_id)
    assert f"output   {task.output_notebook}" in out
    artifacts = out.split("artifacts:\n", 1)[1]
    for name, artifact in task.artifacts.items():
        assert f"  {name} " in artifacts and artifact.url in artifacts
    assert "stdout (last lines):\n  stdout line 3" in out
    assert "stderr (last lines):\n  stderr line" in out


def test_show_of_a_failed_task_gives_the_error_and_traceback(home: Path, failed: Result) -> None:
    result = invoke(home, "task", "show", task_id_in(failed.stdout))
    assert result.returncode == 0
    out = result.stdout
    # the cell as the author counts it, and its number in the executed notebook
    assert "error    code cell 3 (In [4] in the executed notebook) raised ValueError: boom 5" in out
    assert '  ----> 1 raise ValueError(f"boom {value}")' in out
    assert "  ValueError: boom 5" in out
    assert "  General/value = 5 *" in out
    assert "stdout (last lines):\n  before the error" in out
    error_block = out.split("error    ", 1)[1].split("artifacts:")[0]
    assert all(line.startswith("  ") for line in error_block.splitlines()[1:] if line)


def test_show_of_an_unknown_id_names_it(home: Path) -> None:
    result = clearnb(home, "task", "show", "0123456789abcdef0123456789abcdef")
    assert result.returncode == 1, result.output
    assert "No task with id '0123456789abcdef0123456789abcdef'" in result.stderr
    assert "clearnb task ls" in result.stderr
    assert result.stdout == ""


def test_json_output_parses(home: Path, completed: Result) -> None:
    task_id = task_id_in(completed.stdout)
    shown = json.loads(invoke(home, "task", "show", task_id, "--json").stdout)
    assert shown["id"] == task_id and shown["status"] == "completed"
    assert shown["parameters"]["General"]["count"] == 3
    assert shown["runtime"]["overrides"] == ["General/count"]
    assert shown["artifacts"]["seen"]["type"] == "dict"
    assert shown["artifacts"]["notebook"]["size"] > 0
    assert len(shown["artifacts"]["seen"]["hash"]) == 64


def test_run_json_through_the_console_script(tmp_path: Path) -> None:
    result = clearnb(
        tmp_path, "task", "run", str(notebook("raises")), "--json", "--quiet", "-p", "value", "2"
    )
    assert result.returncode == 1, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and data["error"]["evalue"] == "boom 2"
    assert data["parameters"] == {"General": {"value": 2}}
    assert "cell " not in result.stderr, "--quiet prints no progress"
    stored = json.loads(invoke(tmp_path, "task", "ls", "--json").stdout)
    assert [t["id"] for t in stored] == [data["id"]]


def test_version_and_help() -> None:
    result = subprocess.run([str(CLEARNB), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "0.1.0" in result.stdout
    helped = CliRunner().invoke(main, ["task", "run", "--help"])
    assert helped.exit_code == 0 and "NAME VALUE" in helped.output


def test_enqueue_list_and_abort_a_queued_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    draft = Task.create(project_name="cli", task_name="params", notebook=notebook("params"))

    queued = invoke(tmp_path, "task", "enqueue", draft.id, "--queue", "later")
    assert queued.returncode == 0
    assert f"task {draft.id} (params) queued on 'later'" in queued.stdout
    assert "no agent serves queue 'later'" in queued.stderr
    assert "clearnb agent --queue later" in queued.stderr

    listed = invoke(tmp_path, "queue", "ls")
    assert re.search(r"later\s+1\s+\S+\s+none: no agent serves it", listed.stdout)
    data = json.loads(invoke(tmp_path, "queue", "ls", "--json").stdout)
    assert data["queues"]["later"] == {"waiting": [draft.id], "agents": []}
    assert "queue    later" in invoke(tmp_path, "task", "show", draft.id).stdout

    again = invoke(tmp_path, "task", "enqueue", draft.id, "--queue", "later")
    assert again.returncode == 0, "a queued task may be moved or re-queued"
    aborted = invoke(tmp_path, "task", "abort", draft.id)
    assert aborted.returncode == 0 and "aborted (it was queued)" in aborted.stdout
    assert draft.get_status() == "aborted"
    refused = invoke(tmp_path, "task", "enqueue", draft.id, "--queue", "later")
    assert refused.returncode == 1 and "is aborted; clone it" in refused.stderr
    assert "No task waits in a queue" in invoke(tmp_path, "queue", "ls").stdout


def test_an_agent_needs_a_queue_and_sane_numbers(tmp_path: Path) -> None:
    missing = invoke(tmp_path, "agent")
    assert missing.returncode == 2 and "--queue" in missing.stderr
    workers = invoke(tmp_path, "agent", "--queue", "q", "--workers", "0")
    assert workers.returncode == 1 and "at least one task at a time" in workers.stderr


def test_a_memory_limit_stops_the_run_and_says_so(tmp_path: Path) -> None:
    hog = str(notebook("faults/hog"))
    over = invoke(tmp_path, "task", "run", hog, "-p", "hold", "0", "--memory-limit", "250MB", "-q")
    assert over.returncode == 1
    assert "over the step's memory limit of 250 MB" in over.stdout
    bad = invoke(tmp_path, "task", "run", hog, "--memory-limit", "lots")
    assert bad.returncode == 2 and "memory_limit must be bytes or a size" in bad.stderr


def test_show_lists_every_report_with_a_summary(home: Path, tmp_path: Path) -> None:
    from tests.reporting import EXPECTED, report_every_kind

    task = Task.create(project_name="p", task_name="reports", notebook=notebook("params"))
    report_every_kind(task.get_logger(), tmp_path)
    shown = invoke(home, "task", "show", task.id).stdout
    lines = shown[shown.index("reports:") :].splitlines()[1:]
    for kind, (where, iteration, summary) in EXPECTED.items():
        (line,) = [line for line in lines if line.split()[0] == kind and where in line]
        assert iteration in line and summary in line, line
    assert any("page / html" in line and "text/html" in line for line in lines)

    data = json.loads(invoke(home, "task", "show", task.id, "--json").stdout)
    by_kind = {r["kind"]: r for r in data["reports"]}
    assert set(EXPECTED) <= set(by_kind)
    assert by_kind["histogram"]["payload"]["mode"] == "stack"
    assert by_kind["image"]["summary"].startswith("image/png, 6x4 RGB")


def test_show_lists_the_latest_reports_only(home: Path) -> None:
    from clearnb.cli.tasks import SHOWN_REPORTS

    task = Task.create(project_name="p", task_name="many", notebook=notebook("params"))
    for index in range(SHOWN_REPORTS + 3):
        task.get_logger().report_text(f"line {index}", print_console=False)
    shown = invoke(home, "task", "show", task.id).stdout
    assert "(3 earlier reports not shown; --json lists them all)" in shown
    assert "line 2\n" not in shown and f"line {SHOWN_REPORTS + 2}" in shown
    assert len(json.loads(invoke(home, "task", "show", task.id, "--json").stdout)["reports"]) == (
        SHOWN_REPORTS + 3
    )

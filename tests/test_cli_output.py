"""What the commands print is safe for a terminal, whatever users named or printed.

Every text a user gives (task, project, pipeline, step, queue and agent names, parameter
keys and values, error messages, printed output, artifact previews) is stored with
newlines, escape sequences and bidirectional overrides in it; every command that shows
it must print those escaped: no row split, no raw control character, only the colours
the command itself sets.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from clearnb import Task
from clearnb.backend import Backend
from clearnb.cli import main
from clearnb.config import Config
from clearnb.store import pipelines
from clearnb.store.records import ReportRecord, WorkerRecord
from clearnb.text import printable, printable_block, printable_text
from tests.helpers import notebook

pytestmark = pytest.mark.timeout(120)

HOSTILE = "evil\n\x1b]0;owned\x07\x1b[2J\x1b[8mhidden\u202eflip\r\tend\x00"
"""Newline, a window-title OSC, a screen clear, a conceal colour, a right-to-left
override, a carriage return, a tab and a NUL."""
ESCAPED = "evil\\n\\x1b]0;owned\\x07\\x1b[2J\\x1b[8mhidden\\u202eflip\\r\\tend\\x00"
OURS = re.compile(r"\x1b\[[0-9;]*m")
"""The colours click.style writes (the command's own)."""
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_printable_escapes_every_control_character() -> None:
    assert printable(HOSTILE) == ESCAPED
    assert printable("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert printable_text("a\n\tb\x1b[31m") == "a\n\tb\\x1b[31m"
    # a block keeps colours (kernels colour tracebacks) and line breaks, nothing else
    assert printable_block("a\n\x1b[31mred\x1b[0m\x1b[2J\x1b]0;t\x07") == (
        "a\n\x1b[31mred\x1b[0m\\x1b[2J\\x1b]0;t\\x07"
    )


@pytest.fixture
def hostile_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, str]:
    """A store whose task, pipeline, queue and agent carry :data:`HOSTILE` everywhere."""
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARNB_HOME", str(home))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    store = Backend.for_config(Config.at(home)).store
    task = Task.create(project_name=HOSTILE, task_name=HOSTILE, notebook=notebook("params"))
    task.set_parameters({f"General/{HOSTILE}": HOSTILE})
    task.upload_artifact("note", HOSTILE)
    store.add_report(
        ReportRecord(task.id, "text", title=HOSTILE, series=HOSTILE, payload={"text": HOSTILE})
    )
    store.add_report(ReportRecord(task.id, "log", title="stdout", payload={"text": HOSTILE}))
    store.update_task(
        task.id,
        status="failed",
        started=time.time() - 3,
        completed=time.time(),
        error={"reason": HOSTILE, "traceback": [HOSTILE]},
        notebook=f"/tmp/{HOSTILE}.ipynb",
        output_notebook=f"/tmp/{HOSTILE}.out.ipynb",
    )
    queued = Task.create(project_name="p", task_name=HOSTILE, notebook=notebook("params"))
    store.enqueue_task(queued.id, HOSTILE)
    store.put_worker(WorkerRecord(id=HOSTILE, host="here", pid=1, queues=[HOSTILE]))
    run = Task.create(
        project_name=HOSTILE, task_name=HOSTILE, notebook=notebook("params"), task_type="controller"
    )
    step = {key: None for key in pipelines.STEP_KEYS}
    step.update(
        name=HOSTILE,
        parents=[],
        kind="notebook",
        source=HOSTILE,
        parameters={HOSTILE: HOSTILE},
        resolved={HOSTILE: HOSTILE},
        status="failed",
        started=time.time() - 2,
        ended=time.time(),
        retries=0,
        error={"reason": HOSTILE},
        warnings=[HOSTILE],
        executed=task.id,
    )
    pipelines.write_run(
        store,
        run.id,
        {
            "name": HOSTILE,
            "project": HOSTILE,
            "version": HOSTILE,
            "status": "failed",
            "started": time.time() - 3,
            "ended": time.time(),
            "order": [HOSTILE],
            "nodes": {HOSTILE: step},
        },
    )
    store.update_task(run.id, status="failed", error={"reason": HOSTILE})
    return home, task.id, run.id


def shown(home: Path, *args: str) -> str:
    """What ``clearnb ARGS`` prints (both streams), colours kept as a terminal gets them."""
    result = CliRunner().invoke(main, list(args), env={"CLEARNB_HOME": str(home)}, color=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.stdout + result.stderr


def assert_terminal_safe(output: str) -> None:
    found = RAW.findall(OURS.sub("", output))
    assert not found, f"raw control characters {found!r} in:\n{output!r}"


def test_every_command_escapes_what_users_named_or_printed(
    hostile_home: tuple[Path, str, str],
) -> None:
    home, task_id, run_id = hostile_home
    for args in (
        ("task", "ls"),
        ("task", "show", task_id),
        ("pipeline", "ls"),
        ("pipeline", "show", run_id),
        ("queue", "ls"),
        ("task", "show", HOSTILE),  # an unknown id, named in the error
    ):
        output = shown(home, *args)
        assert_terminal_safe(output)
        assert ESCAPED in output or "\\x1b]0;owned" in output, (args, output)


def test_a_newline_in_a_name_does_not_split_a_row(hostile_home: tuple[Path, str, str]) -> None:
    home, _, run_id = hostile_home
    rows = shown(home, "task", "ls").splitlines()
    assert len(rows) == 1 + 3, rows  # the header, then one row per task
    assert all(ESCAPED in row for row in rows[1:]), rows
    runs = shown(home, "pipeline", "ls").splitlines()
    assert len(runs) == 2 and runs[1].startswith(run_id), runs

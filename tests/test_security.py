"""Security properties checked on real kernels: no TCP port, parameters never run as code."""

from __future__ import annotations

import ast
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from clearnb import Task
from clearnb.config import Config
from clearnb.errors import ParameterError
from clearnb.execution.kernels import FORK_ENV
from clearnb.execution.runner import NotebookRunner, RunHandle
from tests.execution.conftest import home
from tests.helpers import NOTEBOOKS, child_kernel_pids, kernel_pids_of

pytestmark = pytest.mark.timeout(120)

FAULTS = NOTEBOOKS / "faults"
__all__ = ["home"]  # the module-wide clearnb home fixture


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[NotebookRunner]:
    with NotebookRunner(Config.at(home), pool_size=2) as shared:
        yield shared
    assert kernel_pids_of(shared.config.home) == []


# -- no TCP port ----------------------------------------------------------------------------


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[len("socket:[") : -1]))
    return found


def tcp_sockets(pid: int) -> dict[int, str]:
    """``{inode: state}`` of every TCP socket (IPv4 and IPv6) in ``pid``'s network namespace."""
    sockets: dict[int, str] = {}
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            sockets[int(fields[9])] = "LISTEN" if fields[3] == "0A" else fields[3]
    return sockets


def unix_sockets(pid: int) -> dict[int, str]:
    """``{inode: path}`` of every Unix socket in ``pid``'s network namespace."""
    sockets: dict[int, str] = {}
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        sockets[int(fields[6])] = fields[7] if len(fields) > 7 else ""
    return sockets


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_kernels_listen_on_no_tcp_port(tmp_path: Path, fork: bool) -> None:
    pid_file = tmp_path / "pid"
    handle = RunHandle()
    results: list[Task] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FORK_ENV, "1" if fork else "0")
        runner = NotebookRunner(Config.at(tmp_path / "home"), pool_size=1)
    with runner:
        worker = threading.Thread(
            target=lambda: results.append(
                runner.execute(FAULTS / "stuck.ipynb", {"pid_file": str(pid_file)}, handle=handle)
            )
        )
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while not (pid_file.exists() and pid_file.read_text()):
                assert time.monotonic() < deadline, "the notebook never started"
                time.sleep(0.02)
            kernel = int(pid_file.read_text())
            processes = {kernel, *child_kernel_pids()}  # the kernels and the fork server
            tcp, unix = tcp_sockets(kernel), unix_sockets(kernel)
            owned = {pid: socket_inodes(pid) for pid in processes}
            ipc = [unix[inode] for inode in owned[kernel] if unix.get(inode)]
            folders = {Path(path).parent for path in ipc}
            modes = {folder: folder.stat().st_mode & 0o777 for folder in folders}
        finally:
            handle.abort("checked")
            worker.join(60)
    assert results and results[0].status == "aborted"
    assert owned[kernel], "the running kernel has no socket at all: nothing was checked"
    for pid, inodes in owned.items():
        held = {inode: tcp[inode] for inode in inodes if inode in tcp}
        assert held == {}, f"process {pid} holds TCP sockets: {held}"
    assert len(ipc) >= 5, f"the kernel's channels are not Unix (IPC) sockets: {ipc}"
    assert len(folders) == 1, f"IPC sockets are spread over {folders}"
    assert set(modes.values()) == {0o700}, f"the IPC folder is open to others: {modes}"
    assert child_kernel_pids() == []
    assert kernel_pids_of(runner.config.home) == []


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_output_of_forked_children_still_reaches_the_notebook(tmp_path: Path, fork: bool) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FORK_ENV, "1" if fork else "0")
        runner = NotebookRunner(Config.at(tmp_path / "home"), pool_size=0)
    with runner:
        task = runner.execute(FAULTS / "child_output.ipynb", {"message": "over IPC"})
    assert task.status == "completed", task.error
    executed = nbformat.read(task.artifacts["notebook"].get_local_copy(), as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "from a forked child: over IPC" in printed
    assert "the child is done" in printed
    assert child_kernel_pids() == []
    assert kernel_pids_of(runner.config.home) == []


# -- parameters are literals ------------------------------------------------------------------

PAYLOADS = [
    "__import__('os').system('touch DIR/pwned-1')",
    "1); import os; os.system('touch DIR/pwned-2') #",
    '"; import os; os.system("touch DIR/pwned-3"); "',
    "\\\"; import os; os.system('touch DIR/pwned-4') #",
    "'''; import os; os.system('touch DIR/pwned-5'); '''",
    '"""; import os; os.system("touch DIR/pwned-6"); """',
    "x\nimport os\nos.system('touch DIR/pwned-7')\n#",
    "\\\nimport os; os.system('touch DIR/pwned-8')",
    "{__import__('os').system('touch DIR/pwned-9')}",
    "\x00\r\u2028import os; os.system('touch DIR/pwned-10')",
]
"""Strings that would run ``touch`` if a parameter were ever pasted into code unquoted."""


def only_literals(source: str) -> dict[str, Any]:
    """The names the injected-parameters cell assigns, checked to be plain literals."""
    assigned: dict[str, Any] = {}
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.Assign), ast.dump(statement)
        (target,) = statement.targets
        assert isinstance(target, ast.Name)
        assigned[target.id] = ast.literal_eval(statement.value)  # raises on any code
    return assigned


@pytest.mark.parametrize("number", range(1, len(PAYLOADS) + 1))
def test_a_parameter_arrives_as_the_exact_string_and_never_runs(
    runner: NotebookRunner, tmp_path: Path, number: int
) -> None:
    payload = PAYLOADS[number - 1].replace("DIR", str(tmp_path))
    task = runner.execute(
        FAULTS / "echo.ipynb",
        {
            "text": payload,
            "items": [payload, [payload], {"key": payload}],
            "mapping": {payload: payload, "nested": {"list": [payload]}},
            "Extra/note": payload,
        },
        cwd=tmp_path,
    )
    assert task.status == "completed", task.error
    seen = task.artifacts["seen"].get()
    assert seen["text"] == payload
    assert seen["items"] == [payload, [payload], {"key": payload}]
    assert seen["mapping"] == {payload: payload, "nested": {"list": [payload]}}
    assert seen["note"] == payload
    assert seen["types"] == ["str", "list", "dict"]
    executed = nbformat.read(task.artifacts["notebook"].get_local_copy(), as_version=4)
    (injected,) = [c for c in executed.cells if "injected-parameters" in c.metadata.tags]
    assert only_literals(injected.source) == {
        "text": payload,
        "items": [payload, [payload], {"key": payload}],
        "mapping": {payload: payload, "nested": {"list": [payload]}},
    }
    created = [path for folder in (tmp_path, FAULTS, Path.cwd()) for path in folder.glob("pwned-*")]
    assert created == [], f"a parameter ran as code: {created}"


def test_code_in_a_list_parameter_given_as_text_is_refused(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    before = len(runner.backend.store.find_tasks())
    code = f"[__import__('os').system('touch {tmp_path}/pwned')]"
    with pytest.raises(ParameterError, match="expected a list"):
        runner.execute(FAULTS / "echo.ipynb", {"items": code}, cwd=tmp_path)
    assert len(runner.backend.store.find_tasks()) == before
    assert not (tmp_path / "pwned").exists()

"""The ``clearnb`` engine as papermill's own users meet it: its public API and its CLI.

Each test runs real kernels and checks one point where the engine must behave as papermill's
default engine does (the differences kept on purpose are in the README's papermill section).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillParameterOverwriteWarning

from clearnb.config import Config
from clearnb.execution.engine import ClearnbEngine
from clearnb.execution.runner import NotebookRunner
from clearnb.notebook.files import check_kernel, load_notebook
from tests.helpers import child_kernel_pids, notebook

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def outputs(path: Path) -> list[str]:
    """The text of each code cell's outputs in the executed notebook at ``path``."""
    executed = nbformat.read(path, as_version=4)
    return [
        "".join(o.get("text", "") or o.get("evalue", "") for o in cell.get("outputs", []))
        for cell in executed.cells
        if cell.cell_type == "code"
    ]


def papermill_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``papermill -e clearnb ARGS``, run from ``cwd`` with this tree's clearnb first."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [str(Path(sys.executable).parent / "papermill"), "--engine", "clearnb", *args]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=100, check=False
    )


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A caller's folder holding the notebook and a working folder holding ``data.txt``."""
    caller, work = tmp_path / "caller", tmp_path / "work"
    caller.mkdir()
    work.mkdir()
    shutil.copy(notebook("papermill/cwd"), caller / "cwd.ipynb")
    (work / "data.txt").write_text("in the working folder")
    return caller, work


# -- 1. the working folder ------------------------------------------------------------------


def test_cwd_is_where_the_kernel_runs_and_paths_stay_the_callers(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, work = folders
    monkeypatch.chdir(caller)
    papermill.execute_notebook(
        "cwd.ipynb", "out.ipynb", engine_name="clearnb", cwd=str(work), progress_bar=False
    )
    # relative notebook paths are the caller's; relative paths in cells are cwd's
    assert not (work / "out.ipynb").exists()
    assert outputs(caller / "out.ipynb") == [f"{work}\n", "in the working folder\n"]
    assert child_kernel_pids() == []


def test_without_cwd_the_kernel_runs_in_the_callers_folder(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    caller, work = folders
    shutil.copy(caller / "cwd.ipynb", work / "cwd.ipynb")
    monkeypatch.chdir(work)
    papermill.execute_notebook("cwd.ipynb", "out.ipynb", engine_name="clearnb", progress_bar=False)
    assert outputs(work / "out.ipynb") == [f"{work}\n", "in the working folder\n"]


def test_cli_cwd_and_log_output(folders: tuple[Path, Path]) -> None:
    caller, work = folders
    done = papermill_cli("--cwd", str(work), "--log-output", "cwd.ipynb", "out.ipynb", cwd=caller)
    assert done.returncode == 0, done.stderr
    assert outputs(caller / "out.ipynb") == [f"{work}\n", "in the working folder\n"]
    assert "Executing notebook with kernel: python3" in done.stderr
    assert "in the working folder" in done.stderr  # the cell's output, logged by papermill


# -- 2. kernel name aliases -----------------------------------------------------------------


def test_a_notebook_asking_for_the_python_kernel_runs(tmp_path: Path, home: Path) -> None:
    path = notebook("papermill/python_kernel")
    assert check_kernel(load_notebook(path), path.name) == "python"  # not refused
    papermill.execute_notebook(
        str(path), str(tmp_path / "out.ipynb"), engine_name="clearnb", progress_bar=False
    )
    assert outputs(tmp_path / "out.ipynb") == ["ran on python\n"]
    done = papermill_cli(str(path), "cli.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert outputs(tmp_path / "cli.ipynb") == ["ran on python\n"]
    with NotebookRunner(Config.at(home), pool_size=0) as runner:  # and on clearnb's own runner
        assert runner.execute(path, project_name="aliases").status == "completed"


# -- 3. engine arguments --------------------------------------------------------------------


def test_log_output_goes_to_papermills_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="papermill")
    papermill.execute_notebook(
        str(notebook("no_params")),
        str(tmp_path / "out.ipynb"),
        engine_name="clearnb",
        log_output=True,
        progress_bar=False,
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "papermill"]
    assert "Executing notebook with kernel: python3" in logged
    assert "1\n" in logged  # the first cell's output
    assert any(m.startswith("Executing Cell 1") for m in logged)


def test_a_log_argument_is_overwritten_as_on_papermills_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="papermill")
    with pytest.warns(PapermillParameterOverwriteWarning):
        papermill.execute_notebook(
            str(notebook("no_params")),
            str(tmp_path / "out.ipynb"),
            engine_name="clearnb",
            log_output=True,
            progress_bar=False,
            log=logging.getLogger("elsewhere"),
        )
    assert "1\n" in [r.getMessage() for r in caplog.records if r.name == "papermill"]


def test_client_options_reach_nbclient(tmp_path: Path) -> None:
    finished: list[int] = []

    def on_cell_complete(cell: Any, cell_index: int) -> None:
        finished.append(cell_index)

    with pytest.raises(CellTimeoutError):
        papermill.execute_notebook(
            str(notebook("papermill/sleeps")),
            str(tmp_path / "out.ipynb"),
            engine_name="clearnb",
            progress_bar=False,
            timeout=1,
            on_cell_complete=on_cell_complete,
        )
    assert finished == [0]  # the hook ran for the cell that timed out
    assert child_kernel_pids() == []


def test_kernel_start_options_are_refused_aloud(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="ignores \\['extra_arguments'\\]"):
        papermill.execute_notebook(
            str(notebook("no_params")),
            str(tmp_path / "out.ipynb"),
            engine_name="clearnb",
            progress_bar=False,
            extra_arguments=["--quiet"],
        )
    assert outputs(tmp_path / "out.ipynb")[0] == "1\n"


def test_called_directly_the_engine_shows_papermills_progress_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nb = load_notebook(notebook("no_params"))
    nb.metadata["papermill"] = {}
    executed = ClearnbEngine.execute_notebook(nb, "python3")
    assert executed.metadata.papermill["exception"] is None
    assert "Executing" in capsys.readouterr().err  # tqdm writes on stderr


def test_a_dead_kernel_raises_nbclients_dead_kernel_error(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    with pytest.raises(DeadKernelError):
        papermill.execute_notebook(
            str(notebook("exits")), str(output), engine_name="clearnb", progress_bar=False
        )
    texts = outputs(output)
    assert texts[0] == "about to exit\n" and texts[2] == ""
    assert "The kernel died" in texts[1]  # the cell that was running says why
    assert child_kernel_pids() == []
    done = papermill_cli(str(notebook("exits")), "cli.ipynb", cwd=tmp_path)
    assert done.returncode != 0 and "DeadKernelError" in done.stderr


# -- 4. saving the output notebook ----------------------------------------------------------


def run_autosave(tmp_path: Path, wait: float, pause: float = 1.5, **options: Any) -> list[str]:
    """Run the autosave notebook: does the output file show a cell's output before it ends?"""
    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(notebook("papermill/autosave")),
        str(output),
        parameters={"out": str(output), "wait": wait, "pause": pause},
        engine_name="clearnb",
        progress_bar=False,
        **options,
    )
    return outputs(output)


def test_autosave_cell_every_saves_during_a_long_cell(tmp_path: Path) -> None:
    texts = run_autosave(tmp_path, 10.0, autosave_cell_every=1)
    assert texts[-2] == "exists at start: True\n"
    assert texts[-1].endswith("saved during the cell: True\n")


def test_autosave_cell_every_is_not_held_back_by_the_engines_own_throttle(
    tmp_path: Path,
) -> None:
    # the engine writes at most every 0.5 s at cell starts and ends; papermill's autosave
    # keeps its own interval, however short: every mark, 0.1 s apart, is saved in time
    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(notebook("papermill/saves_often")),
        str(output),
        parameters={"out": str(output)},
        engine_name="clearnb",
        progress_bar=False,
        autosave_cell_every=0.05,
    )
    found = int(outputs(output)[-1].splitlines()[-1].split()[1])
    assert found >= 7  # about 4 of 9 when writes wait 0.5 s; slack for a loaded machine


def test_autosave_cell_every_zero_turns_it_off(tmp_path: Path) -> None:
    texts = run_autosave(tmp_path, 2.0, autosave_cell_every=0)
    assert texts[-1].endswith("saved during the cell: False\n")


def test_no_save_on_cell_execute_writes_only_at_the_end(tmp_path: Path) -> None:
    texts = run_autosave(tmp_path, 2.0, request_save_on_cell_execute=False, autosave_cell_every=1)
    assert texts[-2] == "exists at start: False\n"
    assert texts[-1].endswith("saved during the cell: False\n")


def test_cli_autosave_cell_every(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    done = papermill_cli(
        "--autosave-cell-every",
        "1",
        "-p",
        "out",
        str(output),
        str(notebook("papermill/autosave")),
        str(output),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert outputs(output)[-1].endswith("saved during the cell: True\n")

"""Python step scripts, as ClearML users write them, read and run as notebooks.

A script is converted with jupytext (cells at ``# %%`` markers, else one per top-level
block), runs on a real kernel as ``python script.py`` would (``sys.argv``, ``__file__``),
and leaves an executed notebook; ``python script.py`` with ``Task.init`` registers it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from clearnb import Task
from clearnb.config import Config
from clearnb.errors import NotANotebookError
from clearnb.execution.runner import NotebookRunner
from clearnb.notebook.files import code_fingerprint, load_notebook
from clearnb.notebook.parameters import NotebookParameters

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
INJECTED = "injected-parameters"


def script_environment(home: Path) -> dict[str, str]:
    """The environment of a script run by hand: its own store, this tree first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARNB_")}
    env.pop("JPY_SESSION_NAME", None)
    env["CLEARNB_HOME"] = str(home)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def write(path: Path, code: str) -> Path:
    """``code`` (dedented) written to ``path``."""
    path.write_text(textwrap.dedent(code).lstrip())
    return path


def run_python(
    script: Path, home: Path, *arguments: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python script.py arguments...`` with ``home`` as its store."""
    return subprocess.run(
        [sys.executable, str(script), *arguments],
        env=script_environment(home),
        cwd=str(cwd or script.parent),
        capture_output=True,
        text=True,
        timeout=120,
    )


def executed(task: Task) -> nbformat.NotebookNode:
    """The executed notebook kept with ``task``."""
    return nbformat.read(task.artifacts["notebook"].get_local_copy(), as_version=4)


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        patch.delenv("CLEARNB_TASK_ID", raising=False)
        yield path


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[NotebookRunner]:
    with NotebookRunner(Config.at(home), pool_size=1) as shared:
        yield shared


# -- reading ------------------------------------------------------------------------------

PERCENT = """
    # %% tags=["parameters"]
    rows = 3

    # %% [markdown]
    # Some words about the step.

    # %%
    total = rows * 2

    def twice(value):

        return value * 2
    # %%
    print(twice(total))
"""


def test_a_script_with_cell_markers_is_split_at_them(tmp_path: Path) -> None:
    nb = load_notebook(write(tmp_path / "marked.py", PERCENT))
    kinds = [cell.cell_type for cell in nb.cells]
    assert kinds == ["code", "markdown", "code", "code"]
    assert nb.cells[0].source == "rows = 3"
    assert nb.cells[0].metadata["tags"] == ["parameters"], "cell metadata is kept"
    assert nb.cells[1].source == "Some words about the step."
    assert "def twice(value):\n\n    return value * 2" in nb.cells[2].source, "blank lines kept"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert NotebookParameters.of(nb).cell is not None, "the tagged cell is the parameters cell"


LIGHT = """
    import json
    from clearnb import Task

    task = Task.init(project_name="scripts", task_name="light")
    args = {"rows": 3}
    task.connect(args)


    def describe(value):
        text = json.dumps(value)

        return text

    print(describe(args))
"""


def test_a_script_without_markers_has_a_cell_per_top_level_block(tmp_path: Path) -> None:
    nb = load_notebook(write(tmp_path / "light.py", LIGHT))
    sources = [cell.source for cell in nb.cells]
    assert sources[0] == "import json\nfrom clearnb import Task"
    assert sources[1].startswith("task = Task.init(") and sources[1].endswith("task.connect(args)")
    assert sources[2].startswith("def describe(value):") and "return text" in sources[2], (
        "a function stays in one cell, blank lines and all"
    )
    assert sources[-1] == "print(describe(args))"
    declared = NotebookParameters.of(nb)
    assert declared.defaults() == {"General": {"rows": 3}}, "the connected dict is declared"


def test_a_binary_or_undecodable_script_is_refused_with_the_reason(tmp_path: Path) -> None:
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"\x00\x01\x02 not python")
    with pytest.raises(NotANotebookError, match="binary file"):
        load_notebook(binary)
    latin = tmp_path / "latin.py"
    latin.write_bytes("print('caf\xe9')".encode("latin-1"))
    with pytest.raises(NotANotebookError, match="not UTF-8"):
        load_notebook(latin)


def test_the_code_fingerprint_of_a_script_is_its_code(tmp_path: Path) -> None:
    script = write(tmp_path / "step.py", LIGHT)
    first = code_fingerprint(load_notebook(script))
    assert code_fingerprint(load_notebook(script)) == first
    script.write_text(script.read_text().replace('"rows": 3', '"rows": 4'))
    assert code_fingerprint(load_notebook(script)) != first


# -- running --------------------------------------------------------------------------------

SEES = """
    import os
    import sys

    from clearnb import Task

    task = Task.init(project_name="scripts", task_name="sees")
    args = {"rows": 3, "label": "plain"}
    task.connect(args)
    task.upload_artifact("seen", {
        "argv": sys.argv, "file": __file__, "cwd": os.getcwd(), "args": args,
        "rows_type": type(args["rows"]).__name__,
    })
"""


def test_a_script_runs_as_a_notebook_seeing_what_python_would(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    script = write(tmp_path / "sees.py", SEES)
    task = runner.execute(script, {"General/rows": "5"})
    assert task.status == "completed", task.error
    seen = task.artifacts["seen"].get()
    assert seen["argv"] == [str(script)], "not the kernel's -f connection file"
    assert seen["file"] == str(script) and seen["cwd"] == str(tmp_path)
    assert seen["args"] == {"rows": 5, "label": "plain"} and seen["rows_type"] == "int"
    assert (task.project, task.name) == ("scripts", "sees"), "named by its Task.init"
    assert task.notebook == str(script)
    assert task.output_notebook is not None and task.output_notebook.endswith("sees.ipynb")
    nb = executed(task)
    (injected,) = tagged(nb, INJECTED)
    assert injected.source.strip().splitlines()[-1] == "rows = 5"
    outputs = [cell for cell in nb.cells if cell.cell_type == "code" and not tagged_cell(cell)]
    assert [cell.source for cell in outputs] == [
        cell.source for cell in load_notebook(script).cells
    ], "the script's cells, in order"
    assert task.runtime["code_hash"] == code_fingerprint(load_notebook(script))


def test_a_script_imports_its_neighbours_from_another_working_folder(
    runner: NotebookRunner, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "helpers_of_step.py").write_text("ANSWER = 42\n")
    script = write(
        code / "uses_helper.py",
        """
        import os

        from clearnb import Task
        from helpers_of_step import ANSWER

        Task.init().upload_artifact("seen", {"answer": ANSWER, "cwd": os.getcwd()})
        """,
    )
    elsewhere = tmp_path / "data"
    elsewhere.mkdir()
    task = runner.execute(script, cwd=elsewhere)
    assert task.status == "completed", task.error
    assert task.artifacts["seen"].get() == {"answer": 42, "cwd": str(elsewhere)}


def tagged_cell(cell: nbformat.NotebookNode) -> bool:
    return INJECTED in cell.get("metadata", {}).get("tags", [])


RAISES = """
    # %%
    from clearnb import Task

    task = Task.init(project_name="scripts", task_name="raises")

    # %%
    ready = True

    # %%
    raise RuntimeError("no data for step")

    # %%
    print("never here")
"""


def test_a_script_that_raises_fails_at_its_cell(runner: NotebookRunner, tmp_path: Path) -> None:
    script = write(tmp_path / "raising.py", RAISES)
    task = runner.execute(script)
    assert task.status == "failed"
    error = task.error
    assert error is not None and error["ename"] == "RuntimeError"
    assert "raised RuntimeError: no data for step" in error["reason"]
    nb = executed(task)
    failing = [c for c in nb.cells if c.get("metadata", {}).get("papermill", {}).get("exception")]
    assert [cell.source for cell in failing] == ['raise RuntimeError("no data for step")']
    assert load_notebook(script).cells[error["cell_index"]].source == failing[0].source
    assert error["source"] == failing[0].source
    assert tagged(nb, "papermill-error-cell-tag"), "the error is marked as for a notebook"
    assert "never here" not in json.dumps([cell.get("outputs", []) for cell in nb.cells])


def test_task_run_runs_a_script(home: Path, tmp_path: Path) -> None:
    from tests.test_cli import invoke, task_id_in

    script = write(tmp_path / "cli_step.py", SEES)
    result = invoke(home, "task", "run", str(script), "-p", "rows", "8")
    assert result.returncode == 0, result.output
    task = Task.get_task(task_id=task_id_in(result.stdout))
    assert task.status == "completed", task.error
    assert task.artifacts["seen"].get()["args"]["rows"] == 8


# -- registering ------------------------------------------------------------------------------

REGISTERS = """
    from clearnb import Task

    task = Task.init(project_name="scripts", task_name="registered")
    args = {"rows": 3, "label": "plain"}
    task.connect(args)
    task.execute_remotely()

    print("not here")
"""


def test_python_script_registers_the_script_as_a_template(home: Path, tmp_path: Path) -> None:
    script = write(tmp_path / "register_me.py", REGISTERS)
    done = run_python(script, home)
    assert done.returncode == 0, done.stderr
    assert "not here" not in done.stdout
    assert "The rest of the script does not run here." in done.stderr
    assert "could not tell which notebook" not in done.stderr
    template = Task.get_task(project_name="scripts", task_name="registered")
    assert template.notebook == str(script)
    assert template.status == "created", "execute_remotely() without a queue: a draft"
    assert template.get_parameters_as_dict() == {"General": {"rows": 3, "label": "plain"}}
    assert template.runtime["template"] is True
    assert template.runtime["code_hash"] == code_fingerprint(load_notebook(script))


def test_a_package_main_is_no_template(home: Path, tmp_path: Path) -> None:
    package = tmp_path / "stepkit"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package / "__main__.py", REGISTERS.replace("registered", "from a package"))
    done = subprocess.run(
        [sys.executable, "-m", "stepkit"],
        env=script_environment(home),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "could not tell which notebook" in done.stderr, "python -m package runs no file alone"


def test_task_create_registers_a_script(home: Path, tmp_path: Path) -> None:
    script = write(tmp_path / "created.py", LIGHT)
    task = Task.create(project_name="scripts", task_name="created", notebook=script)
    assert task.notebook == str(script) and task.status == "created"
    assert task.get_parameters_as_dict() == {"General": {"rows": 3}}
    assert task.runtime["code_hash"] == code_fingerprint(load_notebook(script))

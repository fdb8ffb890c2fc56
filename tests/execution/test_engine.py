"""The ``clearnb`` papermill engine, used by papermill itself without a runner."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from tests.helpers import child_kernel_pids, notebook

pytestmark = pytest.mark.timeout(120)


def test_papermill_runs_notebooks_on_the_clearnb_engine(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(notebook("no_params")),
        str(output),
        engine_name="clearnb",
        progress_bar=False,
    )
    executed = nbformat.read(output, as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "1\n"
    assert executed.metadata.papermill["exception"] is None
    assert child_kernel_pids() == []


def test_papermill_marks_the_failing_cell_on_the_clearnb_engine(tmp_path: Path) -> None:
    output = tmp_path / "out.ipynb"
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(
            str(notebook("raises")),
            str(output),
            parameters={"value": 3},
            engine_name="clearnb",
            progress_bar=False,
        )
    assert info.value.ename == "ValueError" and info.value.evalue == "boom 3"
    executed = nbformat.read(output, as_version=4)
    assert "papermill-error-cell-tag" in executed.cells[0].metadata.tags
    assert child_kernel_pids() == []

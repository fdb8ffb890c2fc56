"""ClearML's import lines work on clearnb with ``clearml`` replaced by ``clearnb``.

The lines are those of ClearML's pipeline and automation example scripts. A name clearnb
does not have (ClearML's hyper-parameter optimizer) is left out on purpose, so its import
fails instead of handing out a stand-in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import clearnb
from tests.helpers import notebook

CLEARML_IMPORT_LINES = [
    "from clearml import Task",
    "from clearml import Task, StorageManager",
    "from clearml import PipelineController",
    "from clearml import PipelineDecorator",
    "from clearml import PipelineDecorator, Task",
    "from clearml import TaskTypes",
    "from clearml import StorageManager",
    "from clearml import Logger",
    "from clearml import StorageManager, Dataset",
    "from clearml import Dataset",
    "from clearml import Dataset, OutputModel, Task",
    "from clearml import OutputModel, Task",
    "from clearml import Dataset, Logger",
    "from clearml.automation import PipelineController",
    "from clearml.automation.controller import PipelineDecorator",
    "from clearml.automation.controller import PipelineController",
]
"""Import lines of ClearML's examples for names clearnb has."""

NAMES_CLEARNB_LACKS = ["HyperParameterOptimizer", "GridSearch"]

CLEARML_TASK_TYPES = [
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
]


@pytest.mark.parametrize("line", CLEARML_IMPORT_LINES)
def test_a_clearml_import_line_works_with_its_package_renamed(line: str) -> None:
    # A fresh interpreter each time, so that no earlier import makes a module path exist.
    renamed = line.replace("clearml", "clearnb")
    done = subprocess.run(
        [sys.executable, "-c", renamed], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_the_automation_paths_hand_out_the_same_facades() -> None:
    from clearnb.automation import PipelineController as from_automation
    from clearnb.automation.controller import PipelineController, PipelineDecorator

    assert from_automation is PipelineController is clearnb.PipelineController
    assert PipelineDecorator is clearnb.PipelineDecorator


@pytest.mark.parametrize("name", NAMES_CLEARNB_LACKS)
def test_a_name_clearnb_does_not_have_fails_to_import(name: str) -> None:
    with pytest.raises(ImportError):
        exec(f"from clearnb.automation import {name}", {})


def test_task_types_has_every_member_clearml_names() -> None:
    from clearnb import Task, TaskTypes

    assert Task.TaskTypes is TaskTypes
    assert [member.name for member in TaskTypes] == CLEARML_TASK_TYPES
    for name in CLEARML_TASK_TYPES:
        member = getattr(TaskTypes, name)
        assert member == name
        assert str(member) == name
        assert f"{member}" == name


def test_a_task_type_is_recorded_as_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clearnb import Task, TaskTypes

    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    for name in ("CLEARNB_STORE_URL", "CLEARNB_ARTIFACT_URL", "CLEARNB_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    task = Task.create(
        project_name="p",
        task_name="t",
        notebook=notebook("params"),
        task_type=TaskTypes.data_processing,
    )
    stored = Task.get_task(task_id=task.id)
    assert stored.task_type == "data_processing"
    assert type(stored.task_type) is str

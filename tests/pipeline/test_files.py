"""A pipeline saved to a file, loaded again, and written out as code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearnb import PipelineController
from clearnb.errors import PipelineError
from tests.pipeline.test_controller import seed_pipeline

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    yield tmp_path


def test_save_and_load_round_trip_and_run(home: Path) -> None:
    pipe = seed_pipeline()
    pipe.get_pipeline_dag()["stage_train"].cache_executed_step = True
    path = pipe.save(home / "pipelines" / "demo.json")
    loaded = PipelineController.from_file(path)
    assert loaded.to_dict() == pipe.to_dict()
    loaded.start()
    loaded.wait()
    assert loaded.is_successful()
    loaded.stop()


def test_the_code_builds_the_same_pipeline(home: Path) -> None:
    pipe = seed_pipeline()
    code = pipe.to_code()
    assert code.startswith("from clearnb import PipelineController")
    namespace: dict[str, Any] = {}
    exec(code.replace("pipe.start()\npipe.wait()\npipe.stop()\n", ""), namespace)
    assert namespace["pipe"].to_dict() == pipe.to_dict()


def test_bad_pipeline_files_are_refused_clearly(home: Path) -> None:
    with pytest.raises(PipelineError, match="no pipeline file"):
        PipelineController.from_file(home / "missing.json")
    (home / "notes.json").write_text("not json")
    with pytest.raises(PipelineError, match="not a pipeline file"):
        PipelineController.from_file(home / "notes.json")
    (home / "other.json").write_text('{"a": 1}')
    with pytest.raises(PipelineError, match="not a clearnb pipeline file"):
        PipelineController.from_file(home / "other.json")


def test_remove_step(home: Path) -> None:
    pipe = seed_pipeline()
    pipe.remove_step("stage_process")
    assert list(pipe.get_pipeline_dag()) == ["stage_data", "stage_train"]
    assert pipe.get_pipeline_dag()["stage_train"].parents == []
    with pytest.raises(PipelineError, match="no step named"):
        pipe.remove_step("nope")

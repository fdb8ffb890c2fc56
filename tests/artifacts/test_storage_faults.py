"""Storage faults, injected for real: a storage that refuses writes (disk full, a file size
limit), and artifact files altered on disk before a step reads them.

A refused write fails the save (and the step) with the artifact and task named; what was
stored before stays readable and nothing half-written is recorded. An altered file is
caught by its sha256 before any codec reads it, so a tampered pickle never runs.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clearnb import PipelineController, Task
from clearnb.artifacts import ArtifactStorage
from clearnb.backend import Backend
from clearnb.errors import ArtifactCorruptedError, ArtifactWriteError, PipelineError
from clearnb.store import Store
from tests import faultyfs
from tests.helpers import NOTEBOOKS, notebook

TASK = "0123456789abcdef0123456789abcdef"
STEP = str(NOTEBOOKS / "pipeline" / "recorded_step.ipynb")
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def faulty_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """``faulty://`` known in this process, refusing nothing until a test says so."""
    faultyfs.register()
    monkeypatch.delenv(faultyfs.FULL_AT_ENV, raising=False)
    monkeypatch.delenv(faultyfs.QUOTA_ENV, raising=False)


def files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def unrecorded_files(folder: Path, store: Store, task_ids: list[str]) -> list[str]:
    """Files below the artifact folder ``folder`` that no artifact row points at."""
    recorded = set()
    for task_id in task_ids:
        for record in store.get_artifacts(task_id).values():
            recorded.add(str(Path(record.url.removeprefix("faulty://")).relative_to(folder)))
    return [name for name in files_below(folder) if name not in recorded]


# -- the storage refuses a write ------------------------------------------------------------


def test_a_full_disk_refuses_one_artifact_and_keeps_the_earlier_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "artifacts"
    storage = ArtifactStorage(f"faulty://{root}", tmp_path / "cache")
    monkeypatch.setenv(faultyfs.QUOTA_ENV, f"6000:{root}")
    values = {f"part{index}": np.full(250, index, dtype=np.float64) for index in range(5)}
    stored, refused = {}, []
    for name, value in values.items():  # 2128 bytes each: the third one does not fit
        try:
            stored[name] = storage.save(TASK, name, value)
        except ArtifactWriteError as exc:
            refused.append((name, exc))
    assert list(stored) == ["part0", "part1"]
    assert [name for name, _ in refused] == ["part2", "part3", "part4"]
    name, error = refused[0]
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error).startswith(
        f"Could not store artifact 'part2' of task {TASK}: No space left on device (writing "
        f"faulty://{root}/{TASK}/part2/part2.npy). Nothing of it was kept"
    )
    assert error.fields["name"] == "part2" and error.fields["task_id"] == TASK
    for name, record in stored.items():
        np.testing.assert_array_equal(storage.load(record), values[name])
    assert files_below(root) == [f"{TASK}/part0/part0.npy", f"{TASK}/part1/part1.npy"]


def test_a_refused_upload_records_nothing_and_keeps_the_old_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLEARNB_ARTIFACT_URL", f"faulty://{root}")
    task = Task.create(project_name="faults", task_name="uploads", notebook=notebook("params"))
    task.upload_artifact("early", {"kept": [1, 2, 3]})
    task.upload_artifact("x", {"version": 1})
    store = Backend.for_config().store

    monkeypatch.setenv(faultyfs.FULL_AT_ENV, "x")
    with pytest.raises(ArtifactWriteError, match=r"No space left on device") as caught:
        task.upload_artifact("x", {"version": 2, "padding": "y" * 5000})
    assert f"Could not store artifact 'x' of task {task.id}" in str(caught.value)
    monkeypatch.setenv(faultyfs.FULL_AT_ENV, "fresh")
    with pytest.raises(ArtifactWriteError, match=rf"artifact 'fresh' of task {task.id}"):
        task.upload_artifact("fresh", {"z": 1})

    reread = Task.get_task(task_id=task.id)
    assert reread.artifacts["early"].get() == {"kept": [1, 2, 3]}
    assert reread.artifacts["x"].get() == {"version": 1}, "the refused write replaced nothing"
    assert sorted(store.get_artifacts(task.id)) == ["early", "x"]
    assert unrecorded_files(root, store, [task.id]) == []


REAL_LIMIT_SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys
    import numpy as np
    from clearnb.artifacts import ArtifactStorage
    from clearnb.errors import ArtifactWriteError

    root, cache, task = sys.argv[1:4]
    storage = ArtifactStorage(root, cache)
    small = storage.save(task, "small", np.arange(100))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    try:
        storage.save(task, "big", np.zeros(100_000))
        outcome = {"refused": None}
    except ArtifactWriteError as exc:
        outcome = {"refused": str(exc), "errno": exc.errno, "fields": sorted(exc.fields)}
    outcome["small"] = storage.load(small).tolist() == list(range(100))
    print(json.dumps(outcome))
    """
)


def test_a_real_file_size_limit_refuses_the_write(tmp_path: Path) -> None:
    """The operating system refuses the write (RLIMIT_FSIZE): clearnb reports it as a
    refused artifact, and the earlier artifact stays readable."""
    root = tmp_path / "artifacts"
    script = tmp_path / "limit.py"
    script.write_text(REAL_LIMIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(root), str(tmp_path / "cache"), TASK],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["errno"] == errno.EFBIG
    assert outcome["refused"].startswith(
        f"Could not store artifact 'big' of task {TASK}: File too large (writing "
    )
    assert "free space in the scratch folder" in outcome["refused"], "it was encoding"
    assert outcome["small"] is True
    assert files_below(root) == [f"{TASK}/small/small.npy"]


# -- an artifact file altered on disk --------------------------------------------------------


class Weights:
    """A user object only pickle stores."""

    def __init__(self, values: list[float]) -> None:
        self.values = values


def booby_trapped_pickle(marker: Path, size: int) -> bytes:
    """A pickle of ``size`` bytes whose loading creates the file ``marker``."""

    class Trap:
        def __reduce__(self) -> tuple[Any, ...]:
            return (builtins.open, (str(marker), "w"))

    data = pickle.dumps(Trap(), protocol=4)
    assert len(data) <= size, "the original pickle is too small to hide the trap in"
    return data + b" " * (size - len(data))  # bytes after STOP are never read


def test_the_trap_works_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with contextlib.closing(pickle.loads(booby_trapped_pickle(marker, 200))):
        pass
    assert marker.exists(), "the trapped pickle must create its file when loaded"


def test_an_altered_pickle_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    task = Task.create(project_name="faults", task_name="pickles", notebook=notebook("params"))
    task.upload_artifact("weights", Weights([0.5] * 40))
    record = Backend.for_config().store.get_artifact(task.id, "weights")
    assert record.codec == "pickle"
    marker = tmp_path / "unpickled"
    path = Path(record.url)
    path.write_bytes(booby_trapped_pickle(marker, record.size))
    assert path.stat().st_size == record.size, "same size: only the hash can tell"
    with pytest.raises(ArtifactCorruptedError) as caught:
        Task.get_task(task_id=task.id).artifacts["weights"].get()
    message = str(caught.value)
    assert f"Artifact 'weights' of task {task.id} has been altered" in message
    assert "same size, different bytes" in message
    assert not marker.exists(), "the altered pickle was unpickled"


# -- the same faults inside a running pipeline (step kernels) ------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLEARNB_TASK_ID", raising=False)
    yield tmp_path / "home"


def recorded(name: str, inputs: str = "", **parameters: Any) -> dict[str, Any]:
    return {
        "name": name,
        "notebook": STEP,
        "parameter_override": {
            "General/step": name,
            "General/inputs": inputs,
            **{f"General/{key}": value for key, value in parameters.items()},
        },
    }


def run(pipe: PipelineController, **start: Any) -> dict[str, Any]:
    pipe.start(**start)
    pipe.wait()
    with contextlib.suppress(PipelineError):
        pipe.stop()
    return pipe.get_pipeline_dag()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_step_whose_artifact_cannot_be_stored_fails_clearly(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CLEARNB_ARTIFACT_URL", f"faulty://{root}")
    monkeypatch.setenv("PYTHONPATH", faultyfs.install_entry_point(tmp_path / "entry"))
    monkeypatch.setenv(faultyfs.FULL_AT_ENV, "x")  # the step kernels read it too
    pipe = PipelineController(name="full disk", project="faults", max_workers=1)
    pipe.add_step(**recorded("a"))
    pipe.add_step(**recorded("b", "${a.id}", artifacts="early,x"), parents=["a"])
    pipe.add_step(**recorded("c", "${b.id}"), parents=["b"])
    dag = run(pipe)

    assert pipe.status == "failed"
    assert [dag[n].status for n in "abc"] == ["completed", "failed", "skipped"]
    a_id, b_id = dag["a"].executed, dag["b"].executed
    reason = dag["b"].error["reason"]
    assert "raised ArtifactWriteError: " in reason
    assert (
        f"Could not store artifact 'x' of task {b_id}: No space left on device (writing "
        f"faulty://{root}/{b_id}/x/x.json)"
    ) in reason
    store = Backend.for_config().store
    assert store.get_task(b_id).error["reason"] == reason

    digest_a = Task.get_task(task_id=a_id).artifacts["out"].get()["digest"]
    assert Task.get_task(task_id=a_id).artifacts["out"].get()["step"] == "a"
    early = Task.get_task(task_id=b_id).artifacts["early"].get()
    assert early["name"] == "early" and early["inputs"] == [digest_a]
    assert sorted(store.get_artifacts(b_id)) == ["early", "notebook"], "no row for 'x'"
    assert list((root / b_id).rglob("x*")) in ([], [root / b_id / "x"]), "nothing of 'x'"
    assert unrecorded_files(root, store, [a_id, b_id, pipe.id]) == []  # the DAG picture too
    for task_id in (a_id, b_id):
        for record in store.get_artifacts(task_id).values():
            Backend.for_config().artifacts.local_copy(record)  # verified: size and sha256


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_step_reading_an_altered_artifact_fails_naming_it(home: Path, tmp_path: Path) -> None:
    pipe = PipelineController(name="altered", project="faults", max_workers=2)
    pipe.add_step(**recorded("make", pickled=True))
    pipe.add_step("data", notebook=str(NOTEBOOKS / "pipeline" / "data_step.ipynb"))
    pipe.add_step(**recorded("use_out", "${make.id}"), parents=["make"])
    pipe.add_step(**recorded("use_model", model_from="${make.id}"), parents=["make"])
    pipe.add_step(
        "use_url",
        notebook=str(NOTEBOOKS / "pipeline" / "process_step.ipynb"),
        parameter_override={"General/dataset_url": "${data.artifacts.dataset.url}"},
    )
    first = run(pipe)
    assert pipe.status == "completed", {n: d.error for n, d in first.items()}
    make, data = first["make"].executed, first["data"].executed

    store = Backend.for_config().store
    out = Path(store.get_artifact(make, "out").url)
    out.write_text(out.read_text().replace('"step": "make"', '"step": "fake"'))
    model = store.get_artifact(make, "model")
    marker = tmp_path / "unpickled"
    Path(model.url).write_bytes(booby_trapped_pickle(marker, model.size))
    dataset = Path(store.get_artifact(data, "dataset").url)
    dataset.write_text(dataset.read_text().replace("3", "7"))

    again = run(pipe, steps=["use_out", "use_model", "use_url"])
    assert pipe.status == "failed"
    assert again["make"].executed == make and again["data"].executed == data
    assert {n: again[n].status for n in ("use_out", "use_model", "use_url")} == {
        "use_out": "failed",
        "use_model": "failed",
        "use_url": "failed",
    }
    out_reason = again["use_out"].error["reason"]
    assert "raised ArtifactCorruptedError: " in out_reason
    assert f"Artifact 'out' of task {make} has been altered" in out_reason
    model_reason = again["use_model"].error["reason"]
    assert f"Artifact 'model' of task {make} has been altered" in model_reason
    assert "same size, different bytes" in model_reason
    assert not marker.exists(), "the altered pickle was unpickled in the step's kernel"
    url_reason = again["use_url"].error["reason"]
    assert url_reason.startswith("its parameters could not be resolved: ")
    assert f"Artifact 'dataset' of task {data} has been altered" in url_reason
    assert again["use_url"].executed is None, "the step never ran on the altered file"

"""Models as ClearML users write them, on a real store and artifact storage: OutputModel
stores weights (files and packages), InputModel and Model find and read them back
verified, tasks record the models they use and make; and notebook runs that pass a model
from one step to the next."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from clearnb import InputModel, Model, OutputModel, Task
from clearnb.errors import ArtifactCorruptedError, ModelError, ModelNotFoundError
from tests.helpers import isolated_home, notebook

pytestmark = pytest.mark.timeout(180)

WEIGHTS = bytes(range(256)) * 64
"""The bytes of a weights file (16 KiB)."""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_home(tmp_path / "home", monkeypatch)


def task(name: str = "train", project: str = "models") -> Task:
    """A draft task (a clone of the params notebook's template) to make models with."""
    template = Task.create(
        project_name="templates", task_name=f"{name} template", notebook=notebook("params")
    )
    return Task.clone(template, name=name, project=project)


def weights_file(folder: Path, name: str = "net.pt", content: bytes = WEIGHTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- storing weights --------------------------------------------------------------------------


def test_an_output_model_stores_its_weights_hashed_in_the_artifact_storage(
    tmp_path: Path, home: Path
) -> None:
    maker = task()
    model = OutputModel(task=maker, name="tiny", tags=["v1"], config_dict={"layers": 3})
    assert Model.query_models(project_name="models") == [], "nothing stored before it is needed"
    source = weights_file(tmp_path / "work")
    url = model.update_weights(str(source), iteration=7)
    assert not source.exists(), "auto_delete_file removes the local file once it is stored"
    assert url == model.url and url.startswith(str(home / "artifacts" / maker.id))
    assert Path(url).name == "net.pt" and sha256(url) == hashlib.sha256(WEIGHTS).hexdigest()
    stored = Model(model.id)
    assert (stored.name, stored.project, stored.task) == ("tiny", "models", maker.id)
    assert stored.framework == "PyTorch", "guessed from the file name"
    assert stored.tags == ["v1"] and stored.config_dict == {"layers": 3}
    assert stored.record.iteration == 7 and stored.record.size == len(WEIGHTS)
    assert stored.record.hash == hashlib.sha256(WEIGHTS).hexdigest()
    assert stored.comment.startswith(f"snapshot {source} stored\nCreated by task id: {maker.id}")
    copy = stored.get_local_copy()
    assert copy is not None and Path(copy).read_bytes() == WEIGHTS
    assert [m.id for m in Model.query_models(project_name="models")] == [model.id]
    outputs = maker.models["output"]
    assert list(outputs.keys()) == ["net"], "named on the task after the weights file"
    assert outputs["net"].id == model.id and maker.models.output[0].id == model.id


def test_weights_can_be_kept_renamed_replaced_and_sent_elsewhere(tmp_path: Path) -> None:
    model = OutputModel(task=task(), name="renamed", framework="ScikitLearn")
    source = weights_file(tmp_path / "work", "model.bin")
    first = model.update_weights(str(source), target_filename="best.pkl", auto_delete_file=False)
    assert source.exists() and Path(first).name == "best.pkl"
    assert model.framework == "ScikitLearn", "a framework given is kept"
    source.write_bytes(b"second version")
    second = model.update_weights(str(source), auto_delete_file=False, update_comment=False)
    assert Path(second).name == "model.bin" and not Path(first).exists(), "replaced in place"
    assert Path(str(model.get_local_copy())).read_bytes() == b"second version"
    elsewhere = tmp_path / "shared models"
    third = model.update_weights(str(source), upload_uri=str(elsewhere))
    assert third.startswith(str(elsewhere)) and Path(third).read_bytes() == b"second version"
    assert model.comment.startswith(f"snapshot {source} stored\n"), "update_comment's note"
    assert model.comment.count("snapshot") == 2, "not after update_weights(update_comment=False)"


def test_a_folder_is_stored_as_a_package_and_unpacked_again(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    weights_file(folder, "weights.bin")
    weights_file(folder / "sub", "vocab.txt", b"a b c")
    model = OutputModel(task=task(), name="packaged")
    url = model.update_weights(str(folder))
    assert not folder.exists(), "the local folder goes once it is stored"
    assert url.endswith("checkpoint.zip") and "package" in model.system_tags
    unpacked = Path(str(model.get_local_copy()))
    assert (unpacked / "weights.bin").read_bytes() == WEIGHTS
    assert (unpacked / "sub" / "vocab.txt").read_bytes() == b"a b c"
    assert Path(str(model.get_local_copy(extract_archive=False))).suffix == ".zip"
    listed = model.get_weights_package()
    assert isinstance(listed, list) and sorted(p.name for p in listed) == ["sub", "weights.bin"]
    assert model.get_weights_package(return_path=True) == str(unpacked)
    files = [
        weights_file(tmp_path / "parts" / "a", "one.bin"),
        weights_file(tmp_path / "parts" / "b", "two.bin"),
    ]
    several = OutputModel(task=task("several"), name="several")
    several.update_weights_package(
        weights_filenames=[str(f) for f in files], auto_delete_file=False
    )
    again = Path(str(several.get_local_copy()))
    assert (again / "a" / "one.bin").read_bytes() == WEIGHTS, "paths kept below the shared folder"
    assert Path(several.url or "").name == "model_package.zip"
    with pytest.raises(ModelError, match="is not packaged"):
        OutputModel(task=task("plain"), name="plain").get_weights_package()


def test_a_registered_url_is_recorded_as_it_is(tmp_path: Path) -> None:
    source = weights_file(tmp_path / "external", "external.onnx")
    model = OutputModel(task=task(), name="registered")
    assert model.update_weights(register_uri=str(source)) == str(source)
    assert source.exists(), "a registered file is not copied nor removed"
    assert model.get_local_copy() == str(source) and model.framework == "ONNX"
    imported = InputModel.import_model(str(source), name="imported", project="models")
    assert imported.id == model.id, "the URL is known already: that model is returned"
    with pytest.raises(ModelError, match="never both"):
        model.update_weights(weights_filename=str(source), register_uri=str(source))
    with pytest.raises(ModelError, match="never both"):
        model.update_weights()


def test_altered_weights_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = OutputModel(task=task(), name="guarded")
    url = model.update_weights(str(weights_file(tmp_path / "work")))
    Path(url).write_bytes(b"tampered")
    with caplog.at_level(logging.WARNING, logger="clearnb.model"):
        assert model.get_local_copy() is None
    assert "could not get the weights" in caplog.text
    with pytest.raises(ArtifactCorruptedError):
        model.get_local_copy(raise_on_error=True)


# -- finding models ---------------------------------------------------------------------------


def test_models_are_found_by_name_project_tags_state_and_metadata(tmp_path: Path) -> None:
    def made(name: str, project: str = "models", tags: tuple[str, ...] = ()) -> OutputModel:
        model = OutputModel(task=task(project=project), name=name, tags=list(tags))
        model.update_weights(str(weights_file(tmp_path / name)))
        return model

    old = made("net", tags=("candidate",))
    new = made("net", tags=("candidate", "best"))
    other = made("net", project="elsewhere")
    assert InputModel(name="net", project="models").id == new.id, "the newest"
    assert InputModel(name="net", tags=["-best"], project="models").id == old.id
    old.publish()
    assert InputModel(name="net", only_published=True).id == old.id
    with pytest.raises(ModelError, match="published and cannot be changed"):
        old.update_weights(str(weights_file(tmp_path / "again")))
    new.archive()
    assert [m.id for m in Model.query_models(model_name="net")] == [other.id, old.id]
    assert len(Model.query_models(model_name="net", include_archived=True)) == 3
    new.unarchive()
    assert [m.id for m in Model.query_models(model_name="net", max_results=1)] == [other.id]
    other.set_metadata("stage", "production")
    assert [m.id for m in Model.query_models(metadata={"stage": "production"})] == [other.id]
    with pytest.raises(ModelNotFoundError, match="Could not locate model") as caught:
        InputModel(name="missing")
    assert isinstance(caught.value, ValueError), "what ClearML raises"
    with pytest.raises(ModelNotFoundError):
        Model("no-such-id")


def test_metadata_is_kept_as_text_with_its_type(tmp_path: Path) -> None:
    model = OutputModel(task=task(), name="described")
    assert model.set_metadata("accuracy", 0.93, "float") is True
    model.set_metadata("epochs", 12, "int")
    model.set_metadata("classes", ["cat", "dog"], "list")
    model.set_metadata("note", "hello", "not a type")
    stored = Model(model.id)
    assert stored.get_metadata("accuracy") == "0.93"
    assert stored.get_metadata_casted("accuracy") == 0.93
    assert stored.get_metadata_casted("epochs") == 12
    assert stored.get_metadata_casted("classes") == ["cat", "dog"]
    assert stored.get_all_metadata()["note"] == {"key": "note", "value": "hello", "type": "None"}
    assert stored.get_metadata("missing") is None and stored.get_metadata_casted("missing") is None
    stored.set_all_metadata({"only": {"value": True, "type": "bool"}})
    assert Model(model.id).get_all_metadata_casted() == {"only": True}
    stored.set_all_metadata({"more": {"value": "x", "type": "str"}}, replace=False)
    assert sorted(Model(model.id).get_all_metadata()) == ["more", "only"]


def test_an_output_model_can_take_over_a_stored_model(tmp_path: Path) -> None:
    first = task("first")
    model = OutputModel(task=first, name="resumed", tags=["a"])
    model.update_weights(str(weights_file(tmp_path / "work", "resumed.pt")))
    second = task("second")
    again = OutputModel(task=second, base_model_id=model.id, comment="continued")
    assert again.id == model.id and again.task == second.id
    assert again.tags == ["a"], "what is not given is kept"
    assert f"Overwritten by task id: {second.id}\ncontinued" in again.comment
    assert second.models["output"]["resumed"].id == model.id


def test_weights_stored_remotely_are_downloaded_once_and_again_on_request(
    tmp_path: Path,
) -> None:
    model = OutputModel(task=task(), name="remote")
    bucket = f"memory://clearnb-tests/{tmp_path.name}"
    url = model.update_weights(str(weights_file(tmp_path / "work")), upload_uri=bucket)
    assert url.startswith(bucket)
    first = Path(str(model.get_local_copy(raise_on_error=True)))
    assert first.read_bytes() == WEIGHTS and not str(first).startswith("memory")
    cached = first.stat().st_ino
    assert Path(str(model.get_local_copy())).stat().st_ino == cached, "the cached copy"
    refreshed = Path(str(model.get_local_copy(force_download=True)))
    assert refreshed == first and refreshed.stat().st_ino != cached, "downloaded again"
    assert refreshed.read_bytes() == WEIGHTS


def test_an_output_model_needs_a_task() -> None:
    with pytest.raises(ModelError, match="no current task"):
        OutputModel(name="orphan")
    maker = task()
    with pytest.raises(ModelError, match="fresh model"):
        OutputModel(task=maker).connect(task("another"))


# -- models of tasks --------------------------------------------------------------------------


def test_a_task_records_the_models_it_connects_as_inputs_and_clones_carry_them(
    tmp_path: Path,
) -> None:
    made = OutputModel(task=task("maker"), name="shared")
    made.update_weights(str(weights_file(tmp_path / "work", "shared.pt")))
    user = task("user")
    model = InputModel(made.id)
    assert user.connect(model) is model
    user.connect(InputModel(made.id), name="teacher")
    inputs = user.models["input"]
    assert list(inputs.keys()) == ["shared", "teacher"]
    assert inputs["teacher"].id == made.id and user.models.input.get("nothing") is None
    clone = Task.clone(user, name="user clone")
    assert list(clone.models["input"].keys()) == ["shared", "teacher"]
    assert clone.models["output"] == []
    second = OutputModel(task=task("maker 2"), name="replacement")
    second.update_weights(str(weights_file(tmp_path / "work", "other.pt", b"other")))
    clone.connect(InputModel(second.id), name="teacher")
    assert clone.models["input"]["teacher"].id == second.id, "outside a run: replaced"


def test_a_task_lists_every_output_model_it_made() -> None:
    maker = task()
    named = OutputModel(task=maker, name="named")
    named.connect(maker, name="best")
    unnamed = OutputModel(task=maker, name="unnamed")
    unnamed.set_metadata("k", "v")  # recorded, never connected under a name
    outputs = maker.models["output"]
    assert list(outputs.keys()) == ["best", "Output Model #1"]
    assert [m.id for m in outputs] == [named.id, unnamed.id]


# -- notebook steps ---------------------------------------------------------------------------

MAKES_A_MODEL = (
    "from pathlib import Path\n"
    "from clearnb import Task, OutputModel\n"
    "task = Task.init()\n"
    "Path('weights.bin').write_bytes(bytes(range(256)) * 64)\n"
    "model = OutputModel(name='tiny', framework='PyTorch', tags=['from a step'])\n"
    "model.set_metadata('accuracy', 0.93, 'float')\n"
    "url = model.update_weights('weights.bin', iteration=3)\n"
    "task.upload_artifact('made', {'id': model.id, 'url': url})\n"
)
USES_A_MODEL = (
    "import hashlib\n"
    "from clearnb import Task, InputModel\n"
    "task = Task.init()\n"
    "model = InputModel(name='tiny', project='model steps')\n"
    "task.connect(model, name='weights')\n"
    "path = model.get_local_copy()\n"
    "digest = hashlib.sha256(open(path, 'rb').read()).hexdigest()\n"
    "kept = InputModel(name='tiny', project='model steps')\n"
    "task.connect(kept, name='weights', ignore_remote_overrides=True)\n"
    "task.upload_artifact('loaded', {'id': model.id, 'sha256': digest, 'kept': kept.id})\n"
)


def test_a_step_makes_a_model_and_a_later_step_loads_it(tmp_path: Path) -> None:
    from clearnb.execution.runner import NotebookRunner
    from tests.test_task import write_notebook

    maker_nb = write_notebook(tmp_path / "make.ipynb", MAKES_A_MODEL)
    user_nb = write_notebook(tmp_path / "use.ipynb", USES_A_MODEL)
    with NotebookRunner(pool_size=0) as runner:
        maker = runner.execute(maker_nb, project_name="model steps", raise_on_error=True)
        made = maker.artifacts["made"].get()
        user = runner.execute(user_nb, project_name="model steps", raise_on_error=True)
        loaded = user.artifacts["loaded"].get()
        assert loaded == {
            "id": made["id"],
            "sha256": hashlib.sha256(WEIGHTS).hexdigest(),
            "kept": made["id"],
        }
        model = Model(made["id"])
        assert (model.task, model.framework, model.tags) == (maker.id, "PyTorch", ["from a step"])
        assert model.get_metadata_casted("accuracy") == 0.93 and model.record.iteration == 3
        assert sha256(made["url"]) == hashlib.sha256(WEIGHTS).hexdigest()
        assert not (tmp_path / "weights.bin").exists(), "the step's local file went"
        assert maker.models["output"]["weights"].id == made["id"]
        assert user.models["input"]["weights"].id == made["id"]

        other = OutputModel(task=task("other maker"), name="other")
        other.update_weights(str(weights_file(tmp_path / "other", "other.bin", b"other")))
        clone = Task.clone(user, name="with another model")
        clone.connect(InputModel(other.id), name="weights")
        rerun = runner.execute(task=clone, raise_on_error=True)
        switched = rerun.artifacts["loaded"].get()
        assert switched["id"] == other.id, "the run uses the model its task carries"
        assert switched["sha256"] == hashlib.sha256(b"other").hexdigest()
        assert switched["kept"] == made["id"], "ignore_remote_overrides keeps the code's"
        assert rerun.models["input"]["weights"].id == made["id"], "and records it"


def test_task_show_lists_the_models_of_a_task(tmp_path: Path, home: Path) -> None:
    import json

    from tests.test_cli import clearnb

    made = OutputModel(task=task("maker"), name="shown")
    made.update_weights(str(weights_file(tmp_path / "work", "shown.pt")))
    user = task("user")
    user.connect(InputModel(made.id), name="weights")
    shown = clearnb(home, "task", "show", user.id)
    assert shown.returncode == 0, shown.output
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("  input ")]
    assert "weights" in line and "shown" in line and "PyTorch" in line and made.id in line
    assert str(made.url) in line
    as_json = json.loads(clearnb(home, "task", "show", made.task or "", "--json").stdout)
    assert [m["id"] for m in as_json["models"]["output"]] == [made.id]
    assert as_json["models"]["output"][0]["name"] == "shown"


BY_HAND = """
from pathlib import Path
from clearnb import Task, OutputModel

task = Task.init(project_name="by hand", task_name="trains")
Path("net.pt").write_bytes(b"weights made by hand")
model = OutputModel(name="by hand")
model.update_weights("net.pt")
print(model.id)
"""


def test_an_output_model_made_by_hand_belongs_to_the_task_of_task_init(tmp_path: Path) -> None:
    from tests.test_task_api import run_script

    done = run_script(tmp_path, BY_HAND)
    assert done.returncode == 0, done.stderr
    model = Model(done.stdout.strip().splitlines()[-1])
    trains = Task.get_task(project_name="by hand", task_name="trains")
    assert model.task == trains.id and model.project == "by hand"
    assert Path(str(model.get_local_copy())).read_bytes() == b"weights made by hand"
    assert trains.models["output"]["net"].id == model.id

"""Models saved with an ML framework's own call (xgboost's ``save_model``, ``joblib.dump``)
become output models of the task that runs them, in real kernels and real scripts, unless
``auto_connect_frameworks`` turns the framework off."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb import Model, Task
from tests.helpers import isolated_home, require_module
from tests.test_task_api import run_script

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_home(tmp_path / "home", monkeypatch)


@pytest.fixture
def runner(home: Path) -> Iterator[object]:
    from clearnb.execution.runner import NotebookRunner

    with NotebookRunner(pool_size=0) as made:
        yield made


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(runner: object, folder: Path, name: str, *cells: str) -> Task:
    from clearnb.execution.runner import NotebookRunner
    from tests.test_task import write_notebook

    assert isinstance(runner, NotebookRunner)
    folder.mkdir(parents=True, exist_ok=True)
    path = write_notebook(folder / f"{name}.ipynb", *cells)
    return runner.execute(path, project_name="frameworks", raise_on_error=True)


TRAIN_XGBOOST = (
    "import numpy as np\n"
    "import xgboost as xgb\n"
    "rows = np.random.default_rng(0).random((40, 3))\n"
    "train = xgb.DMatrix(rows, label=(rows[:, 0] > 0.5).astype(int))\n"
    "bst = xgb.train({'objective': 'binary:logistic', 'max_depth': 2}, train, 2)\n"
)


def test_a_step_that_saves_an_xgboost_model_gets_it_as_its_output_model(
    runner: object, tmp_path: Path
) -> None:
    require_module("xgboost")
    done = run(
        runner,
        tmp_path / "xgb",
        "train",
        # no Task.init: the kernel binds the frameworks as it starts, as ClearML's components
        TRAIN_XGBOOST + "bst.save_model('a_model.xgb')\n",
        "from clearnb import Task\n"
        "task = Task.current_task()\n"
        "task.upload_artifact('last', task.models['output'][-1].id)\n",
    )
    saved = tmp_path / "xgb" / "a_model.xgb"
    assert saved.is_file(), "the user's file is kept"
    (model,) = done.models["output"]
    assert model.id == done.artifacts["last"].get(), "the step saw it as its last output model"
    assert model.framework == "XGBoost"
    assert model.name == f"{done.name} - a_model"
    assert model.task == done.id
    assert model.record.hash == sha256(saved)
    copy = Model(model.id).get_local_copy()
    assert copy is not None and sha256(Path(copy)) == sha256(saved)


def test_saving_the_same_file_again_updates_its_model(runner: object, tmp_path: Path) -> None:
    require_module("xgboost")
    done = run(
        runner,
        tmp_path / "again",
        "twice",
        TRAIN_XGBOOST + "bst.save_model('a_model.json')\n",
        "bst = xgb.train({'max_depth': 3}, train, 4)\n"
        "bst.save_model('a_model.json')\n"
        "classifier = xgb.XGBClassifier(n_estimators=2).fit(rows, rows[:, 0] > 0.5)\n"
        "classifier.save_model('classifier.json')\n",
    )
    outputs = done.models["output"]
    assert sorted(outputs.keys()) == ["a_model", "classifier"], "one model per file saved"
    assert outputs["a_model"].record.hash == sha256(tmp_path / "again" / "a_model.json")
    assert outputs["classifier"].framework == "XGBoost"


def test_joblib_dump_registers_a_scikit_learn_model(runner: object, tmp_path: Path) -> None:
    require_module("sklearn")
    done = run(
        runner,
        tmp_path / "sk",
        "sklearn",
        "import joblib\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from clearnb import Task\n"
        "task = Task.init()\n"
        "estimator = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])\n"
        "joblib.dump(estimator, 'estimator.pkl')\n"
        "joblib.dump({'threshold': 0.5}, 'settings.joblib')\n",
    )
    outputs = done.models["output"]
    assert outputs["estimator"].framework == "ScikitLearn"
    assert outputs["settings"].framework == "Joblib", "not an estimator"
    assert outputs["estimator"].record.hash == sha256(tmp_path / "sk" / "estimator.pkl")


def test_a_framework_turned_off_registers_nothing_and_the_others_still_do(
    runner: object, tmp_path: Path
) -> None:
    require_module("xgboost")
    done = run(
        runner,
        tmp_path / "off",
        "off",
        "import warnings\n"
        "from clearnb import Task\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('error')  # an honoured argument is not warned about\n"
        "    task = Task.init(auto_connect_frameworks={'xgboost': False})\n",
        TRAIN_XGBOOST + "bst.save_model('a_model.xgb')\n"
        "import joblib\n"
        "joblib.dump([1, 2, 3], 'numbers.joblib')\n",
    )
    assert (tmp_path / "off" / "a_model.xgb").is_file()
    assert list(done.models["output"].keys()) == ["numbers"]
    assert "unused_arguments" not in done.record.runtime


WILDCARDS_AND_OFF = """
import json
import joblib
from clearnb import Task

task = Task.init(project_name="scripts", task_name="wildcards",
                 auto_connect_frameworks={"joblib": ["*.keep"]})
import xgboost  # imported after Task.init: bound as it is imported
joblib.dump([1], "skipped.bin")
joblib.dump([2], "model.keep")
booster = xgboost.train({}, xgboost.DMatrix([[0.0], [1.0]], label=[0, 1]), 1)
booster.save_model("booster.json")
task.close()
off = Task.init(project_name="scripts", task_name="off", auto_connect_frameworks=False)
joblib.dump([3], "off.keep")
print(json.dumps({"wildcards": task.id, "off": off.id}))
"""


def test_a_script_binds_frameworks_imported_after_task_init_and_honours_wildcards(
    tmp_path: Path,
) -> None:
    require_module("xgboost")
    done = run_script(tmp_path, WILDCARDS_AND_OFF)
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout.strip().splitlines()[-1])
    made = Task.get_task(ids["wildcards"]).models["output"]
    assert sorted(made.keys()) == ["booster", "model"], "skipped.bin matches no wildcard"
    assert made["booster"].framework == "XGBoost"
    assert list(Task.get_task(ids["off"]).models["output"]) == []


NOTHING_BOUND = """
import json
import joblib
import xgboost
from clearnb import Task
from clearnb.frameworks import ORIGINAL

before = [hasattr(joblib.dump, ORIGINAL), hasattr(xgboost.Booster.save_model, ORIGINAL)]
Task.init(project_name="scripts", task_name="off", auto_connect_frameworks=False)
after = [hasattr(joblib.dump, ORIGINAL), hasattr(xgboost.Booster.save_model, ORIGINAL)]
Task.current_task().close()
Task.init(project_name="scripts", task_name="on")
bound = [hasattr(joblib.dump, ORIGINAL), hasattr(xgboost.Booster.save_model, ORIGINAL)]
print(json.dumps([before, after, bound]))
"""


def test_nothing_is_wrapped_until_a_task_wants_it(tmp_path: Path) -> None:
    require_module("xgboost")
    done = run_script(tmp_path, NOTHING_BOUND)
    assert done.returncode == 0, done.stderr
    before, after, bound = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == [False, False], "importing clearnb wraps nothing"
    assert after == [False, False], "nor does a task with every framework off"
    assert bound == [True, True]


SELECT_BEST = """
from clearnb import OutputModel, Task
best = OutputModel(base_model_id={model_id!r})
best.connect(task=Task.current_task(), name="best")
"""


def test_a_later_step_takes_over_a_model_by_its_id_and_names_it(
    runner: object, tmp_path: Path
) -> None:
    require_module("xgboost")
    trained = run(runner, tmp_path / "a", "train", TRAIN_XGBOOST + "bst.save_model('m.xgb')\n")
    (model,) = trained.models["output"]
    chosen = run(runner, tmp_path / "b", "select", SELECT_BEST.format(model_id=model.id))
    best = chosen.models["output"]["best"]
    assert best.id == model.id
    assert best.task == chosen.id, "the model now belongs to the step that chose it"
    assert best.framework == "XGBoost" and best.record.hash == model.record.hash


def save_numbers(count: int) -> int:
    import joblib

    joblib.dump(list(range(count)), "numbers.joblib")
    return count


def test_a_pipeline_shows_the_models_its_steps_monitor(home: Path) -> None:
    from clearnb import PipelineController

    pipe = PipelineController(name="models", project="frameworks")
    pipe.add_function_step(
        "save",
        save_numbers,
        function_kwargs={"count": 3},
        function_return=["count"],
        monitor_models=[("numbers", "final numbers")],
    )
    pipe.start()
    pipe.wait()
    pipe.stop()
    assert pipe.is_successful()
    step = Task.get_task(task_id=pipe.get_pipeline_dag()["save"].executed)
    (saved,) = step.models["output"]
    assert saved.framework == "Joblib", "a function step binds frameworks without Task.init"
    shown = Task.get_task(task_id=pipe.id).models["output"]
    assert list(shown.keys()) == ["final numbers"] and shown[0].id == saved.id

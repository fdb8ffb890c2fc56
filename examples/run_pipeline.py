"""Run the three-step example pipeline: dataset artifact -> process dataset -> train model.

Each step notebook in ``notebooks/`` runs as a Task on one :class:`clearnb.NotebookRunner`,
whose kernels are started ahead of need, one after the other. The overrides are those
``notebooks/pipeline_controller.ipynb`` gives its steps with ``parameter_override``:

* step 1 gets ``General/dataset_url`` = the ``file://`` URL of the iris CSV that
  scikit-learn ships (the pipeline parameter ``url``, ``${pipeline.url}``);
* step 2 gets ``General/dataset_url`` = the URL of step 1's ``dataset`` artifact
  (``${stage_data.artifacts.dataset.url}``) and ``General/test_size`` = 0.25;
* step 3 gets ``General/dataset_task_id`` = step 2's task id (``${stage_process.id}``),
  and trains a small neural network on the processed data.

Tasks and artifacts go to the default store, ``./.clearnb/`` in the current folder
(or ``CLEARNB_HOME``). Exits 1 if a step fails, naming its error and executed notebook.

    python examples/run_pipeline.py [--time-limit SECONDS]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clearnb import NotebookRunner, Task
from clearnb.errors import ClearnbError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PROJECT = "examples"


def iris_url() -> str:
    """``file://`` URL of the iris CSV inside the installed scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ClearnbError("The examples need scikit-learn: pip install -e '.[examples]'")
    return (Path(spec.origin).parent / "datasets" / "data" / "iris.csv").as_uri()


class StepFailed(Exception):
    """A step ended in a status other than ``completed``."""


def run_step(
    runner: NotebookRunner,
    number: int,
    notebook: str,
    task_name: str,
    parameters: Mapping[str, Any],
    time_limit: float | None,
) -> Task:
    """Run one step notebook as a Task, print what it did, and raise if it failed."""
    print(f"step {number}: {task_name} ({notebook})", flush=True)
    for name, value in parameters.items():
        print(f"  {name} = {value!r}")
    task = runner.execute(
        NOTEBOOKS / notebook,
        parameters,
        project_name=PROJECT,
        task_name=task_name,
        time_limit=time_limit,
    )
    duration = task.runtime.get("duration")
    took = f"{duration:.1f}s" if duration is not None else "-"
    print(f"  task {task.id}: {task.status} in {took}")
    if task.status != "completed":
        reason = (task.error or {}).get("reason", "no reason recorded")
        raise StepFailed(
            f"step {number} ({task_name}) {task.status}: {reason}\n"
            f"  executed notebook: {task.output_notebook}"
        )
    for name, artifact in task.artifacts.items():
        print(f"  artifact {name:24} {artifact.size:>9,} B  {artifact.type}")
    return task


def final_accuracy(task: Task) -> float:
    """The last ``accuracy``/``test`` scalar the training step reported."""
    return task.get_reported_scalars()["accuracy"]["test"]["y"][-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="seconds each step may take (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    try:
        with NotebookRunner() as runner:
            print(f"store: {runner.config.home}\n")
            stage_data = run_step(
                runner,
                1,
                "step1_dataset_artifact.ipynb",
                "pipeline step 1 dataset artifact",
                {"General/dataset_url": iris_url()},
                args.time_limit,
            )
            stage_process = run_step(
                runner,
                2,
                "step2_data_processing.ipynb",
                "pipeline step 2 process dataset",
                {
                    "General/dataset_url": stage_data.artifacts["dataset"].url,
                    "General/test_size": 0.25,
                },
                args.time_limit,
            )
            stage_train = run_step(
                runner,
                3,
                "step3_train_model.ipynb",
                "pipeline step 3 train model",
                {"General/dataset_task_id": stage_process.id},
                args.time_limit,
            )
    except StepFailed as exc:
        print(f"\nFAILED {exc}", file=sys.stderr)
        return 1
    except ClearnbError as exc:
        print(f"\nFAILED before running: {exc}", file=sys.stderr)
        return 1

    print(f"\naccuracy (test): {final_accuracy(stage_train):.3f}")
    print(f"inspect the runs with: clearnb task show {stage_train.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

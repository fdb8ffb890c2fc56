"""The three step scripts as a pipeline, as ClearML's pipeline_from_tasks.py builds one.

Run ``python pipeline_from_tasks.py``: each step script not registered yet is run once with
``python`` (which registers it as a template), then the controller runs copies of them as
notebooks, passing each step's outputs to the next and overriding ``General`` and ``Args``
parameters. It exits 1 if the pipeline fails.
"""

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from clearnb import PipelineController, Task
from clearnb.errors import TaskNotFoundError

HERE = Path(__file__).resolve().parent
STEPS = {
    "step 1 dataset artifact": "step1_dataset_artifact.py",
    "step 2 process dataset": "step2_data_processing.py",
    "step 3 train model": "step3_train_model.py",
}

for task_name, script in STEPS.items():
    try:
        Task.get_task(project_name="script examples", task_name=task_name)
    except TaskNotFoundError:  # the ClearML way: run the step script once
        subprocess.run([sys.executable, str(HERE / script)], check=True)
        print(f"registered {task_name!r} by running {script}")

# scikit-learn's folder, found without importing it (which takes seconds)
iris_url = (Path(find_spec("sklearn").origin).parent / "datasets" / "data" / "iris.csv").as_uri()

pipe = PipelineController(name="script pipeline demo", project="script examples", version="1")
pipe.add_parameter("url", iris_url, "dataset url")
pipe.add_step(
    name="stage_data",
    base_task_project="script examples",
    base_task_name="step 1 dataset artifact",
    parameter_override={"General/dataset_url": "${pipeline.url}"},
)
pipe.add_step(
    name="stage_process",
    parents=["stage_data"],
    base_task_project="script examples",
    base_task_name="step 2 process dataset",
    parameter_override={
        "General/dataset_url": "${stage_data.artifacts.dataset.url}",
        "General/test_size": 0.25,
    },
)
pipe.add_step(
    name="stage_train",
    parents=["stage_process"],
    base_task_project="script examples",
    base_task_name="step 3 train model",
    parameter_override={"General/dataset_task_id": "${stage_process.id}", "Args/max_iter": 400},
)
pipe.start()
pipe.wait()

for name, node in pipe.get_pipeline_dag().items():
    print(f"{name:14} {node.status:10} task {node.executed}")
sys.exit(0 if pipe.is_successful() else 1)

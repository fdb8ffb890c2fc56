"""Pipeline step 1, as a script: keep the iris data set as the artifact ``dataset``.

``python step1_dataset_artifact.py`` registers this script as the template
``script examples/step 1 dataset artifact`` and stops at ``execute_remotely()``; the
pipeline (pipeline_from_tasks.py) runs copies of it as notebooks, with its overrides.
"""

from pathlib import Path

from clearnb import StorageManager, Task

task = Task.init(project_name="script examples", task_name="step 1 dataset artifact")
args = {"dataset_url": ""}
task.connect(args)

# registering: the task is left a draft (a template) and the script stops here
task.execute_remotely()

dataset_url = args["dataset_url"]
if not dataset_url:  # no network needed: scikit-learn ships the iris CSV
    import sklearn

    dataset_url = (Path(sklearn.__file__).parent / "datasets" / "data" / "iris.csv").as_uri()
local_iris = StorageManager.get_local_copy(remote_url=dataset_url)

task.upload_artifact("dataset", artifact_object=local_iris)
print("uploaded:", task.artifacts["dataset"].url)

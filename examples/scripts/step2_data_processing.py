# %% [markdown]
# # Pipeline step 2, as a script in cells: split the data set for training
#
# The `# %%` markers make each part its own cell of the executed notebook.

# %%
import pandas as pd
from sklearn.model_selection import train_test_split

from clearnb import StorageManager, Task

task = Task.init(project_name="script examples", task_name="step 2 process dataset")
args = {"dataset_task_id": "", "dataset_url": "", "random_state": 42, "test_size": 0.2}
task.connect(args)
task.execute_remotely()

# %%
if args["dataset_task_id"]:
    iris_csv = Task.get_task(task_id=args["dataset_task_id"]).artifacts["dataset"].get_local_copy()
elif args["dataset_url"]:
    iris_csv = StorageManager.get_local_copy(remote_url=args["dataset_url"])
else:
    raise ValueError("give General/dataset_url or General/dataset_task_id")

# %%
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
with open(iris_csv) as stream:
    n_rows, n_features, *class_names = stream.readline().strip().split(",")
iris = pd.read_csv(iris_csv, skiprows=1, header=None, names=[*FEATURES, "target"])
species = iris.pop("target").map(dict(enumerate(class_names)))

X_train, X_test, y_train, y_test = train_test_split(
    iris, species, test_size=args["test_size"], random_state=args["random_state"], stratify=species
)
print(f"train: {len(X_train)} rows, test: {len(X_test)} rows")

# %%
task.upload_artifact("X_train", X_train)
task.upload_artifact("X_test", X_test)
task.upload_artifact("y_train", y_train)
task.upload_artifact("y_test", y_test)

"""Pipeline step 3, as a script with a command line: train a small neural network.

Its options are argparse arguments, recorded in section ``Args``: register it with
``python step3_train_model.py --max-iter 300``, override them with ``Args/max_iter``.
"""

import argparse
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.neural_network import MLPClassifier

from clearnb import Task

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--hidden-units", type=int, default=16)
parser.add_argument("--max-iter", type=int, default=300)
parser.add_argument("--learning-rate", type=float, default=0.001)
options = parser.parse_args()

task = Task.init(project_name="script examples", task_name="step 3 train model")
args = {"dataset_task_id": ""}
task.connect(args)
task.execute_remotely()

dataset = Task.get_task(task_id=args["dataset_task_id"])
X_train, X_test = dataset.artifacts["X_train"].get(), dataset.artifacts["X_test"].get()
y_train, y_test = dataset.artifacts["y_train"].get(), dataset.artifacts["y_test"].get()

model = MLPClassifier(
    hidden_layer_sizes=(options.hidden_units,),
    learning_rate_init=options.learning_rate,
    max_iter=options.max_iter,
    random_state=0,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    model.fit(X_train, y_train)

accuracy = float(accuracy_score(y_test, model.predict(X_test)))
logger = task.get_logger()
for iteration, loss in enumerate(model.loss_curve_):
    logger.report_scalar("loss", "train", loss, iteration=iteration)
logger.report_scalar("accuracy", "test", accuracy, iteration=0)
task.upload_artifact("model", model)
print(f"{model.n_iter_} iterations, test accuracy {accuracy:.3f}")

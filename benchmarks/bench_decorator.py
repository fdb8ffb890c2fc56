"""Decorated pipelines: clearnb's PipelineDecorator against ClearML's, and its cost per component.

Two measurements:

* ``seed-4``: the seed's four-step pipeline (``step_one`` .. ``step_four`` called from
  ``main(pickle_url, mock_parameter)``, same decorators, same ``args_map``) with trivial
  bodies: plain lists instead of the iris data, a "model" that predicts the majority class.
  The same source (only the ``import`` of ``PipelineDecorator`` differs) runs as

  - ``clearml debug_pipeline``: ClearML's ``PipelineDecorator.debug_pipeline()`` with
    ``CLEARML_OFFLINE_MODE=1``, in a fresh subprocess per round (ClearML keeps global state)
    whose ``HOME`` is a new temporary folder (its offline session lands there, not in the
    user's ``~/.clearml``); timed inside the subprocess around the ``main(...)`` call only,
    so interpreter start-up and ``import clearml`` are not counted. Most of that call is
    spent after the pipeline body has returned, closing ClearML's Task; the time until the
    body returned is printed too, as ``clearml (pipeline body)``, for reference;
  - ``clearnb debug_pipeline``: clearnb's ``debug_pipeline()``, in this process;
  - ``clearnb run_locally``: clearnb's ``run_locally()``: every component runs as its own
    Task, a generated notebook in its own kernel, outputs stored as artifacts.

  clearnb gets a fresh store per round (``CLEARNB_HOME`` set to a new folder), and is timed
  around the ``main(...)`` call too. The order of the three is rotated every round.

* ``many-N``: one pipeline of N (default 1,000) independent trivial components
  (``return i``), in clearnb's debug mode. Printed: the total seconds, and the overhead per
  component = (total - N x the cost of calling the bare function) / N, in milliseconds.
  The total includes the fixed cost of the pipeline (its controller and Task); a pipeline of
  no components measures that alone, printed as a note.

Printed: medians over the rounds, ratios to ClearML's debug mode and the goals: clearnb
``run_locally`` faster than ClearML ``debug_pipeline``; clearnb ``debug_pipeline`` at least
20x faster than ClearML's; at most 2 ms of overhead per component at 1,000 components.

    python benchmarks/bench_decorator.py [--rounds 3] [--components 1000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

from clearnb import PipelineDecorator
from clearnb.config import HOME_ENV

PROJECT = "bench"
EXPECTED_ACCURACY = 100.0
DEBUG_SPEEDUP_GOAL = 20.0
OVERHEAD_GOAL_MS = 2.0
CLEARML_DEBUG = "clearml debug_pipeline"
CLEARML_BODY = "clearml (pipeline body)"
CLEARNB_DEBUG = "clearnb debug_pipeline"
CLEARNB_LOCAL = "clearnb run_locally"
SEED_CONTENDERS = (CLEARML_DEBUG, CLEARNB_DEBUG, CLEARNB_LOCAL)

SEED_PIPELINE = '''\
"""The seed's four-step decorated pipeline with trivial bodies."""

import time

from {package} import PipelineDecorator

BODY_ENDED = []
"""perf_counter() when the body of each main() call returned."""


@PipelineDecorator.component(return_values=["data_frame"], cache=True)
def step_one(pickle_data_url: str, extra: int = 43):
    return [
        [5.1, 3.5, 1.4, 0.2, 0],
        [4.9, 3.0, 1.4, 0.2, 0],
        [7.0, 3.2, 4.7, 1.4, 1],
        [5.0, 3.6, 1.4, 0.2, 0],
    ]


@PipelineDecorator.component(return_values=["X_train", "X_test", "y_train", "y_test"])
def step_two(data_frame, test_size=0.25, random_state=42):
    split = len(data_frame) - max(1, int(len(data_frame) * test_size))
    train, test = data_frame[:split], data_frame[split:]
    return (
        [row[:-1] for row in train],
        [row[:-1] for row in test],
        [row[-1] for row in train],
        [row[-1] for row in test],
    )


@PipelineDecorator.component(return_values=["model"])
def step_three(X_train, y_train):
    return {{"majority": max(set(y_train), key=y_train.count)}}


@PipelineDecorator.component(return_values=["accuracy"])
def step_four(model, X_data, Y_data):
    return sum(y == model["majority"] for y in Y_data) / len(Y_data)


@PipelineDecorator.pipeline(
    name="pipeline",
    project="examples",
    version="0.1",
    args_map={{"General": ["pickle_url"], "Mock": ["mock_parameter"]}},
)
def main(pickle_url, mock_parameter="mock"):
    data_frame = step_one(pickle_url)
    X_train, X_test, y_train, y_test = step_two(data_frame)
    model = step_three(X_train, y_train)
    accuracy = 100 * step_four(model, X_data=X_test, Y_data=y_test)
    print(f"Accuracy={{accuracy}}%")
    BODY_ENDED.append(time.perf_counter())
    return float(accuracy)
'''

CLEARML_RUNNER = """

if __name__ == "__main__":
    import json
    import sys

    from clearml import Task

    PipelineDecorator.debug_pipeline()
    began = time.perf_counter()
    result = main(pickle_url="file:///iris.csv")
    ended = time.perf_counter()
    report = {
        "seconds": ended - began,
        "body_seconds": BODY_ENDED[-1] - began if BODY_ENDED else None,
        "result": result,
        "offline": bool(Task.is_offline()),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(report, f)
"""


class BenchFailure(Exception):
    """A contender did not produce a successful pipeline run."""


class Unavailable(Exception):
    """ClearML cannot be installed or run offline here."""


# -- the pipelines ---------------------------------------------------------------------------


def write_seed_module(folder: Path, package: str, runner: str = "") -> Path:
    """The seed pipeline as a module importing ``PipelineDecorator`` from ``package``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{package}_seed_pipeline.py"
    path.write_text(SEED_PIPELINE.format(package=package) + runner)
    return path


def load_module(path: Path) -> ModuleType:
    """Import ``path`` as a module (registered, so that its functions' source can be read)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise BenchFailure(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def bare_trivial(i: int) -> int:
    """The trivial component's function, undecorated: the baseline of the overhead."""
    return i


trivial = PipelineDecorator.component(return_values=["value"], name="trivial")(bare_trivial)


def independent_components(n: int) -> list[int]:
    """A pipeline of ``n`` trivial components, none depending on another."""
    return [trivial(i) for i in range(n)]


many = PipelineDecorator.pipeline(name="bench-many", project=PROJECT)(independent_components)


# -- clearnb ---------------------------------------------------------------------------------


@contextlib.contextmanager
def clearnb_home(home: Path) -> Iterator[None]:
    """Point clearnb at the store in ``home`` for the duration."""
    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous


def run_clearnb_seed(module: ModuleType, mode: str, home: Path) -> float:
    """Seconds for one ``main(...)`` call of the seed pipeline, ``mode`` debug or local."""
    if mode == "debug":
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally()
    try:
        with clearnb_home(home), contextlib.redirect_stdout(sys.stderr):  # its print()
            began = time.perf_counter()
            result = module.main(pickle_url="file:///iris.csv")
            seconds = time.perf_counter() - began
    finally:
        PipelineDecorator.run_locally()
    if result != EXPECTED_ACCURACY:
        raise BenchFailure(f"main() returned {result!r}, expected {EXPECTED_ACCURACY}")
    return seconds


def run_clearnb_many(n: int, home: Path) -> float:
    """Seconds for one debug-mode pipeline of ``n`` independent trivial components."""
    PipelineDecorator.debug_pipeline()
    try:
        with clearnb_home(home):
            began = time.perf_counter()
            result = many(n)
            seconds = time.perf_counter() - began
    finally:
        PipelineDecorator.run_locally()
    if result != list(range(n)):
        raise BenchFailure(f"many({n}) returned a wrong list")
    return seconds


def bare_call_seconds(n: int, repeats: int = 50) -> float:
    """Seconds for one call of the undecorated function (best loop of ``n`` calls)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for i in range(n):
            bare_trivial(i)
        best = min(best, time.perf_counter() - began)
    return best / n


# -- ClearML ---------------------------------------------------------------------------------


def clearml_missing() -> str | None:
    """Why ClearML cannot be used here, or None."""
    if importlib.util.find_spec("clearml") is None:
        return "not installed; pip install clearml"
    return None


def run_clearml(script: Path, folder: Path, timeout: float) -> tuple[float, float | None]:
    """Seconds of ClearML's ``main(...)`` call, in debug mode and offline, in a subprocess.

    Also returns the seconds until the pipeline body returned (the call without closing
    ClearML's Task), if known.
    """
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    report_path = folder / "report.json"
    env = {**os.environ, "HOME": str(home), "CLEARML_OFFLINE_MODE": "1"}
    env.pop(HOME_ENV, None)
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(report_path)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchFailure(f"ClearML's pipeline did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0 or not report_path.exists():
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(f"exit status {done.returncode}: {lines[-1] if lines else 'no output'}")
    report = json.loads(report_path.read_text())
    if not report["offline"]:
        raise Unavailable("it did not run in offline mode")
    if report["result"] != EXPECTED_ACCURACY:
        raise BenchFailure(f"main() returned {report['result']!r}, expected {EXPECTED_ACCURACY}")
    body = report["body_seconds"]
    return float(report["seconds"]), None if body is None else float(body)


# -- the run ---------------------------------------------------------------------------------


class Results:
    """Seconds per (row, contender) over the rounds, and the first error of each."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], list[float]] = {}
        self.errors: dict[tuple[str, str], str] = {}

    def measure(self, row: str, contender: str, action: Callable[[], float]) -> float | None:
        try:
            seconds = action()
        except Unavailable:
            raise
        except Exception as exc:
            text = str(exc) if isinstance(exc, BenchFailure) else _error_text(exc)
            self.errors.setdefault((row, contender), text)
            print(f"  {row} {contender}: FAILED: {text}", file=sys.stderr)
            return None
        self.seconds.setdefault((row, contender), []).append(seconds)
        return seconds

    def median(self, row: str, contender: str) -> float | None:
        values = self.seconds.get((row, contender))
        return statistics.median(values) if values else None


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_seed(
    contender: str,
    *,
    root: Path,
    round_index: int,
    seed: ModuleType,
    clearml_script: Path,
    results: Results,
    timeout: float,
) -> float:
    """Seconds for one run of the seed pipeline by ``contender``."""
    if contender == CLEARML_DEBUG:
        seconds, body = run_clearml(clearml_script, root / f"clearml-{round_index}", timeout)
        if body is not None:
            results.seconds.setdefault(("seed-4", CLEARML_BODY), []).append(body)
        return seconds
    mode = "debug" if contender == CLEARNB_DEBUG else "local"
    return run_clearnb_seed(seed, mode, root / f"home-{mode}-{round_index}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--components", type=int, default=1000, help="N of the many-N row")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up on a ClearML subprocess after this many seconds (a hang guard)",
    )
    args = parser.parse_args(argv)
    n = args.components
    many_row = f"many-{n}"
    results = Results()
    clearml_reason = clearml_missing()

    with tempfile.TemporaryDirectory(prefix="cnb-bench-deco-") as folder:
        root = Path(folder)
        seed = load_module(write_seed_module(root / "clearnb", "clearnb"))
        clearml_script = write_seed_module(root / "clearml", "clearml", CLEARML_RUNNER)
        run_clearnb_many(0, root / "warm")  # imports and store code paths, untimed
        for round_index in range(args.rounds):
            contenders = [c for c in SEED_CONTENDERS if c != CLEARML_DEBUG or not clearml_reason]
            turn = round_index % len(contenders)
            line = []
            for contender in contenders[turn:] + contenders[:turn]:
                action = functools.partial(
                    run_seed,
                    contender,
                    root=root,
                    round_index=round_index,
                    seed=seed,
                    clearml_script=clearml_script,
                    results=results,
                    timeout=args.timeout,
                )
                try:
                    seconds = results.measure("seed-4", contender, action)
                except Unavailable as exc:
                    clearml_reason = str(exc)
                    print(f"clearml: unavailable ({clearml_reason})", file=sys.stderr)
                    continue
                line.append(f"{contender} {_seconds(seconds)}")
            print(f"round {round_index + 1} seed-4: {', '.join(line)}", file=sys.stderr)
            line = []
            for count, row in ((n, many_row), (0, "many-0")):
                home = root / f"home-{row}-{round_index}"
                action = functools.partial(run_clearnb_many, count, home)
                seconds = results.measure(row, CLEARNB_DEBUG, action)
                line.append(f"{row} {_seconds(seconds)}")
            print(f"round {round_index + 1} clearnb debug: {', '.join(line)}", file=sys.stderr)

    bare = bare_call_seconds(n or 1)
    print_table(args, results, clearml_reason, bare, many_row)
    return 1 if results.errors else 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def print_table(
    args: argparse.Namespace,
    results: Results,
    clearml_reason: str | None,
    bare: float,
    many_row: str,
) -> None:
    n = args.components
    print(
        f"decorated pipelines, {args.rounds} rounds, medians; seed-4 = the seed's four "
        "components with trivial bodies; ClearML offline, in a subprocess per round"
    )
    print(f"{'row':10} {'contender':24} {'seconds':>9}  {'ratio vs ClearML debug':24}  goal")

    def row(name: str, contender: str, value: str, ratio: str = "", goal: str = "") -> None:
        print(f"{name:10} {contender:24} {value:>9}  {ratio:24}  {goal}".rstrip())

    def failed(name: str, contender: str) -> str:
        return f"failed ({results.errors.get((name, contender), 'no run')})"

    base = results.median("seed-4", CLEARML_DEBUG)
    body = results.median("seed-4", CLEARML_BODY)
    for contender in SEED_CONTENDERS:
        if contender == CLEARML_DEBUG and clearml_reason is not None:
            row("seed-4", contender, "-", f"unavailable ({clearml_reason})")
            continue
        value = results.median("seed-4", contender)
        if value is None:
            row("seed-4", contender, "-", failed("seed-4", contender))
            continue
        ratio = f"{value / base:.3f}x" if base else "-"
        goal = ""
        if contender == CLEARNB_DEBUG:
            speedup = base / value if base and value else None
            ratio += f" ({speedup:.0f}x faster)" if speedup else ""
            met = speedup is not None and speedup >= DEBUG_SPEEDUP_GOAL
            goal = f">= {DEBUG_SPEEDUP_GOAL:.0f}x faster ({'met' if met else 'not met'})"
        elif contender == CLEARNB_LOCAL:
            met = base is not None and value < base
            goal = f"< 1.00x ({'met' if met else 'not met'})"
        row("seed-4", contender, f"{value:.3f}", ratio, goal)
        if contender == CLEARML_DEBUG and body is not None:
            row("seed-4", CLEARML_BODY, f"{body:.3f}", f"{body / value:.3f}x", "(reference)")

    print()
    print(f"{many_row}: {n} independent trivial components in one pipeline, clearnb debug mode")
    print(f"{'total s':>9}  {'bare call':>10}  {'overhead/component':>18}  goal")
    total = results.median(many_row, CLEARNB_DEBUG)
    if total is None:
        print(f"{'-':>9}  {failed(many_row, CLEARNB_DEBUG)}")
    else:
        overhead_ms = (total - n * bare) / max(n, 1) * 1000
        met = overhead_ms <= OVERHEAD_GOAL_MS
        print(
            f"{total:9.3f}  {bare * 1e6:7.2f} us  {overhead_ms:15.3f} ms  "
            f"<= {OVERHEAD_GOAL_MS:.0f} ms ({'met' if met else 'not met'})"
        )
    fixed = results.median("many-0", CLEARNB_DEBUG)
    print(
        f"note: a clearnb debug pipeline of no components takes {_seconds(fixed)} (its "
        "controller and Task); that fixed cost is included in the overhead above"
    )
    debug = results.median("seed-4", CLEARNB_DEBUG)
    if body is not None and base is not None:
        against = ""
        if debug:
            against = f"; clearnb debug_pipeline is {body / debug:.0f}x faster than that"
        print(
            f"note: {CLEARML_BODY} = ClearML's call until the pipeline body returned; the "
            f"other {base - body:.3f} s of the call close its Task (flushing its reporting "
            f"subprocess){against}"
        )
    if clearml_reason is not None:
        print(f"clearml: unavailable ({clearml_reason})")


if __name__ == "__main__":
    sys.exit(main())

"""Small notebook pipelines end to end: clearnb's PipelineController against papermill and ploomber.

Every step runs ``benchmarks/pipeline/step.ipynb`` (parameters ``x`` and ``parent_id``; two
trivial lines). Shapes:

* ``chain``: five steps, each the child of the one before (``parent_id`` = its parent's id);
* ``fanout``: one root step and eight children of it, independent of each other (nine
  notebooks in all; the children may run at the same time);
* ``cached``: the chain with ``cache_executed_step=True`` on every step, run twice on one
  store; the second run should take every step from the cache.

Contenders, all in this one process, in an order rotated every round so that machine noise
hits them alike:

* ``clearnb``: a ``PipelineController`` created inside the timing (cold: no kernels started
  beforehand), with a fresh store per round (``CLEARNB_HOME`` points to a new folder); timed
  from construction until ``wait()`` returns, every step's Task, executed notebook and
  events stored;
* ``papermill``: ``papermill.execute_notebook`` for each notebook in topological order, one
  at a time (``parent_id`` = the parent's output notebook path; papermill has no run ids);
* ``ploomber``: a generated ``pipeline.yaml`` whose tasks are ploomber-flavoured copies of the
  step notebook (``upstream`` and ``product`` declared in the parameters cell; ``parent_id``
  = the upstream product path), built in-process with
  ``DAGSpec(path).to_dag().build(force=True)`` (spec parsing included in the timing); its
  default serial executor for the chain, its ``Parallel`` executor for the fan-out.

Printed: the median seconds per pipeline over the rounds, the ratio to papermill (for
``cached``: to clearnb's first run on the same store) and the goal.

    python benchmarks/bench_pipeline.py [--rounds 3] [--only chain|fanout|cached] [--max-workers N]
        [--timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import papermill

from clearnb.config import HOME_ENV

STEP = Path(__file__).parent / "pipeline" / "step.ipynb"
PROJECT = "bench"
GOALS = {"chain": 0.25, "fanout": 0.20, "cached": 0.10}
CONTENDERS = ("papermill", "ploomber", "clearnb")


@dataclass(frozen=True)
class Step:
    name: str
    x: int
    parent: str | None = None


@dataclass(frozen=True)
class Shape:
    key: str
    label: str
    steps: tuple[Step, ...]
    """In topological order."""


CHAIN = Shape(
    "chain",
    "chain-5",
    tuple(Step(f"s{i}", i, f"s{i - 1}" if i else None) for i in range(5)),
)
FANOUT = Shape(
    "fanout",
    "fanout-1+8",
    (Step("root", 0), *(Step(f"c{i}", i + 1, "root") for i in range(8))),
)


class BenchFailure(Exception):
    """A contender did not produce a successful pipeline run."""


# -- papermill -------------------------------------------------------------------------------


def run_papermill(shape: Shape, out_dir: Path) -> float:
    """Seconds for every notebook of ``shape``, one after another, with papermill."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    began = time.perf_counter()
    for step in shape.steps:
        outputs[step.name] = out_dir / f"{step.name}.ipynb"
        parent_id = str(outputs[step.parent]) if step.parent else ""
        papermill.execute_notebook(
            str(STEP),
            str(outputs[step.name]),
            parameters={"x": step.x, "parent_id": parent_id},
            progress_bar=False,
        )
    return time.perf_counter() - began


# -- ploomber --------------------------------------------------------------------------------


def ploomber_missing() -> str | None:
    """Why ploomber cannot be used here, or None."""
    os.environ.setdefault("PLOOMBER_STATS_ENABLED", "false")  # no telemetry from benchmarks
    try:
        from ploomber.spec import DAGSpec  # type: ignore[import-untyped]  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"{type(exc).__name__}: {exc}; install it with pip install 'clearnb[bench]'"
    return None


def write_ploomber_project(shape: Shape, folder: Path, max_workers: int | None) -> Path:
    """A ``pipeline.yaml`` and one notebook per step (ploomber reads upstream from the source)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = nbformat.read(STEP, as_version=4)  # type: ignore[no-untyped-call]
    tasks = []
    for step in shape.steps:
        nb = copy.deepcopy(template)
        upstream = [step.parent] if step.parent else None
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        params.source = f"upstream = {upstream!r}\nproduct = None\nx = 0"
        work = next(c for c in nb.cells if c is not params and c.cell_type == "code")
        work.source = (
            'parent_id = str(next(iter(upstream.values()))["nb"]) if upstream else ""\n'
            + work.source
        )
        nbformat.write(nb, folder / f"{step.name}.ipynb")  # type: ignore[no-untyped-call]
        tasks.append(
            {
                "source": f"{step.name}.ipynb",
                "name": step.name,
                "product": {"nb": f"out/{step.name}.ipynb"},
                "params": {"x": step.x},
                "executor_params": {"progress_bar": False},  # as papermill is run above
            }
        )
    spec: dict[str, Any] = {"tasks": tasks}
    if shape.key == "fanout":
        spec["executor"] = {"dotted_path": "ploomber.executors.Parallel"}
        if max_workers:
            spec["executor"]["processes"] = max_workers
    path = folder / "pipeline.yaml"
    path.write_text(json.dumps(spec, indent=2))  # JSON is YAML
    return path


def run_ploomber(spec_path: Path) -> float:
    """Seconds to load the spec and build every task, in this process."""
    from ploomber.spec import DAGSpec

    began = time.perf_counter()
    dag = DAGSpec(str(spec_path)).to_dag()
    dag.build(force=True, show_progress=False)
    return time.perf_counter() - began


# -- clearnb ---------------------------------------------------------------------------------


def run_clearnb(
    shape: Shape,
    home: Path,
    *,
    max_workers: int | None,
    cache: bool,
    timeout: float,
) -> tuple[float, dict[str, str]]:
    """Seconds for one cold PipelineController run of ``shape`` on the store at ``home``.

    Returns the seconds and every step's final status.
    """
    from clearnb import PipelineController

    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    try:
        began = time.perf_counter()
        pipe = PipelineController(
            name=f"bench-{shape.key}", project=PROJECT, version=None, max_workers=max_workers
        )
        for step in shape.steps:
            overrides: dict[str, Any] = {"General/x": step.x}
            if step.parent:
                overrides["General/parent_id"] = "${" + step.parent + ".id}"
            pipe.add_step(
                name=step.name,
                notebook=str(STEP),
                parents=[step.parent] if step.parent else [],
                parameter_override=overrides,
                cache_executed_step=cache,
            )
        pipe.start()
        finished = pipe.wait(timeout=timeout / 60)  # minutes, as ClearML
        seconds = time.perf_counter() - began
        if not finished:
            pipe.stop()
            raise BenchFailure(f"did not finish within {timeout:.0f} s; steps: {_describe(pipe)}")
        if not pipe.is_successful():
            raise BenchFailure(f"pipeline not successful; steps: {_describe(pipe)}")
        statuses = {name: node.status for name, node in pipe.get_pipeline_dag().items()}
        return seconds, statuses
    finally:
        if previous is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous


def _describe(pipe: Any) -> str:
    parts = []
    for name, node in pipe.get_pipeline_dag().items():
        text = f"{name}={node.status}"
        reason = (node.error or {}).get("reason")
        if reason:
            text += f" ({reason})"
        parts.append(text)
    return ", ".join(parts)


# -- the run ---------------------------------------------------------------------------------


class Results:
    """Seconds per (row, contender) over the rounds, and the first error of each."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], list[float]] = {}
        self.errors: dict[tuple[str, str], str] = {}
        self.notes: list[str] = []

    def measure(self, row: str, contender: str, action: Callable[[], float]) -> float | None:
        try:
            seconds = action()
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


def _warm_imports(*, with_ploomber: bool) -> None:
    """Import every contender's modules before the first timing (errors show up later)."""
    with contextlib.suppress(ImportError):
        importlib.import_module("clearnb.pipeline.controller")
    if with_ploomber:
        importlib.import_module("ploomber.tasks")


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_shape(
    contender: str,
    shape: Shape,
    *,
    root: Path,
    round_index: int,
    specs: dict[str, Path],
    args: argparse.Namespace,
) -> float:
    """Seconds for one run of ``shape`` by ``contender``."""
    if contender == "papermill":
        return run_papermill(shape, root / f"pm-{shape.key}-{round_index}")
    if contender == "ploomber":
        return run_ploomber(specs[shape.key])
    home = root / f"home-{shape.key}-{round_index}"
    return run_clearnb(
        shape, home, max_workers=args.max_workers, cache=False, timeout=args.timeout
    )[0]


def run_cached(home: Path, statuses: dict[str, str], args: argparse.Namespace) -> float:
    """Seconds for the chain with every step cacheable on the store at ``home``."""
    seconds, found = run_clearnb(
        CHAIN, home, max_workers=args.max_workers, cache=True, timeout=args.timeout
    )
    statuses.update(found)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("chain", "fanout", "cached"))
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="steps at once for clearnb, processes for ploomber's fan-out (default: cores)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up on a clearnb pipeline run after this many seconds (a hang guard)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("papermill").setLevel(logging.WARNING)
    logging.getLogger("ploomber").setLevel(logging.WARNING)
    wanted = [args.only] if args.only else ["chain", "fanout", "cached"]
    shapes = [s for s in (CHAIN, FANOUT) if s.key in wanted]
    ploomber_reason = ploomber_missing() if shapes else None
    contenders = [c for c in CONTENDERS if c != "ploomber" or ploomber_reason is None]
    results = Results()

    with tempfile.TemporaryDirectory(prefix="cnb-bench-pipe-") as folder:
        root = Path(folder)
        specs: dict[str, Path] = {}
        if ploomber_reason is None:
            for shape in shapes:
                specs[shape.key] = write_ploomber_project(
                    shape, root / f"ploomber-{shape.key}", args.max_workers
                )
        _warm_imports(with_ploomber=ploomber_reason is None)
        papermill.execute_notebook(  # warm the file cache and imports, untimed
            str(STEP), str(root / "warm.ipynb"), parameters={"x": 0}, progress_bar=False
        )
        for round_index in range(args.rounds):
            turn = round_index % len(contenders)
            order = contenders[turn:] + contenders[:turn]
            for shape in shapes:
                line = []
                for contender in order:
                    action = functools.partial(
                        run_shape,
                        contender,
                        shape,
                        root=root,
                        round_index=round_index,
                        specs=specs,
                        args=args,
                    )
                    seconds = results.measure(shape.label, contender, action)
                    line.append(f"{contender} {_seconds(seconds)}")
                print(f"round {round_index + 1} {shape.label}: {', '.join(line)}", file=sys.stderr)
            if "cached" in wanted:
                home = root / f"home-cached-{round_index}"
                line = []
                for row in ("first", "cached"):
                    statuses: dict[str, str] = {}
                    action = functools.partial(run_cached, home, statuses, args)
                    seconds = results.measure(row, "clearnb", action)
                    line.append(f"{row} {_seconds(seconds)}")
                    missed = {k: v for k, v in statuses.items() if v != "cached"}
                    if row == "cached" and missed:
                        results.notes.append(
                            f"round {round_index + 1}: the cached re-run did not take every "
                            f"step from the cache: {missed}"
                        )
                print(f"round {round_index + 1} cached chain-5: {', '.join(line)}", file=sys.stderr)

    print_table(args, shapes, wanted, results, ploomber_reason)
    return 1 if results.errors else 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def print_table(
    args: argparse.Namespace,
    shapes: Sequence[Shape],
    wanted: Sequence[str],
    results: Results,
    ploomber_reason: str | None,
) -> None:
    workers = args.max_workers or f"cores ({os.cpu_count()})"
    print(
        f"notebook pipelines, {args.rounds} rounds, medians; max_workers={workers}; "
        "fanout = 1 root + 8 children; ploomber built in-process "
        "(serial executor for the chain, Parallel for the fan-out)"
    )
    print(f"{'shape':10} {'contender':14} {'s/pipeline':>10}  {'ratio vs papermill':18}  goal")

    def row(shape: str, contender: str, value: str, ratio: str = "", goal: str = "") -> None:
        print(f"{shape:10} {contender:14} {value:>10}  {ratio:18}  {goal}".rstrip())

    def failed(label: str, contender: str) -> str:
        return f"failed ({results.errors.get((label, contender), 'no run')})"

    for shape in shapes:
        base = results.median(shape.label, "papermill")
        for contender in CONTENDERS:
            if contender == "ploomber" and ploomber_reason is not None:
                row(shape.label, contender, "", f"unavailable ({ploomber_reason})")
                continue
            value = results.median(shape.label, contender)
            if value is None:
                row(shape.label, contender, "-", failed(shape.label, contender))
                continue
            ratio = f"{value / base:.2f}x" if base else "-"
            goal = ""
            if contender == "clearnb":
                target = GOALS[shape.key]
                met = base is not None and value / base <= target
                goal = f"<= {target:.2f}x ({'met' if met else 'not met'})"
            row(shape.label, contender, f"{value:.2f}", ratio, goal)
    if "cached" in wanted:
        first = results.median("first", "clearnb")
        cached = results.median("cached", "clearnb")
        if first is None:
            row("cached", "clearnb first", "-", failed("first", "clearnb"))
        else:
            row("cached", "clearnb first", f"{first:.2f}", "(cache on, empty)")
        if cached is None:
            row("cached", "clearnb", "-", failed("cached", "clearnb"))
        else:
            share = cached / first if first else None
            target = GOALS["cached"]
            met = share is not None and share <= target
            row(
                "cached",
                "clearnb",
                f"{cached:.2f}",
                f"{share:.2f}x of first" if share is not None else "-",
                f"<= {target:.2f}x ({'met' if met else 'not met'})",
            )
    for note in results.notes:
        print(f"note: {note}")
    if ploomber_reason is not None and shapes:
        print(f"ploomber: unavailable ({ploomber_reason})")


if __name__ == "__main__":
    sys.exit(main())

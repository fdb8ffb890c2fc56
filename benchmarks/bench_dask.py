"""Steps on a Dask cluster against the local kernel pool, in the same run.

Two shapes:

* ``fanout``: one pipeline of 16 independent steps, each running
  ``benchmarks/pipeline/sleep.ipynb`` (it sleeps ``seconds``, 1 s by default), on a Dask
  ``LocalCluster`` of 2 worker processes with 2 threads each (4 slots; the controller's
  ``max_workers=4``), against the local executor with ``max_workers=2`` and ``max_workers=4``;
* ``chain``: the trivial 5-step chain of ``bench_pipeline.py`` (``benchmarks/pipeline/step.ipynb``,
  each step the child of the one before) on the same cluster against the local executor.

The cluster is started once, before anything is timed (a team's cluster is up before its
pipelines run), and its workers import papermill then. Every run is cold all the same: a
fresh store per run (``CLEARNB_HOME`` points to a new folder), so the workers start a new
kernel pool for it when the run begins, as the local executor does; that pool is removed
after the run (its kernels stopped) so that pools do not pile up. A reference row,
``dask, warm``, runs the chain a second time on the same store, on the kernels the first run
left ready. Timed from the ``PipelineController``'s construction until ``wait()`` returns;
contenders in an order rotated every round.

Printed: median seconds per pipeline; for the fan-out, the per-step overhead of Dask over
local with the same 4 slots, ``(dask - local-4) x slots / steps`` (each slot runs
steps/slots steps one after another), goal <= 30 ms; for the chain, dask / local, goal
<= 1.2x. Both shapes also print the median executor time per step: how long the controller
saw a step take (queued until its executor returned) minus how long its Task ran where it
ran, which leaves the notebook's own run (and the machine's noise during it) out.

    python benchmarks/bench_dask.py [--rounds 3] [--seconds 1.0] [--only fanout|chain]
        [--timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clearnb.config import HOME_ENV

HERE = Path(__file__).parent
SLEEP = HERE / "pipeline" / "sleep.ipynb"
STEP = HERE / "pipeline" / "step.ipynb"
PROJECT = "bench-dask"
FANOUT_STEPS = 16
CHAIN_STEPS = 5
WORKERS, THREADS = 2, 2
SLOTS = WORKERS * THREADS
OVERHEAD_GOAL_MS = 30.0
CHAIN_GOAL = 1.2


class BenchFailure(Exception):
    """A contender did not produce a successful pipeline run."""


@dataclass
class Results:
    """Seconds per (shape, contender) over the rounds, and the first error of each."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    gaps: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """Every step's executor time (:func:`executor_gaps`), over the rounds."""

    def gap_ms(self, key: tuple[str, str]) -> float | None:
        found = self.gaps.get(key)
        return statistics.median(found) * 1000 if found else None

    def measure(self, key: tuple[str, str], action: Callable[[], float]) -> float | None:
        try:
            value = action()
        except Exception as exc:
            text = str(exc) if isinstance(exc, BenchFailure) else _error_text(exc)
            self.errors.setdefault(key, text)
            print(f"  {' '.join(key)}: FAILED: {text}", file=sys.stderr)
            return None
        self.values.setdefault(key, []).append(value)
        return value

    def median(self, key: tuple[str, str]) -> float | None:
        found = self.values.get(key)
        return statistics.median(found) if found else None


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


@contextlib.contextmanager
def fresh_home(root: Path, label: str) -> Iterator[Path]:
    """``CLEARNB_HOME`` set to a new folder under ``root`` for the block."""
    home = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=root))
    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous


def build(shape: str, executor: Any, max_workers: int, seconds: float) -> Any:
    """The pipeline of ``shape`` (not started)."""
    from clearnb import PipelineController

    pipe = PipelineController(
        name=f"bench-{shape}", project=PROJECT, max_workers=max_workers, executor=executor
    )
    if shape == "fanout":
        for n in range(FANOUT_STEPS):
            pipe.add_step(
                name=f"s{n}",
                notebook=str(SLEEP),
                parameter_override={"General/x": n, "General/seconds": seconds},
            )
    else:
        for n in range(CHAIN_STEPS):
            overrides: dict[str, Any] = {"General/x": n}
            if n:
                overrides["General/parent_id"] = "${s" + str(n - 1) + ".id}"
            pipe.add_step(
                name=f"s{n}",
                notebook=str(STEP),
                parents=[f"s{n - 1}"] if n else [],
                parameter_override=overrides,
            )
    return pipe


def timed_run(
    shape: str,
    executor: Any,
    max_workers: int,
    args: argparse.Namespace,
    gaps: list[float] | None = None,
) -> float:
    """Seconds from construction until ``wait()`` returns, for one run on this store;
    ``gaps`` receives each step's executor time (see :func:`executor_gaps`)."""
    began = time.perf_counter()
    pipe = build(shape, executor, max_workers, args.seconds)
    pipe.start()
    finished = pipe.wait(timeout=args.timeout / 60)  # minutes, as ClearML
    seconds = time.perf_counter() - began
    with contextlib.suppress(Exception):
        pipe.stop()
    if not finished:
        raise BenchFailure(f"did not finish within {args.timeout:.0f} s")
    if not pipe.is_successful():
        errors = {n: (d.error or {}).get("reason") for n, d in pipe.get_pipeline_dag().items()}
        raise BenchFailure(f"pipeline not successful: {errors}")
    if gaps is not None:
        gaps.extend(executor_gaps(pipe))
    return seconds


def executor_gaps(pipe: Any) -> list[float]:
    """Per step, seconds the controller saw it take (from queued until its executor
    returned) minus the seconds its Task ran (``started`` to ``completed``, recorded where
    it ran): what the executor adds to a step, apart from the notebook's own run."""
    found = []
    for node in pipe.get_pipeline_dag().values():
        record = pipe.store.get_task(node.executed)
        if None in (node.job_started, node.job_ended, record.started, record.completed):
            continue
        found.append((node.job_ended - node.job_started) - (record.completed - record.started))
    return found


def drop_pools(client: Any) -> None:
    """Stop the kernel pools the workers keep for the stores of finished runs."""
    from clearnb.executors.dasksettings import PLUGIN_PREFIX

    plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
    names = {name for found in plugins.values() for name in found}
    for name in sorted(names):
        if name.startswith(PLUGIN_PREFIX):
            client.unregister_worker_plugin(name)


def run_contender(
    contender: str,
    shape: str,
    root: Path,
    client: Any,
    args: argparse.Namespace,
    gaps: list[float],
) -> float:
    """One cold run of ``contender`` (``dask``, ``dask-warm``, ``local-N``) on a new store."""
    with fresh_home(root, f"{shape}-{contender}"):
        try:
            if contender == "dask":
                return timed_run(shape, client, SLOTS, args, gaps)
            if contender == "dask-warm":
                timed_run(shape, client, SLOTS, args)  # leaves the workers' kernels ready
                return timed_run(shape, client, SLOTS, args, gaps)
            workers = int(contender.split("-")[1])
            return timed_run(shape, "local", workers, args, gaps)
        finally:
            if contender.startswith("dask"):
                drop_pools(client)


def _warm_workers(client: Any) -> None:
    """The workers import what a first step would (untimed): papermill, clearnb."""

    def imports() -> None:
        import papermill  # noqa: F401

        import clearnb.executors.daskworker  # noqa: F401

    client.run(imports)


CONTENDERS = {"fanout": ["dask", "local-2", "local-4"], "chain": ["dask", "local-2", "dask-warm"]}


def run_rounds(
    client: Any, root: Path, shapes: Sequence[str], args: argparse.Namespace, results: Results
) -> None:
    """Every contender of every shape, ``args.rounds`` times, in a rotated order."""
    for round_index in range(args.rounds):
        for shape in shapes:
            names = CONTENDERS[shape]
            turn = round_index % len(names)
            line = []
            for contender in names[turn:] + names[:turn]:
                gaps = results.gaps.setdefault((shape, contender), [])
                value = results.measure(
                    (shape, contender),
                    lambda c=contender, s=shape, g=gaps: run_contender(c, s, root, client, args, g),
                )
                line.append(f"{contender} " + ("-" if value is None else f"{value:.2f} s"))
            print(f"round {round_index + 1} {shape}: {', '.join(line)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="sleep of each fan-out step")
    parser.add_argument("--only", choices=("fanout", "chain"))
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one pipeline run (a hang guard)"
    )
    args = parser.parse_args(argv)
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        print(f"distributed is not installed (pip install -e '.[dask]'): {exc}")
        return 1
    logging.getLogger("distributed").setLevel(logging.ERROR)
    os.environ.pop("CLEARNB_EXECUTOR", None)
    os.environ.pop("CLEARNB_STORE_URL", None)
    shapes = [args.only] if args.only else ["fanout", "chain"]
    results = Results()
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cnb-bench-dask-") as folder:
        root = Path(folder)
        cluster = LocalCluster(
            processes=True,
            n_workers=WORKERS,
            threads_per_worker=THREADS,
            dashboard_address=":0",
            host="127.0.0.1",
            silence_logs=logging.ERROR,
        )
        try:
            with Client(cluster, set_as_default=False) as client:
                _warm_workers(client)
                with fresh_home(root, "warm"):  # this process imports papermill too
                    timed_run("chain", "local", 1, args)
                run_rounds(client, root, shapes, args, results)
        finally:
            cluster.close(timeout=60)
    notes = [
        f"took {time.monotonic() - began:.0f} s; load average (1 min) {load_before:.2f} at the "
        f"start, {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} cores: the workers, "
        "their kernels and the local kernels share these cores, so the figures are noisy"
    ]
    print_table(args, shapes, results, notes)
    return 1 if results.errors else 0


def print_table(
    args: argparse.Namespace, shapes: Sequence[str], results: Results, notes: Sequence[str]
) -> None:
    print(f"medians over {args.rounds} rounds; seconds from construction until wait() returns")
    if "fanout" in shapes:
        print(
            f"\nfan-out: {FANOUT_STEPS} independent steps, each sleeping {args.seconds:g} s "
            f"(ideal with {SLOTS} slots: {FANOUT_STEPS / SLOTS * args.seconds:g} s)"
        )
        rows = (
            ("dask", f"dask ({WORKERS} workers x {THREADS} threads)"),
            ("local-2", "local, max_workers=2"),
            ("local-4", "local, max_workers=4"),
        )
        _rows(results, "fanout", rows)
        dask, local = results.median(("fanout", "dask")), results.median(("fanout", "local-4"))
        if dask is not None and local is not None:
            overhead = (dask - local) * SLOTS / FANOUT_STEPS * 1000
            met = "met" if overhead <= OVERHEAD_GOAL_MS else "not met"
            print(
                f"per-step overhead of dask over local with {SLOTS} slots: {overhead:.0f} ms "
                f"(goal <= {OVERHEAD_GOAL_MS:g} ms: {met})"
            )
        _gap_line(results, "fanout", "local-4")
    if "chain" in shapes:
        print(f"\nchain: {CHAIN_STEPS} trivial steps, each the child of the one before")
        rows = (
            ("dask", "dask (cold pool)"),
            ("local-2", "local, max_workers=2"),
            ("dask-warm", "dask, warm (reference: second run on the same store)"),
        )
        _rows(results, "chain", rows)
        dask, local = results.median(("chain", "dask")), results.median(("chain", "local-2"))
        if dask is not None and local is not None:
            ratio = dask / local
            met = "met" if ratio <= CHAIN_GOAL else "not met"
            print(f"dask / local: {ratio:.2f}x (goal <= {CHAIN_GOAL:g}x: {met})")
        _gap_line(results, "chain", "local-2")
    for note in notes:
        print(f"note: {note}")


def _gap_line(results: Results, shape: str, local: str) -> None:
    dask, here = results.gap_ms((shape, "dask")), results.gap_ms((shape, local))
    if dask is None or here is None:
        return
    print(
        f"executor time per step (median; as the controller saw the step, minus its Task's "
        f"own run): dask {dask:.0f} ms, {local} {here:.0f} ms, difference {dask - here:.0f} ms"
    )


def _rows(results: Results, shape: str, rows: Sequence[tuple[str, str]]) -> None:
    for key, label in rows:
        value = results.median((shape, key))
        shown = f"{value:8.2f}" if value is not None else "       -"
        error = results.errors.get((shape, key))
        print(f"  {label:54} {shown}" + (f"  failed: {error}" if error else ""))


if __name__ == "__main__":
    sys.exit(main())

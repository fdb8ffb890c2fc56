"""Queues and agents: dequeue latency of a warm agent, and throughput of trivial tasks.

Every task runs ``benchmarks/trivial.ipynb`` (two trivial lines). Agents are separate
processes (``python -m clearnb agent --queue ... --workers 1``) started by this script with
the store in their environment, and stopped with SIGTERM when a measurement is done. Each
measurement gets a fresh store: a new ``CLEARNB_HOME`` folder (SQLite file and artifacts
under it), or for PostgreSQL a new database created on the server at ``--postgres-url``
(or ``CLEARNB_TEST_POSTGRES_URL``) and dropped afterwards, with artifacts in a new folder.
Without a PostgreSQL URL, only SQLite runs and a note says so.

Before anything is timed, every agent is *warm*: the store lists it (its first heartbeat),
and it has run one task of its own (a queue ``warm-N`` that only it serves), so its kernel
pool is up and papermill is imported. The local runner is warmed the same way. Before a
throughput run, both are then left alone for ``--settle`` seconds, while their pools
replace the kernels the warm-up used.

* **latency**: one warm, idle agent with one worker. Tasks are enqueued one at a time:
  each is recorded and prepared beforehand (untimed), the agent is left idle for ``--gap``
  seconds, then ``enqueue()`` puts it in the queue and the script waits until it ends.
  Measured per task from the store's timestamps (one clock: same machine): enqueue (the
  task's ``enqueued``) until ``started`` (the agent took it and its run begins, just
  before the kernel executes the notebook), until the first ``cell_started`` event (the
  kernel is running code), and until ``completed``. Printed: median and p90 over
  ``--latency-samples`` tasks. Goal: enqueue to started <= 0.2 s.
* **throughput**: ``--tasks`` tasks recorded and prepared beforehand (untimed), then all
  enqueued in a loop; timed from just before the first ``enqueue()`` until the last
  ``completed`` timestamp in the store, for 1, 2 and 4 agents (``--agents``), each a
  separate process with one worker. Against it, the local executor in this process: a
  warm ``NotebookRunner(pool_size=N)`` runs the same prepared tasks with ``run_prepared``
  from N threads, on the same kind of store, timed from the first call until the last
  ``completed``. Printed: median tasks/s over ``--rounds`` rounds and the ratio agents /
  local. The order of the six contenders is rotated every round.

    python benchmarks/bench_queue.py [--rounds 3] [--tasks 40] [--latency-samples 20]
        [--agents 1,2,4] [--gap 1.0] [--settle 1.0] [--only latency|throughput]
        [--postgres-url URL] [--no-sqlite] [--timeout 300]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import sqlalchemy as sa

from clearnb.backend import Backend
from clearnb.config import (
    ARTIFACT_URL_ENV,
    CACHE_DIR_ENV,
    HOME_ENV,
    STORE_URL_ENV,
    TASK_ID_ENV,
    Config,
)
from clearnb.execution.runner import NotebookRunner, prepare_run
from clearnb.executors.queue import enqueue
from clearnb.store import FINAL_STATUSES, TaskRecord

TRIVIAL = Path(__file__).parent / "trivial.ipynb"
QUEUE = "bench"
POSTGRES_ENV = "CLEARNB_TEST_POSTGRES_URL"
LATENCY_GOAL = 0.2
"""Seconds from enqueue until the agent has started the task."""
POLL = 0.05
"""Seconds between two looks at the store while waiting for tasks to end (the times
measured come from the store's timestamps, not from these looks)."""


class BenchFailure(Exception):
    """A measurement did not produce a successful run."""


# -- stores ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """One fresh store: the environment that selects it, and its configuration."""

    kind: str
    """``sqlite`` or ``postgresql``."""
    env: dict[str, str]
    config: Config


class Stores:
    """Makes fresh stores under ``root`` (and databases on the PostgreSQL server)."""

    def __init__(self, root: Path, postgres_url: str | None) -> None:
        self.root = root
        self.postgres_url = postgres_url
        self._count = itertools.count(1)

    @contextlib.contextmanager
    def fresh(self, kind: str) -> Iterator[Place]:
        number = next(self._count)
        home = self.root / f"{kind}-{number}"
        env = {HOME_ENV: str(home)}
        database = None
        if kind == "postgresql":
            assert self.postgres_url is not None
            database = f"cnb_bench_{os.getpid()}_{number}"
            _admin(self.postgres_url, f'CREATE DATABASE "{database}"')
            url = sa.make_url(self.postgres_url).set(database=database)
            env[STORE_URL_ENV] = url.render_as_string(hide_password=False)
            env[ARTIFACT_URL_ENV] = str(home / "artifacts")
        try:
            yield Place(kind, env, Config.from_env(env))
        finally:
            if database is not None:
                assert self.postgres_url is not None
                _admin(self.postgres_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) on the server."""
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":  # clearnb uses psycopg 3, not SQLAlchemy's default
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def postgres_problem(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used here, or None."""
    try:
        _admin(url, "SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


# -- agents ----------------------------------------------------------------------------------


class Agents:
    """``count`` agent processes on the store of ``place``, one worker each, stopped on exit.

    Agent ``n`` serves the benchmark queue and its own queue ``warm-n``.
    """

    def __init__(self, place: Place, count: int, logs: Path) -> None:
        self.place = place
        self.names = [f"bench-agent-{n}" for n in range(count)]
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []

    def __enter__(self) -> Agents:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in (HOME_ENV, STORE_URL_ENV, ARTIFACT_URL_ENV, CACHE_DIR_ENV, TASK_ID_ENV)
        }
        env.update(self.place.env)
        self.logs.mkdir(parents=True, exist_ok=True)
        for n, name in enumerate(self.names):
            log = (self.logs / f"{name}.log").open("wb")
            self._files.append(log)
            command = [sys.executable, "-m", "clearnb", "agent", "--queue", QUEUE]
            command += ["--queue", f"warm-{n}", "--workers", "1", "--name", name]
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    cwd=self.place.config.home.parent,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def wait_listed(self, backend: Backend, timeout: float) -> None:
        """Until the store lists every agent (its first heartbeat, sent once it serves)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {w.id for w in backend.store.get_workers() if w.status != "stopped"}
            if seen >= set(self.names):
                return
            self.check_alive()
            if time.monotonic() > deadline:
                missing = sorted(set(self.names) - seen)
                raise BenchFailure(f"agents not listed after {timeout:g} s: {missing}")
            time.sleep(POLL)

    def check_alive(self) -> None:
        for name, process in zip(self.names, self.processes, strict=True):
            if process.poll() is not None:
                raise BenchFailure(
                    f"agent {name} exited with status {process.returncode}: {self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.logs / f"{name}.log"
        try:
            text = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every agent, wait for each, SIGKILL one that does not stop in time."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in zip(self.names, self.processes, strict=False):
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"  agent {name} did not stop within {timeout:g} s of SIGTERM: killed",
                    file=sys.stderr,
                )
                process.kill()
                process.wait()
        for log in self._files:
            log.close()
        self.processes.clear()
        self._files.clear()


def prepare(backend: Backend, count: int, project: str) -> list[TaskRecord]:
    """``count`` trivial tasks recorded and prepared (validated, parameters injected)."""
    return [
        prepare_run(backend, TRIVIAL, {"x": i}, project_name=project, task_name=f"trivial-{i}")
        for i in range(count)
    ]


def wait_ended(
    backend: Backend, project: str, count: int, timeout: float, agents: Agents | None = None
) -> list[TaskRecord]:
    """The ``count`` tasks of ``project`` once every one of them has ended."""
    deadline = time.monotonic() + timeout
    while True:
        ended = backend.store.find_tasks(project=project, status=FINAL_STATUSES)
        if len(ended) >= count:
            return ended
        if agents is not None:
            agents.check_alive()
        if time.monotonic() > deadline:
            raise BenchFailure(
                f"{count - len(ended)} of {count} tasks not ended after {timeout:g} s"
            )
        time.sleep(POLL)


def check_completed(records: Sequence[TaskRecord]) -> None:
    for record in records:
        if record.status != "completed":
            reason = (record.error or {}).get("reason", "no reason recorded")
            raise BenchFailure(f"task {record.id} ended {record.status}: {reason}")


def warm_agents(backend: Backend, agents: Agents, timeout: float) -> None:
    """Listed in the store, then one task run by each agent on its own queue."""
    agents.wait_listed(backend, timeout)
    project = "bench-warm"
    records = prepare(backend, len(agents.names), project)
    for n, record in enumerate(records):
        enqueue(backend, record.id, f"warm-{n}", warn=False)
    check_completed(wait_ended(backend, project, len(records), timeout, agents))


def settle(seconds: float) -> None:
    """Leave the warmed executor alone: its pool replaces the kernels the warm-up used."""
    time.sleep(seconds)


# -- latency ---------------------------------------------------------------------------------


@dataclass
class Latency:
    """Per task, seconds from enqueue; and the seconds the enqueue() call took."""

    started: list[float]
    first_cell: list[float]
    completed: list[float]
    call: list[float]


def measure_latency(place: Place, samples: int, args: argparse.Namespace) -> Latency:
    """One warm agent, ``samples`` tasks enqueued one at a time."""
    backend = Backend.open(place.config)
    result = Latency([], [], [], [])
    try:
        with Agents(place, 1, place.config.home / "agent-logs") as agents:
            warm_agents(backend, agents, args.timeout)
            for n in range(samples):
                project = f"bench-latency-{n}"
                (record,) = prepare(backend, 1, project)
                time.sleep(args.gap)  # the agent idles: its polls are at their slowest
                began = time.perf_counter()
                enqueue(backend, record.id, QUEUE, warn=False)
                result.call.append(time.perf_counter() - began)
                (done,) = wait_ended(backend, project, 1, args.timeout, agents)
                check_completed([done])
                assert done.enqueued is not None and done.started is not None
                assert done.completed is not None
                cells = [
                    e.timestamp
                    for e in backend.store.get_events(done.id)
                    if e.kind == "cell_started"
                ]
                if not cells:
                    raise BenchFailure(f"task {done.id} has no cell_started event")
                result.started.append(done.started - done.enqueued)
                result.first_cell.append(min(cells) - done.enqueued)
                result.completed.append(done.completed - done.enqueued)
                print(
                    f"  {place.kind} latency {n + 1}/{samples}: started "
                    f"{result.started[-1]:.3f} s, first cell {result.first_cell[-1]:.3f} s, "
                    f"completed {result.completed[-1]:.3f} s",
                    file=sys.stderr,
                )
    finally:
        backend.close()
    return result


# -- throughput ------------------------------------------------------------------------------


def throughput_agents(place: Place, count: int, args: argparse.Namespace) -> float:
    """Tasks/s for ``args.tasks`` tasks enqueued at once to ``count`` warm agents."""
    backend = Backend.open(place.config)
    try:
        with Agents(place, count, place.config.home / "agent-logs") as agents:
            warm_agents(backend, agents, args.timeout)
            project = "bench-throughput"
            records = prepare(backend, args.tasks, project)
            settle(args.settle)
            began = time.time()
            for record in records:
                enqueue(backend, record.id, QUEUE, warn=False)
            ended = wait_ended(backend, project, len(records), args.timeout, agents)
            check_completed(ended)
            return _rate(len(records), began, ended)
    finally:
        backend.close()


def throughput_local(place: Place, workers: int, args: argparse.Namespace) -> float:
    """Tasks/s for ``args.tasks`` prepared tasks run by a warm local runner from N threads."""
    runner = NotebookRunner(place.config, pool_size=workers).start()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="bench-local") as pool:
            warm = prepare(runner.backend, workers, "bench-warm")
            check_completed([t.record for t in pool.map(runner.run_prepared, warm)])
            records = prepare(runner.backend, args.tasks, "bench-throughput")
            settle(args.settle)
            began = time.time()
            futures = [pool.submit(runner.run_prepared, record) for record in records]
            try:
                ended = [future.result(timeout=args.timeout).record for future in futures]
            finally:
                for future in futures:
                    future.cancel()
        check_completed(ended)
        return _rate(len(records), began, ended)
    finally:
        runner.close()
        runner.backend.close()


def _rate(count: int, began: float, ended: Sequence[TaskRecord]) -> float:
    last = max(record.completed or 0.0 for record in ended)
    return count / (last - began)


# -- the run ---------------------------------------------------------------------------------


class Results:
    """Values per key over the rounds, and the first error of each key."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], list[float]] = {}
        self.errors: dict[tuple[str, ...], str] = {}

    def measure(self, key: tuple[str, ...], action: Callable[[], float]) -> float | None:
        try:
            value = action()
        except Exception as exc:
            self.failed(key, exc)
            return None
        self.values.setdefault(key, []).append(value)
        return value

    def failed(self, key: tuple[str, ...], exc: Exception) -> None:
        text = str(exc) if isinstance(exc, BenchFailure) else _error_text(exc)
        self.errors.setdefault(key, text)
        print(f"  {' '.join(key)}: FAILED: {text}", file=sys.stderr)

    def median(self, key: tuple[str, ...]) -> float | None:
        values = self.values.get(key)
        return statistics.median(values) if values else None


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def p90(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _interrupt_on_sigterm() -> None:
    """SIGTERM to this script unwinds like Ctrl-C, so agents and databases are cleaned up."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (default 3)")
    parser.add_argument("--tasks", type=int, default=40, help="tasks per throughput run")
    parser.add_argument(
        "--latency-samples", type=int, default=20, help="tasks enqueued one at a time"
    )
    parser.add_argument(
        "--agents",
        default="1,2,4",
        help="agent counts (and local pool sizes) for the throughput runs, comma-separated",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=1.0,
        help="seconds the agent idles before each latency sample is enqueued",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between warm-up and a throughput run (pools replace used kernels)",
    )
    parser.add_argument("--only", choices=("latency", "throughput"))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV),
        help=f"PostgreSQL server to create databases on (default: ${POSTGRES_ENV})",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up on one wait (agents listed, tasks ended) after this many seconds",
    )
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.agents.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        parser.error("--agents takes counts of 1 or more, e.g. 1,2,4")
    _interrupt_on_sigterm()
    os.environ.setdefault("NBFORMAT_VALIDATOR", "fastjsonschema")  # as the runner does

    kinds = [] if args.no_sqlite else ["sqlite"]
    notes: list[str] = []
    if not args.postgres_url:
        notes.append(
            "postgresql: skipped (no URL: pass --postgres-url or set "
            f"{POSTGRES_ENV}; `bash .ci/postgres` starts a throwaway server and prints one)"
        )
    elif problem := postgres_problem(args.postgres_url):
        notes.append(f"postgresql: skipped (the server cannot be used: {problem})")
    else:
        kinds.append("postgresql")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not kinds:
        print("nothing to measure")
        for note in notes:
            print(f"note: {note}")
        return 1

    load_before = os.getloadavg()[0]
    began = time.monotonic()
    latency: dict[str, Latency] = {}
    results = Results()
    contenders = [(mode, n) for n in counts for mode in ("agents", "local")]
    with tempfile.TemporaryDirectory(prefix="cnb-bench-queue-") as folder:
        stores = Stores(Path(folder), args.postgres_url)
        if args.only != "throughput":
            for kind in kinds:
                with stores.fresh(kind) as place:
                    try:
                        latency[kind] = measure_latency(place, args.latency_samples, args)
                    except Exception as exc:
                        results.failed((kind, "latency"), exc)
        if args.only != "latency":
            for round_index in range(args.rounds):
                turn = round_index * len(contenders) // max(args.rounds, 1)
                order = contenders[turn:] + contenders[:turn]
                for kind in kinds if round_index % 2 == 0 else kinds[::-1]:
                    line = []
                    for mode, n in order:
                        with stores.fresh(kind) as place:
                            action = (
                                (lambda p=place, n=n: throughput_agents(p, n, args))
                                if mode == "agents"
                                else (lambda p=place, n=n: throughput_local(p, n, args))
                            )
                            rate = results.measure((kind, mode, str(n)), action)
                        line.append(f"{mode}-{n} " + ("-" if rate is None else f"{rate:.2f}/s"))
                    print(f"round {round_index + 1} {kind}: {', '.join(line)}", file=sys.stderr)

    notes.append(
        f"took {time.monotonic() - began:.0f} s; load average (1 min) {load_before:.2f} at the "
        f"start, {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} cores"
    )
    print_tables(args, kinds, counts, latency, results, notes)
    return 1 if results.errors else 0


def print_tables(
    args: argparse.Namespace,
    kinds: Sequence[str],
    counts: Sequence[int],
    latency: dict[str, Latency],
    results: Results,
    notes: Sequence[str],
) -> None:
    if args.only != "throughput":
        print(
            f"dequeue latency: 1 warm idle agent (1 worker), {args.latency_samples} trivial "
            f"tasks enqueued one at a time, {args.gap:g} s apart; seconds from enqueue"
        )
        print(f"{'store':11} {'until':22} {'median':>7} {'p90':>7}  goal")
        for kind in kinds:
            found = latency.get(kind)
            if found is None:
                print(f"{kind:11} failed ({results.errors.get((kind, 'latency'), 'no run')})")
                continue
            rows = (
                ("started (agent runs)", found.started, True),
                ("first cell_started", found.first_cell, False),
                ("completed", found.completed, False),
                ("[enqueue() call]", found.call, False),
            )
            for label, values, judged in rows:
                median = statistics.median(values)
                goal = ""
                if judged:
                    met = "met" if median <= LATENCY_GOAL else "not met"
                    goal = f"<= {LATENCY_GOAL:g} s ({met})"
                print(f"{kind:11} {label:22} {median:7.3f} {p90(values):7.3f}  {goal}".rstrip())
        print()
    if args.only != "latency":
        print(
            f"throughput: {args.tasks} trivial tasks enqueued at once, {args.rounds} rounds, "
            "medians; agents = separate processes with 1 worker each; local = "
            "NotebookRunner(pool_size=N) in this process, N threads"
        )
        print(
            f"{'store':11} {'N':>2} {'agents tasks/s':>15} {'local tasks/s':>14} "
            f"{'agents/local':>13}"
        )
        for kind in kinds:
            for n in counts:
                agents = results.median((kind, "agents", str(n)))
                local = results.median((kind, "local", str(n)))
                ratio = f"{agents / local:.2f}x" if agents and local else "-"
                print(
                    f"{kind:11} {n:>2} {_rate_text(agents):>15} {_rate_text(local):>14} {ratio:>13}"
                )
                for mode in ("agents", "local"):
                    error = results.errors.get((kind, mode, str(n)))
                    if error:
                        print(f"{'':14} {mode} failed: {error}")
    for note in notes:
        print(f"note: {note}")


def _rate_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the agents were stopped and the databases dropped on the way
        print("interrupted", file=sys.stderr)
        sys.exit(130)

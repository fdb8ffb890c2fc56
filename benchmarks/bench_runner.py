"""Ten trivial notebooks one after another: clearnb's runner against papermill.

Both run the same notebook with the same parameter, in this one process, alternating
rounds so that machine noise hits both alike. Printed per tool: the median seconds per
notebook over the rounds (a round's wall time for all notebooks / their number), and the
ratio clearnb / papermill. clearnb's time includes creating the runner and its kernel
pool from cold, and storing each run (task record, executed notebook artifact, events).

    python benchmarks/bench_runner.py [--notebooks 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import papermill

from clearnb.config import Config
from clearnb.execution.runner import NotebookRunner

TRIVIAL = Path(__file__).parent / "trivial.ipynb"


def run_papermill(count: int, out_dir: Path) -> float:
    """Seconds for ``count`` papermill runs of the trivial notebook."""
    began = time.perf_counter()
    for i in range(count):
        papermill.execute_notebook(
            str(TRIVIAL), str(out_dir / f"pm-{i}.ipynb"), parameters={"x": i}, progress_bar=False
        )
    return time.perf_counter() - began


def run_clearnb(count: int, home: Path, pool_size: int) -> float:
    """Seconds for ``count`` clearnb runs, runner created (cold) inside the timing."""
    began = time.perf_counter()
    with NotebookRunner(Config.at(home), pool_size=pool_size) as runner:
        for i in range(count):
            task = runner.execute(TRIVIAL, {"x": i}, project_name="bench", task_name="trivial")
            if task.status != "completed":
                raise RuntimeError(f"benchmark run failed: {task.error}")
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=2)
    args = parser.parse_args(argv)
    logging.getLogger("papermill").setLevel(logging.WARNING)
    per_notebook: dict[str, list[float]] = {"papermill": [], "clearnb": []}
    with tempfile.TemporaryDirectory(prefix="cnb-bench-") as folder:
        root = Path(folder)
        run_papermill(1, root)  # warm the file cache and imports for both
        for round_index in range(args.rounds):
            home = root / f"home-{round_index}"
            order = ("papermill", "clearnb") if round_index % 2 == 0 else ("clearnb", "papermill")
            for tool in order:
                if tool == "papermill":
                    seconds = run_papermill(args.notebooks, root)
                else:
                    seconds = run_clearnb(args.notebooks, home, args.pool_size)
                per_notebook[tool].append(seconds / args.notebooks)
            print(
                f"round {round_index + 1}: papermill {per_notebook['papermill'][-1]:.3f} s/nb, "
                f"clearnb {per_notebook['clearnb'][-1]:.3f} s/nb",
                file=sys.stderr,
            )
    pm = statistics.median(per_notebook["papermill"])
    cn = statistics.median(per_notebook["clearnb"])
    print(f"{args.notebooks} trivial notebooks one after another, {args.rounds} rounds (medians)")
    print(f"{'tool':12} {'s/notebook':>11}")
    print(f"{'papermill':12} {pm:11.3f}")
    print(f"{'clearnb':12} {cn:11.3f}")
    print(f"ratio clearnb/papermill: {cn / pm:.2f}x  (goal <= 0.30x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs a pipeline of recorded steps in a process of its own, for tests that kill it or run
many at once: ``python -m tests.pipeline_process SIDE_FILE [--resume ID] [--shape ...]``.

Prints one JSON line with the pipeline's task id as soon as it exists, and one with the
final status and every step's status and task when the run is over. ``--hold s2,s3``
holds those steps, once started, until the file ``SIDE_FILE.release`` exists (see
:func:`release_file`): a test kills or inspects the run while they are held.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from clearnb import PipelineController
from tests.helpers import NOTEBOOKS

STEP = str(NOTEBOOKS / "pipeline" / "recorded_step.ipynb")

SHAPES: dict[str, dict[str, list[str]]] = {
    "diamond": {"s1": [], "s2": ["s1"], "s3": ["s1"], "s4": ["s2", "s3"], "s5": ["s4"]},
    "fan": {
        "s00": [],
        **{f"s{index:02d}": ["s00"] for index in range(1, 9)},
        "s09": [f"s{index:02d}" for index in range(1, 9)],
    },
}
"""Each step and its parents."""


def release_file(side_file: str) -> str:
    """The file whose creation releases the held steps of a run noting into ``side_file``."""
    return f"{side_file}.release"


def build(
    shape: str,
    side_file: str,
    seconds: float,
    max_workers: int,
    name: str,
    hold: Sequence[str] = (),
) -> PipelineController:
    """A pipeline of recorded steps in ``shape``; each step reads its parents' ``out``.
    The steps in ``hold`` wait, once started, for :func:`release_file`."""
    pipe = PipelineController(name=name, project="reliability", max_workers=max_workers)
    for step, parents in SHAPES[shape].items():
        overrides: dict[str, object] = {
            "General/step": step,
            "General/inputs": ",".join("${" + parent + ".id}" for parent in parents),
            "General/side_file": side_file,
            "General/seconds": seconds,
        }
        if step in hold:
            overrides["General/hold_file"] = release_file(side_file)
        pipe.add_step(step, notebook=STEP, parents=parents, parameter_override=overrides)
    return pipe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("side_file")
    parser.add_argument("--resume", default="")
    parser.add_argument("--shape", default="diamond", choices=sorted(SHAPES))
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--name", default="crash test")
    parser.add_argument("--hold", default="", help="steps held until SIDE_FILE.release exists")
    options = parser.parse_args(argv)
    pipe = build(
        options.shape,
        options.side_file,
        options.seconds,
        options.max_workers,
        options.name,
        hold=[step for step in options.hold.split(",") if step],
    )
    print(json.dumps({"pipeline": pipe.id}), flush=True)
    pipe.start(resume=options.resume or False)
    pipe.wait()
    pipe.stop()
    nodes = {
        name: {"status": node.status, "executed": node.executed}
        for name, node in pipe.get_pipeline_dag().items()
    }
    print(json.dumps({"status": pipe.status, "nodes": nodes}), flush=True)
    return 0 if pipe.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())

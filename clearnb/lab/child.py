"""A run started from JupyterLab, in a child process of the Jupyter server.

``python -m clearnb.lab.child task TASK_ID`` runs a prepared notebook task;
``python -m clearnb.lab.child pipeline RUN_ID ACTION`` starts a new run of a stored
pipeline run (``retry_failed``, ``run_again`` or ``force``), first printing
``run NEW_RUN_ID`` (or ``error REASON``) on a line of its own. SIGTERM, or the server's
end, stops the run, which is then recorded aborted.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
ABORT_POLL = 0.5
"""Seconds between two looks for an abort asked for in the store."""


def end_with_parent() -> None:
    """Have Linux send SIGTERM to this process when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def on_terminate(stop: Callable[[str], Any]) -> None:
    """Call ``stop(reason)`` when SIGTERM arrives."""

    def handler(signum: int, frame: Any) -> None:
        del signum, frame
        stop("the Jupyter server that started the run stopped")

    signal.signal(signal.SIGTERM, handler)


def run_task(task_id: str) -> int:
    """Run the prepared task ``task_id``; 0 if it completed."""
    from clearnb.execution.runner import NotebookRunner, RunHandle

    handle = RunHandle()
    on_terminate(handle.abort)
    with NotebookRunner(pool_size=1) as runner:
        done = threading.Event()
        watcher = threading.Thread(
            target=watch_abort, args=(runner.backend.store, task_id, handle, done), daemon=True
        )
        watcher.start()
        try:
            task = runner.execute(task=task_id, handle=handle)
        finally:
            done.set()
    return 0 if task.status == "completed" else 1


def watch_abort(store: Any, task_id: str, handle: Any, done: threading.Event) -> None:
    """Stop the run when someone asks for it in the store (the queues panel's Abort)."""
    while not done.wait(ABORT_POLL):
        try:
            reason = store.get_task(task_id).abort_requested
        except Exception:  # the store is busy for a moment: look again
            continue
        if reason:
            handle.abort(reason)
            return


def run_pipeline(run_id: str, action: str) -> int:
    """Start a new run of the pipeline run ``run_id``; 0 if it completed."""
    from clearnb.pipeline.controller import PipelineController

    try:
        pipe = PipelineController.from_run(run_id)
        if action == "retry_failed":
            pipe.start(resume=run_id)
        else:
            pipe.start(force=action == "force")
    except Exception as exc:
        say(f"error {' '.join(str(exc).split())}")
        return 1
    say(f"run {pipe.id}")
    on_terminate(pipe.abort)
    pipe.wait()
    pipe.stop()
    return 0 if pipe.is_successful() else 1


def say(line: str) -> None:
    """Tell the server one line, then send nothing more its way."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(arguments: Sequence[str]) -> int:
    """Run what ``arguments`` name (see the module's description)."""
    end_with_parent()
    if len(arguments) == 2 and arguments[0] == "task":
        return run_task(arguments[1])
    if len(arguments) == 3 and arguments[0] == "pipeline":
        return run_pipeline(arguments[1], arguments[2])
    print(
        "usage: python -m clearnb.lab.child task TASK_ID | pipeline RUN_ID ACTION", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

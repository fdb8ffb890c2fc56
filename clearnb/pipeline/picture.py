"""The stored picture of a pipeline's DAG, drawn in a separate process.

matplotlib takes about half a second to import and a tenth to draw; done in the process
that runs the pipeline it would hold the interpreter while steps wait. So the controller
asks a short-lived process (``python -m clearnb.pipeline.picture TASK_ID``) to read the
pipeline's run document from the store and save the picture as the artifact ``pipeline_dag``;
it runs on another core, one at a time, and never delays a step.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping

from clearnb.artifacts.storage import PIPELINE_PICTURE
from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.store.pipelines import run_document

DAG_ARTIFACT = PIPELINE_PICTURE


def render(task_id: str, config: Config | None = None) -> None:
    """Draw the pipeline stored with task ``task_id`` and save it as its DAG artifact."""
    from clearnb.plot import plot_pipeline

    backend = Backend.for_config(config or Config.from_env())
    state = run_document(backend.store.get_task(task_id)) or {}
    nodes = state.get("nodes") or {}
    version = f" v{state['version']}" if state.get("version") else ""
    title = f"{state.get('project', '')} / {state.get('name', '')}{version} — {state.get('status')}"
    figure = plot_pipeline(nodes, state.get("order") or list(nodes), title=title)
    stored = backend.artifacts.save(task_id, DAG_ARTIFACT, figure, metadata={"figure": True})
    backend.store.put_artifact(stored)


PICTURE_WAIT = 60.0
"""Seconds the end of a script (or ``stop()``) waits for the final picture to be stored."""


class PictureRenderer:
    """Redraws a pipeline's picture in a child process, at most one at a time (coalesced)."""

    def __init__(self, task_id: str, environ: Mapping[str, str]) -> None:
        self.task_id = task_id
        self.environ = dict(environ)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._wanted = False
        self._at_exit = False

    def request(self) -> None:
        """Draw the current state soon (now if no drawing runs, else right after it)."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._wanted = True
                return
            self._wanted = False
            if not self._at_exit:  # the script may end right after the run: finish first
                atexit.register(self.close)
                self._at_exit = True
            self._process = subprocess.Popen(
                [sys.executable, "-m", "clearnb.pipeline.picture", self.task_id],
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def poll(self) -> None:
        """Start the drawing that was asked for while another one ran, once that one ends."""
        with self._lock:
            busy = self._process is not None and self._process.poll() is None
            wanted = self._wanted
        if wanted and not busy:
            self.request()

    def close(self, timeout: float = PICTURE_WAIT) -> bool:
        """Let the drawings asked for finish (at most ``timeout`` seconds), then stop any
        still running; no drawing process outlives this. True if all finished."""
        done = self.wait(timeout)
        with self._lock:
            process, self._wanted = self._process, False
            if self._at_exit:
                atexit.unregister(self.close)
                self._at_exit = False
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        return done

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until every drawing asked for is stored; True if done in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            with self._lock:
                process, wanted = self._process, self._wanted
            if not wanted and (process is None or process.poll() is not None):
                return True
            time.sleep(0.05)
        return False


PLOT_INTERVAL = 1.0
"""Least seconds between two redraws of the stored DAG picture during a run."""
FIRST_PICTURE_AFTER = 3.0
"""Runs shorter than this get only their final picture."""


class PictureLoop:
    """While a run goes on, redraws its stored picture after status changes (coalesced);
    short runs only get the final picture."""

    def __init__(self, renderer: PictureRenderer, elapsed: Callable[[], float]) -> None:
        self.renderer = renderer
        self.elapsed = elapsed
        self._wanted = threading.Event()
        self._over = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline plot", daemon=True)

    def start(self) -> None:
        """Start redrawing."""
        self._thread.start()

    def want(self) -> None:
        """Something changed: redraw soon."""
        self._wanted.set()

    def finish(self) -> None:
        """The run is over: stop the loop and draw the final picture."""
        self._over.set()
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join()
        self.renderer.request()

    def _loop(self) -> None:
        while not self._over.is_set():
            self._wanted.wait(timeout=0.5)
            if self._over.is_set():
                return
            self.renderer.poll()
            early = FIRST_PICTURE_AFTER - self.elapsed()
            if early > 0:
                self._over.wait(early)
            elif self._wanted.is_set():
                self._wanted.clear()
                self.renderer.request()
                self._over.wait(PLOT_INTERVAL)


if __name__ == "__main__":
    render(sys.argv[1])

"""Several runs of decorated pipelines launched from one process (ClearML's
``multi_instance_support``).

With ``multi_instance_support="parallel"`` each call of the pipeline function starts the
run on a thread of its own and returns None at once; :meth:`LaunchedPipelines.wait`
(``PipelineDecorator.wait_for_multi_pipelines()``) waits for every run launched so far
and gives their results in launch order. As in ClearML, a run that failed has no result
in that list (it is named in a warning instead). With ``True`` each call runs the pipeline
on its own thread and returns its result, or None if it failed. Either way each run is
recorded in a controller Task of its own, and a script does not exit before its runs end
(the threads are not daemons).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Launch:
    """One run of a pipeline function on its own thread."""

    name: str
    thread: threading.Thread | None = None
    result: Any = None
    error: BaseException | None = None

    def work(self, call: Callable[[], Any]) -> None:
        """Run ``call``, keeping its result or what it raised."""
        try:
            self.result = call()
        except BaseException as exc:  # the run's failure is reported where it is waited for
            self.error = exc

    def start(self, call: Callable[[], Any]) -> Launch:
        """Run ``call`` on a new (non-daemon) thread."""
        self.thread = threading.Thread(
            target=self.work, args=(call,), name=f"pipeline {self.name}", daemon=False
        )
        self.thread.start()
        return self

    def join(self) -> None:
        """Wait for the run to end."""
        if self.thread is not None:
            self.thread.join()

    def failed(self) -> bool:
        """True if the run raised; it is said in a warning (and logged)."""
        if self.error is None:
            return False
        message = (
            f"pipeline {self.name!r} launched with multi_instance_support failed, so it has "
            f"no result: {type(self.error).__name__}: {self.error}"
        )
        log.warning("%s", message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return True


class LaunchedPipelines:
    """The runs launched in the background in this process, until they are waited for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._launched: list[Launch] = []

    def launch(self, name: str, call: Callable[[], Any]) -> None:
        """Start ``call`` (one run of pipeline ``name``) in the background."""
        with self._lock:
            self._launched.append(Launch(name).start(call))

    def run(self, name: str, call: Callable[[], Any]) -> Any:
        """Run ``call`` on a thread of its own and return its result (None if it failed)."""
        launch = Launch(name).start(call)
        launch.join()
        return None if launch.failed() else launch.result

    def wait(self) -> list[Any]:
        """Wait for every run launched so far; their results in launch order (a failed
        run has none). The runs waited for are forgotten."""
        with self._lock:
            launched, self._launched = self._launched, []
        results = []
        for launch in launched:
            launch.join()
            if not launch.failed():
                results.append(launch.result)
        return results

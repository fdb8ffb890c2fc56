"""Steps run on this machine, on a pool of kernels started ahead of need."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from clearnb.config import Config
from clearnb.executors.base import StepRequest

if TYPE_CHECKING:
    from clearnb.execution.runner import NotebookRunner
    from clearnb.task import Task


class LocalExecutor:
    """Runs steps with one :class:`~clearnb.execution.runner.NotebookRunner`, started on
    first need (a run whose steps are all cached starts no kernel)."""

    def __init__(self, config: Config, pool_size: int) -> None:
        self.config = config
        self.pool_size = max(1, pool_size)
        self._runner: NotebookRunner | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def started(self) -> bool:
        """True once kernels were started for this executor."""
        return self._runner is not None

    def warm(self) -> None:
        """Start the kernels now, so that the first steps do not wait for one."""
        self._runner_now()

    def _runner_now(self) -> NotebookRunner:
        from clearnb.execution.runner import NotebookRunner

        with self._lock:
            if self._closed:
                raise RuntimeError("the local executor is closed")
            if self._runner is None:
                self._runner = NotebookRunner(self.config, pool_size=self.pool_size).start()
            return self._runner

    def execute(self, request: StepRequest) -> Task:
        """Run ``request`` on a kernel of the pool; return its Task once it has ended."""
        return self._runner_now().execute(
            request.notebook,
            request.overrides,
            task=request.template,
            project_name=request.project_name,
            task_name=request.task_name,
            time_limit=request.time_limit,
            memory_limit=request.memory_limit,
            tags=request.tags,
            parent=request.parent,
            on_event=request.on_event,
            handle=request.handle,
            runtime=request.runtime,
            cache_key=request.cache_key,
            strict=request.strict,
        )

    def close(self) -> None:
        """Stop every kernel of the pool."""
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

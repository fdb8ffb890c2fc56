"""What the runner tells the engine about one run, and how a run ends early.

Kept apart from the engine so that importing the runner (and the pipeline controller)
does not import papermill and nbclient until a notebook actually runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clearnb.execution.limits import DEFAULT_OUTPUT_LIMIT

if TYPE_CHECKING:
    from clearnb.execution.kernels import KernelPool, PooledKernel

KERNEL_DIED = "DeadKernelError"
TIME_LIMIT = "TimeLimitExceeded"
MEMORY_LIMIT = "MemoryLimitExceeded"
ABORTED = "RunAborted"

Emit = Callable[..., None]


def _no_emit(kind: str, **payload: Any) -> None:
    return None


@dataclass
class RunContext:
    """What the runner tells the engine about one run."""

    pool: KernelPool | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables set in the kernel before the first cell runs."""
    cwd: str | None = None
    """Working folder of the kernel (the process running clearnb never changes folder);
    None: the caller's working folder, as with papermill's own engine."""
    script: str | None = None
    """The Python script the notebook was made from, if any: the kernel then runs it as
    ``python script`` would, with ``sys.argv == [script]``, ``__file__ == script`` and the
    script's folder first on ``sys.path``."""
    time_limit: float | None = None
    """Seconds the whole run may take; then the kernel is killed and the run fails."""
    memory_limit: int | None = None
    """Bytes the kernel's processes may hold (resident, added up); then it is killed."""
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    """Bytes of output the executed notebook keeps (:mod:`clearnb.execution.outputs`)."""
    raise_dead_kernel: bool = False
    """Raise nbclient's ``DeadKernelError`` when the kernel dies, as papermill's own engine
    does (for papermill's users); otherwise the death is only the running cell's error."""
    emit: Emit = _no_emit
    """``emit(kind, **payload)`` for every progress event."""
    kernel: PooledKernel | None = None
    """Set by the engine: the kernel the run got."""
    failure: str | None = None
    """Set by the engine: ``kernel died``, ``time limit``, ``memory limit`` or ``aborted``."""
    detail: str | None = None
    """Set by the engine with a failure: how the kernel ended (``killed by signal SIGKILL``)
    or the memory it held (``412 MB``)."""
    cell_count: int | None = None
    """Set by the engine: how many cells the executed notebook has."""
    notebook_code_cells: list[int] | None = None
    """Set by the engine: the indices of the executed notebook's code cells that the
    notebook itself has (the injected-parameters cell left out), to name a cell as the
    author counts it."""
    memory_peak: int | None = None
    """Set by the engine when a memory limit is watched: the most the kernel held, in bytes."""
    abort_reason: str | None = None
    """Set by :meth:`abort`: why the run is to stop."""
    _stop: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def abort(self, reason: str = "the run was stopped") -> None:
        """Stop the run from any thread: its kernel is killed and the run ends ``aborted``."""
        self.abort_reason = reason
        if self._stop is not None:
            loop, waiter = self._stop
            loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

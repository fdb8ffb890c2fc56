"""clearnb's papermill engine: runs a parameterized notebook on a kernel from the pool.

papermill does the notebook work (injected parameters, per-cell metadata, the error
banner in the output notebook); this engine, registered under papermill's
``papermill.engine`` entry point as ``clearnb``, only changes where the kernel comes from
and adds what papermill lacks: events per cell, a time limit for the whole run, and a dead
kernel or an expired time limit recorded as an error output of the cell that was running,
so papermill marks it like any raising cell.

Used directly by papermill (``papermill -e clearnb in.ipynb out.ipynb``) it starts its own
kernel; :class:`~clearnb.execution.runner.NotebookRunner` passes ``run=RunContext(...)``
with a kernel pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nbformat
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import Engine, NotebookExecutionManager

from clearnb.execution import events
from clearnb.execution.context import (
    ABORTED,
    KERNEL_DIED,
    TIME_LIMIT,
    Emit,
    RunContext,
)
from clearnb.execution.kernels import KernelPool, connect_client, wait_for_reply

log = logging.getLogger(__name__)

SAVE_INTERVAL = 0.5
"""Seconds between two writes of the output notebook while a run goes on."""


def _cancel_leftovers(client: Any) -> None:
    """Cancel helper tasks nbclient leaves behind when a cell is interrupted."""
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_locals.get("self") is client and not task.done():
            task.cancel()


class _EventedExecutionManager(NotebookExecutionManager):  # type: ignore[misc]
    """papermill's execution manager, emitting cell events as it updates cell metadata."""

    def __init__(self, nb: NotebookNode, emit: Emit, **kwargs: Any) -> None:
        self._last_write = 0.0
        self._force = True
        super().__init__(nb, **kwargs)
        self._emit = emit
        self.current_index: int | None = None

    def save(self, **kwargs: Any) -> None:
        """Write the output notebook at most every ``SAVE_INTERVAL`` seconds during a run.

        papermill writes it at every cell start and end; for many short cells that is
        most of the run's time. The first and the final write always happen.
        """
        now = time.monotonic()
        if self._force or now - self._last_write >= SAVE_INTERVAL:
            self._last_write = now
            super().save(**kwargs)

    def notebook_complete(self, **kwargs: Any) -> None:
        self._force = True
        super().notebook_complete(**kwargs)

    def notebook_start(self, **kwargs: Any) -> None:
        super().notebook_start(**kwargs)
        self._force = False

    def cell_start(self, cell: NotebookNode, cell_index: int | None = None, **kwargs: Any) -> None:
        super().cell_start(cell, cell_index, **kwargs)
        self.current_index = cell_index
        self._emit(
            events.CELL_STARTED,
            index=cell_index,
            count=len(self.nb.cells),
            cell_type=cell.get("cell_type"),
        )

    def cell_complete(
        self, cell: NotebookNode, cell_index: int | None = None, **kwargs: Any
    ) -> None:
        super().cell_complete(cell, cell_index, **kwargs)
        meta = cell.metadata.papermill
        self._emit(
            events.CELL_FINISHED,
            index=cell_index,
            count=len(self.nb.cells),
            status=meta.get("status"),
            duration=meta.get("duration"),
        )


class ClearnbEngine(Engine):  # type: ignore[misc]
    """papermill engine executing on a pre-started kernel, with events and a time limit."""

    @classmethod
    def execute_notebook(
        cls,
        nb: NotebookNode,
        kernel_name: str,
        output_path: str | None = None,
        progress_bar: bool = False,
        log_output: bool = False,
        autosave_cell_every: int = 30,
        run: RunContext | None = None,
        **kwargs: Any,
    ) -> NotebookNode:
        """Execute ``nb``: papermill's lifecycle with our evented execution manager."""
        context = run if run is not None else RunContext()
        nb_man = _EventedExecutionManager(
            nb,
            context.emit,
            output_path=output_path,
            progress_bar=progress_bar,
            log_output=log_output,
            autosave_cell_every=autosave_cell_every,
        )
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(
                nb_man, kernel_name, log_output=log_output, run=context, **kwargs
            )
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        executed: NotebookNode = nb_man.nb
        return executed

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: _EventedExecutionManager,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: float = 60,
        execution_timeout: float | None = None,
        run: RunContext | None = None,
        **kwargs: Any,
    ) -> NotebookNode:
        """Run every cell of ``nb_man.nb`` on a pooled kernel (papermill's engine hook)."""
        context = run if run is not None else RunContext()
        own_pool = context.pool is None
        pool = context.pool or KernelPool(size=0, prestart=False, kernel_name=kernel_name)
        try:
            future = pool.run(
                cls._execute(
                    nb_man,
                    kernel_name,
                    pool,
                    context,
                    log_output=log_output,
                    stdout_file=stdout_file,
                    stderr_file=stderr_file,
                    start_timeout=start_timeout,
                    execution_timeout=execution_timeout,
                )
            )
            try:
                return future.result()
            except BaseException:
                future.cancel()
                raise
        finally:
            if own_pool:
                pool.close()

    @classmethod
    async def _execute(
        cls,
        nb_man: _EventedExecutionManager,
        kernel_name: str,
        pool: KernelPool,
        context: RunContext,
        *,
        log_output: bool,
        stdout_file: Any,
        stderr_file: Any,
        start_timeout: float,
        execution_timeout: float | None,
    ) -> NotebookNode:
        kernel = await pool.acquire_async(kernel_name, timeout=start_timeout)
        context.kernel = kernel
        released = False
        client = PapermillNotebookClient(
            nb_man,
            km=kernel.manager,
            kernel_name=kernel_name,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            log=log,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            resources={"metadata": {"path": context.cwd}} if context.cwd else {},
        )
        client.reset_execution_trackers()
        kc = kernel.connected
        kernel.connected = None
        try:
            if kc is None:
                kc = kernel.client()
                kc.start_channels()
                await connect_client(kc, start_timeout, kernel)
            kc.allow_stdin = False
            client.kc = kc
            await cls._prepare_kernel(client, context, start_timeout)
            stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            context._stop = (asyncio.get_running_loop(), stop)
            if context.abort_reason is not None:
                stop.set_result(None)
            cells = asyncio.ensure_future(cls._execute_cells(client, nb_man))
            await asyncio.wait(
                {cells, stop}, timeout=context.time_limit, return_when=asyncio.FIRST_COMPLETED
            )
            if not cells.done():
                aborted = stop.done()
                context.failure = "aborted" if aborted else "time limit"
                await asyncio.wrap_future(pool.release(kernel))
                released = True
                cells.cancel()
                with contextlib.suppress(BaseException):
                    await cells
                if aborted:
                    cls._mark_failed_cell(
                        nb_man,
                        ABORTED,
                        f"The run was aborted while this cell was running ({context.abort_reason});"
                        " the kernel was stopped.",
                    )
                else:
                    cls._mark_failed_cell(
                        nb_man,
                        TIME_LIMIT,
                        f"The run exceeded its time limit of {context.time_limit:g} s while "
                        "this cell was running; the kernel was stopped.",
                    )
            else:
                try:
                    cells.result()
                except DeadKernelError:
                    context.failure = "kernel died"
                    cls._mark_failed_cell(
                        nb_man,
                        KERNEL_DIED,
                        "The kernel died while this cell was running (the process exited "
                        "or was killed, e.g. by os._exit, a crash or running out of memory).",
                    )
            if context.failure is None:
                with contextlib.suppress(Exception):
                    info = await wait_for_reply(kc, kc.kernel_info(), 5)
                    nb_man.nb.metadata["language_info"] = info["content"]["language_info"]
                client.set_widgets_metadata()
        finally:
            context._stop = None
            _cancel_leftovers(client)
            if kc is not None:
                with contextlib.suppress(Exception):
                    kc.stop_channels()
            if not released:
                pool.release(kernel)
        executed: NotebookNode = nb_man.nb
        return executed

    @staticmethod
    async def _prepare_kernel(
        client: PapermillNotebookClient, context: RunContext, timeout: float
    ) -> None:
        """Set the run's environment variables and working folder inside the kernel."""
        if not context.env and not context.cwd:
            return
        lines = ["import os as _cnb_os"]
        if context.env:
            lines.append(f"_cnb_os.environ.update({dict(context.env)!r})")
        if context.cwd:
            lines.append(f"_cnb_os.chdir({context.cwd!r})")
            lines.append("import sys as _cnb_sys")
            lines.append(f"_cnb_sys.path.insert(0, {context.cwd!r})")
            lines.append("del _cnb_sys")
        lines.append("del _cnb_os")
        msg_id = client.kc.execute("\n".join(lines), silent=True, store_history=False)
        reply = await wait_for_reply(client.kc, msg_id, timeout)
        if reply["content"].get("status") != "ok":
            content = reply["content"]
            raise RuntimeError(
                f"could not prepare the kernel: {content.get('ename')}: {content.get('evalue')}"
            )

    @staticmethod
    async def _execute_cells(
        client: PapermillNotebookClient, nb_man: _EventedExecutionManager
    ) -> None:
        """papermill's cell loop, async: stop at the first cell that raises."""
        for index, cell in enumerate(nb_man.nb.cells):
            try:
                nb_man.cell_start(cell, index)
                await client.async_execute_cell(cell, index)
            except CellExecutionError as exc:
                nb_man.cell_exception(nb_man.nb.cells[index], cell_index=index, exception=exc)
                break
            finally:
                nb_man.cell_complete(nb_man.nb.cells[index], cell_index=index)

    @staticmethod
    def _mark_failed_cell(nb_man: _EventedExecutionManager, ename: str, evalue: str) -> None:
        """Record ``ename: evalue`` as the error output of the cell that was running."""
        index = nb_man.current_index
        if index is None:
            index = next(
                (i for i, c in enumerate(nb_man.nb.cells) if c.get("cell_type") == "code"), 0
            )
        if not nb_man.nb.cells:
            return
        cell = nb_man.nb.cells[index]
        if cell.get("cell_type") != "code":
            return
        cell.setdefault("outputs", []).append(
            nbformat.v4.new_output(  # type: ignore[no-untyped-call]
                "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
            )
        )
        meta = cell.metadata.papermill
        meta["exception"] = True
        meta["status"] = NotebookExecutionManager.FAILED
        if meta.get("start_time") and not meta.get("end_time"):
            meta["end_time"] = nb_man.now().isoformat()
        nb_man.nb.metadata.papermill["exception"] = True
        nb_man._force = True
        nb_man.save()

"""clearnb's papermill engine: runs a parameterized notebook on a kernel from the pool.

papermill does the notebook work (injected parameters, per-cell metadata, the error
banner in the output notebook); this engine, registered under papermill's
``papermill.engine`` entry point as ``clearnb``, only changes where the kernel comes from
and adds what papermill lacks: events per cell, a time limit for the whole run, a memory
limit for the kernel's processes, and a dead kernel or an exceeded limit recorded as an
error output of the cell that was running, so papermill marks it like any raising cell.

Used directly by papermill (``papermill -e clearnb in.ipynb out.ipynb``) it starts its own
kernel and behaves as papermill's own engine: the kernel runs in the caller's working folder
(papermill's ``cwd=``), cell outputs go to papermill's logger, extra keyword arguments reach
nbclient's client and a dead kernel raises nbclient's ``DeadKernelError``.
:class:`~clearnb.execution.runner.NotebookRunner` passes ``run=RunContext(...)`` with a
kernel pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import nbformat
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbclient.util import run_hook
from nbformat import NotebookNode
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import Engine, NotebookExecutionManager
from papermill.log import logger as papermill_log
from papermill.utils import merge_kwargs

from clearnb import events
from clearnb.errors import ExecutionError
from clearnb.execution.context import (
    ABORTED,
    KERNEL_DIED,
    MEMORY_LIMIT,
    TIME_LIMIT,
    Emit,
    RunContext,
)
from clearnb.execution.kernels import (
    KernelPool,
    PooledKernel,
    connect_client,
    wait_for_reply,
)
from clearnb.execution.limits import format_size
from clearnb.execution.outputs import BoundedNotebookClient
from clearnb.processes import (
    can_measure_memory,
    descendants,
    kill_tree,
    process_alive,
    resident_bytes,
    snapshot,
    start_time,
)

log = logging.getLogger(__name__)

SAVE_INTERVAL = 0.5
"""Seconds between two writes of the output notebook while a run goes on."""
WATCH_INTERVAL = 0.1
"""Seconds between two looks at a running kernel (is it alive, how much memory it holds)."""
KERNEL_START_OPTIONS = frozenset(
    {"km", "kernel_manager_class", "extra_arguments", "ipython_hist_file", "shutdown_kernel"}
)
"""nbclient options about starting or stopping the kernel: the kernel comes from the pool,
so they cannot apply; a run given one warns and goes on without it."""


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

    def autosave_cell(self) -> None:
        """papermill's save during a long cell, every ``autosave_cell_every`` seconds.

        Not throttled: it has its own interval (``0`` turns it off), as papermill documents.
        """
        forced, self._force = self._force, True
        try:
            super().autosave_cell()
        finally:
            self._force = forced

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
        progress_bar: bool | dict[str, Any] = True,
        log_output: bool = False,
        autosave_cell_every: int = 30,
        run: RunContext | None = None,
        **kwargs: Any,
    ) -> NotebookNode:
        """Execute ``nb``: papermill's lifecycle with our evented execution manager.

        Without ``run`` (papermill calling the engine itself) a dead kernel raises
        ``DeadKernelError``, as on papermill's own engine.
        """
        context = run if run is not None else RunContext(raise_dead_kernel=True)
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
        """Run every cell of ``nb_man.nb`` on a pooled kernel (papermill's engine hook).

        Extra keyword arguments are options of nbclient's client, as on papermill's own
        engine (``timeout=`` is the cell timeout unless ``execution_timeout`` is given).
        """
        context = run if run is not None else RunContext()
        options = cls._client_options(
            kwargs,
            timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=papermill_log,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        # nbclient starts its kernel in resources' metadata path, else where the caller is
        # (papermill changes folder to its ``cwd=`` around the call)
        asked = options.get("resources", {}).get("metadata", {}).get("path")
        cwd = context.cwd or asked or os.getcwd()
        options.setdefault("resources", {"metadata": {"path": cwd}})
        own_pool = context.pool is None
        pool = context.pool or KernelPool(size=0, prestart=False, kernel_name=kernel_name)
        try:
            future = pool.run(
                cls._execute(nb_man, kernel_name, pool, context, options, cwd, start_timeout)
            )
            try:
                return future.result()
            except BaseException:
                future.cancel()
                raise
        finally:
            if own_pool:
                pool.close()

    @staticmethod
    def _client_options(kwargs: dict[str, Any], **engine: Any) -> dict[str, Any]:
        """nbclient's options: the caller's merged with the engine's, as papermill merges them.

        The engine's values win (papermill warns of the overwrite); ``input_path`` and the
        timeouts papermill names differently are dropped, and so are the options about
        starting the kernel (:data:`KERNEL_START_OPTIONS`), with a warning.
        """
        ignored = sorted(KERNEL_START_OPTIONS & kwargs.keys())
        if ignored:
            warnings.warn(
                f"the clearnb engine runs on a pre-started kernel and ignores {ignored}",
                stacklevel=4,
            )
        dropped = {"input_path", "timeout", "startup_timeout", *ignored}
        caller = {key: value for key, value in kwargs.items() if key not in dropped}
        return merge_kwargs(caller, **engine)  # type: ignore[no-any-return]

    @classmethod
    async def _execute(
        cls,
        nb_man: _EventedExecutionManager,
        kernel_name: str,
        pool: KernelPool,
        context: RunContext,
        options: dict[str, Any],
        cwd: str,
        start_timeout: float,
    ) -> NotebookNode:
        kernel = await pool.acquire_async(kernel_name, timeout=start_timeout)
        context.kernel = kernel
        released = False
        client = BoundedNotebookClient(
            nb_man, km=kernel.manager, limit=context.output_limit, **options
        )
        client.reset_execution_trackers()
        context.cell_count = len(nb_man.nb.cells)
        context.notebook_code_cells = [
            index
            for index, cell in enumerate(nb_man.nb.cells)
            if cell.get("cell_type") == "code"
            and "injected-parameters" not in cell.get("metadata", {}).get("tags", [])
        ]
        kc = kernel.connected
        kernel.connected = None
        try:
            if kc is None:
                kc = kernel.client()
                kc.start_channels()
                await connect_client(kc, start_timeout, kernel)
            kc.allow_stdin = False
            client.kc = kc
            if context.memory_limit is not None and (
                kernel.pid is None or not can_measure_memory()
            ):
                raise ExecutionError(
                    "a memory limit needs the kernel's process id and /proc to measure its "
                    "memory (Linux); run this step without memory_limit"
                )
            await cls._prepare_kernel(client, context.env, cwd, start_timeout, context.script)
            await run_hook(client.on_notebook_start, notebook=client.nb)
            client.log.info(f"Executing notebook with kernel: {kernel_name}")
            stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            context._stop = (asyncio.get_running_loop(), stop)
            if context.abort_reason is not None:
                stop.set_result(None)
            cells = asyncio.ensure_future(cls._execute_cells(client, nb_man))
            watch = asyncio.ensure_future(cls._watch(kernel, context))
            waiting: set[asyncio.Future[Any]] = {cells, stop, watch}
            try:
                await asyncio.wait(
                    waiting,
                    timeout=context.time_limit,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                watch.cancel()
            if watch.done() and not watch.cancelled() and watch.exception() is not None:
                cells.cancel()
                with contextlib.suppress(BaseException):
                    await cells
                watch.result()  # raises: the run could not be watched as asked
            ending = watch.result() if watch.done() and not watch.cancelled() else None
            if ending == "memory limit" or not cells.done():
                if ending is None:
                    ending = "aborted" if stop.done() else "time limit"
                context.failure = ending
                if ending == "kernel died":
                    context.detail = await pool.exit_status(kernel)
                await asyncio.wrap_future(pool.release(kernel))
                released = True
                cells.cancel()
                with contextlib.suppress(BaseException):
                    await cells
                cls._mark_failed_cell(nb_man, *cls._explain(context))
            else:
                try:
                    cells.result()
                except DeadKernelError:
                    context.failure = "kernel died"
                    context.detail = await pool.exit_status(kernel)
                    cls._mark_failed_cell(nb_man, *cls._explain(context))
            if context.failure == "kernel died" and context.raise_dead_kernel:
                how = f" ({context.detail})" if context.detail else ""
                raise DeadKernelError(f"Kernel died{how} while running the notebook")
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

    @classmethod
    async def _watch(cls, kernel: PooledKernel, context: RunContext) -> str:
        """Watch the kernel while cells run; return how it stopped running them.

        Every ``WATCH_INTERVAL`` seconds, :meth:`_look` at it. Should looking fail, a run
        without a memory limit goes on (nbclient notices a dead kernel by itself); a run
        with one fails, since its limit could not be kept.
        """
        if kernel.pid is None:  # nothing to watch: nbclient notices a dead kernel by itself
            await asyncio.Event().wait()
        while True:
            try:
                ending = cls._look(kernel, context)
            except Exception as exc:
                if context.memory_limit is not None:
                    raise ExecutionError(
                        f"the memory of the kernel could not be measured: {exc}"
                    ) from exc
                log.warning("could not watch kernel %s", kernel.pid, exc_info=True)
                await asyncio.Event().wait()
            if ending is not None:
                return ending
            await asyncio.sleep(WATCH_INTERVAL)

    @staticmethod
    def _look(kernel: PooledKernel, context: RunContext) -> str | None:
        """One look at the kernel: ``"kernel died"`` if its process is gone, else None.

        The processes below it are noted in ``kernel.seen`` (so that they can be killed
        even if the kernel dies first). With a memory limit, the resident memory of the
        kernel and every process below it is added up; over the limit, they are all killed
        and this returns ``"memory limit"``.
        """
        pid, limit = kernel.pid, context.memory_limit
        assert pid is not None
        if not process_alive(pid):
            return "kernel died"
        below = descendants(pid)
        known, members = kernel.seen, set(below)
        kernel.seen = {p: t for p, t in known.items() if p in members or start_time(p) == t}
        kernel.seen.update(snapshot(p for p in below if p not in known))
        if limit is not None:
            used = sum(resident_bytes(member) for member in (pid, *below))
            context.memory_peak = max(context.memory_peak or 0, used)
            if used > limit:
                kill_tree(pid, kernel.pgid, kernel.seen)
                context.detail = format_size(used)
                return "memory limit"
        return None

    @staticmethod
    def _explain(context: RunContext) -> tuple[str, str]:
        """``(ename, evalue)`` recorded in the cell that was running when the run failed."""
        if context.failure == "aborted":
            return ABORTED, (
                f"The run was aborted while this cell was running ({context.abort_reason}); "
                "the kernel was stopped."
            )
        if context.failure == "time limit":
            return TIME_LIMIT, (
                f"The run exceeded its time limit of {context.time_limit:g} s while this cell "
                "was running; the kernel was stopped."
            )
        if context.failure == "memory limit":
            assert context.memory_limit is not None
            return MEMORY_LIMIT, (
                f"The kernel used {context.detail}, over the memory limit of "
                f"{format_size(context.memory_limit)}, while this cell was running; the "
                "kernel was stopped."
            )
        how = f" ({context.detail})" if context.detail else ""
        return KERNEL_DIED, (
            f"The kernel died{how} while this cell was running: the process exited or was "
            "killed (by os._exit, a crash, a signal, or the system running out of memory)."
        )

    @staticmethod
    async def _prepare_kernel(
        client: PapermillNotebookClient,
        env: Mapping[str, str],
        cwd: str,
        timeout: float,
        script: str | None = None,
    ) -> None:
        """Set the run's environment variables and working folder inside the kernel; for a
        notebook made from ``script``, its ``sys.argv`` and ``__file__`` too, and put
        argparse's recording in place (:func:`clearnb.arguments.install`)."""
        lines = ["import os as _cnb_os"]
        if env:
            lines.append(f"_cnb_os.environ.update({dict(env)!r})")
        lines.append(f"_cnb_os.chdir({cwd!r})")
        lines.append("import sys as _cnb_sys")
        lines.append(f"_cnb_sys.path.insert(0, {cwd!r})")
        if script is not None:  # the kernel's own argv (-f connection.json) would reach argparse
            lines.append(f"_cnb_sys.argv = [{script!r}]")
            lines.append(f"__file__ = {script!r}")
            folder = os.path.dirname(script)
            if folder != cwd:  # python puts the script's folder first, whatever the cwd
                lines.append(f"_cnb_sys.path.insert(0, {folder!r})")
            # before its first line, so that a script parsing before Task.init gets the run's
            # Args too
            lines.append("import clearnb.arguments as _cnb_arguments")
            lines.append("_cnb_arguments.install()")
            lines.append("del _cnb_arguments")
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

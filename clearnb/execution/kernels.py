"""A pool of pre-started kernels, each used for exactly one run.

Starting a Python kernel costs about half a second and dominates the run time of small
notebooks. The pool starts kernels ahead of need on a background event loop, so start-up
overlaps with the work of running steps; a kernel handed out is never handed out again
(runs stay isolated) and is killed in the background as soon as its run ends. Kernels talk
over IPC sockets in a private folder: no TCP port is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

from clearnb.errors import ExecutionError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_KERNEL = "python3"
KERNEL_ARGUMENTS = ("--HistoryManager.enabled=False",)
"""Arguments every pooled kernel starts with: no history database to open."""


class KernelStartError(ExecutionError):
    """A kernel could not be started (not installed, or it died while starting)."""


@dataclass
class PooledKernel:
    """A started, ready kernel taken from the pool for one run."""

    manager: AsyncKernelManager
    kernel_name: str
    pid: int | None
    pgid: int | None
    started: float
    """Seconds (event-loop clock) it took to start and become ready."""
    ready_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class KernelPool:
    """Pre-started kernels served to runs; start-up happens in the background.

    ``size`` kernels of each kernel name in use are kept ready (the default kernel's from
    the moment the pool starts). :meth:`acquire` hands one out and immediately starts its
    replacement; :meth:`release` kills it in the background. :meth:`close` kills every
    kernel the pool started and waits until they are gone.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        kernel_name: str = DEFAULT_KERNEL,
        env: Mapping[str, str] | None = None,
        preload: Iterable[str] = (),
        startup_timeout: float = 60.0,
        prestart: bool = True,
    ) -> None:
        if size < 0:
            raise ValueError(f"pool size must be 0 or more, got {size}")
        self.size = size
        self.default_kernel = kernel_name
        self.env = dict(os.environ if env is None else env)
        self.preload = tuple(preload)
        self.startup_timeout = startup_timeout
        self.prestart = prestart
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ready: dict[str, asyncio.Queue[PooledKernel | BaseException]] = {}
        self._starting: dict[str, int] = {}
        self._live: dict[int, PooledKernel] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self._stopping: set[asyncio.Future[Any]] = set()
        self._runtime_dir: Path | None = None
        self._closed = False
        self._known_kernels: set[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> KernelPool:
        """Start the background loop and, with ``prestart``, the first kernels. Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this kernel pool is closed; create a new one")
            if self._loop is not None:
                return self
            self._runtime_dir = Path(tempfile.mkdtemp(prefix="cnb-"))
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=serve, name="clearnb-kernel-pool", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
        if self.prestart and self.size:
            self._submit(self._fill(self.default_kernel))
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Kill every kernel of the pool (ready or in use) and stop its loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop = self._loop
        if loop is None:
            return
        try:
            self._submit(self._shutdown_all()).result(timeout)
        except Exception:
            log.warning("kernel pool did not shut down cleanly", exc_info=True)
            for kernel in list(self._live.values()):
                _kill_group(kernel)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)

    def __enter__(self) -> KernelPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def live_pids(self) -> list[int]:
        """Process ids of kernels the pool started that are not yet reaped."""
        return [k.pid for k in self._live.values() if k.pid is not None]

    # -- public API ------------------------------------------------------------------------

    def acquire(self, kernel_name: str | None = None, timeout: float | None = None) -> PooledKernel:
        """A ready kernel for one run (blocks until one is ready)."""
        return self._submit(self.acquire_async(kernel_name, timeout)).result()

    async def acquire_async(
        self, kernel_name: str | None = None, timeout: float | None = None
    ) -> PooledKernel:
        """Coroutine form of :meth:`acquire`; runs on the pool's loop whatever loop awaits it."""
        coro = self._acquire(kernel_name or self.default_kernel, timeout or self.startup_timeout)
        if asyncio.get_running_loop() is self._require_loop():
            return await coro
        return await asyncio.wrap_future(self._submit(coro))

    def release(self, kernel: PooledKernel) -> Future[None]:
        """Kill the kernel in the background; the returned future completes when it is gone."""
        return self._submit(self._shutdown(kernel))

    # -- internals (run on the pool's loop) ---------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self.start()
        assert self._loop is not None
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._require_loop())

    def _queue(self, name: str) -> asyncio.Queue[PooledKernel | BaseException]:
        if name not in self._ready:
            self._ready[name] = asyncio.Queue()
            self._starting[name] = 0
        return self._ready[name]

    async def _fill(self, name: str, extra: int = 0) -> None:
        queue = self._queue(name)
        while not self._closed and queue.qsize() + self._starting[name] < self.size + extra:
            self._starting[name] += 1
            task = asyncio.ensure_future(self._start_into(name, queue))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _start_into(
        self, name: str, queue: asyncio.Queue[PooledKernel | BaseException]
    ) -> None:
        try:
            kernel: PooledKernel | BaseException = await self._start_kernel(name)
        except BaseException as exc:
            kernel = exc
        finally:
            self._starting[name] -= 1
        if self._closed and isinstance(kernel, PooledKernel):
            await self._shutdown(kernel)
            return
        queue.put_nowait(kernel)

    async def _acquire(self, name: str, timeout: float) -> PooledKernel:
        if self._closed:
            raise RuntimeError("this kernel pool is closed; create a new one")
        self._check_installed(name)
        queue = self._queue(name)
        if queue.empty():
            await self._fill(name, extra=1)
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError as exc:
                raise KernelStartError(
                    f"No {name!r} kernel became ready within {timeout:g} s; the machine may be "
                    "overloaded. Raise the start-up timeout or lower the number of parallel steps.",
                    kernel_name=name,
                ) from exc
            if isinstance(item, BaseException):
                await self._fill(name)
                raise KernelStartError(
                    f"The {name!r} kernel failed to start: {item}", kernel_name=name
                ) from item
            if await item.manager.is_alive():
                await self._fill(name)
                return item
            await self._shutdown(item)  # died while idle in the pool: take the next one
            if queue.empty():
                await self._fill(name, extra=1)

    def _check_installed(self, name: str) -> None:
        if self._known_kernels is None:
            self._known_kernels = set(KernelSpecManager().find_kernel_specs())
        if name not in self._known_kernels:
            self._known_kernels = set(KernelSpecManager().find_kernel_specs())
        if name not in self._known_kernels:
            installed = ", ".join(sorted(self._known_kernels)) or "none"
            raise KernelStartError(
                f"The notebook asks for the kernel {name!r}, which is not installed here "
                f"(installed: {installed}). Install it, or run with kernel_name='python3'.",
                kernel_name=name,
            )

    async def _start_kernel(self, name: str) -> PooledKernel:
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert self._runtime_dir is not None
        manager = AsyncKernelManager(kernel_name=name, transport="ipc")
        manager.ip = str(self._runtime_dir / f"k{uuid.uuid4().hex[:10]}")
        try:
            await manager.start_kernel(
                env=self.env,
                cwd=str(self._runtime_dir),
                extra_arguments=list(KERNEL_ARGUMENTS) if name == DEFAULT_KERNEL else [],
            )
        except NoSuchKernel as exc:
            raise KernelStartError(f"Kernel {name!r} is not installed.", kernel_name=name) from exc
        provisioner: Any = manager.provisioner
        pid = getattr(getattr(provisioner, "process", None), "pid", None)
        kernel = PooledKernel(manager, name, pid, getattr(provisioner, "pgid", None), 0.0)
        self._live[id(kernel)] = kernel
        client = manager.client()
        try:
            client.start_channels()
            await client.wait_for_ready(timeout=self.startup_timeout)
            if self.preload:
                code = "".join(
                    f"try:\n    __import__({module!r})\nexcept Exception:\n    pass\n"
                    for module in self.preload
                )
                msg_id = client.execute(code, silent=True, store_history=False)
                await wait_for_reply(client, msg_id, self.startup_timeout)
        except BaseException:
            client.stop_channels()
            await self._shutdown(kernel)
            raise
        client.stop_channels()
        kernel.started = loop.time() - began
        kernel.ready_at = loop.time()
        return kernel

    async def _shutdown(self, kernel: PooledKernel) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._stopping.add(current)
            current.add_done_callback(self._stopping.discard)
        _kill_group(kernel)
        try:
            await kernel.manager.shutdown_kernel(now=True)
        except Exception:
            log.debug("kernel shutdown raised", exc_info=True)
        self._live.pop(id(kernel), None)

    async def _shutdown_all(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for queue in self._ready.values():
            while not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, PooledKernel):
                    self._live.setdefault(id(item), item)
        current = asyncio.current_task()
        others = [t for t in self._stopping if t is not current]
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.gather(
            *(self._shutdown(k) for k in list(self._live.values())), return_exceptions=True
        )


async def wait_for_reply(client: Any, msg_id: str, timeout: float) -> dict[str, Any]:
    """The shell reply to ``msg_id`` (other replies on the channel are skipped)."""
    while True:
        reply: dict[str, Any] = await client.get_shell_msg(timeout=timeout)
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return reply


def _kill_group(kernel: PooledKernel) -> None:
    """SIGKILL the kernel's process group: the kernel and every child it spawned."""
    if sys.platform == "win32" or not kernel.pgid or kernel.pgid == os.getpgid(0):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(kernel.pgid, signal.SIGKILL)

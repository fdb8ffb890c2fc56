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
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

from clearnb.errors import ExecutionError
from clearnb.execution.ipkernel import pipe_path
from clearnb.notebook.files import resolve_kernel_name
from clearnb.processes import exit_description, kill_tree, process_alive, snapshot
from clearnb.scratch import kernel_scratch

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_KERNEL = "python3"
KERNEL_ARGUMENTS = ("--HistoryManager.enabled=False",)
"""Arguments every pooled kernel starts with: no history database to open."""
FORK_ENV = "CLEARNB_KERNEL_FORK"
"""Set to ``0`` to start every kernel as its own process instead of forking it."""


class KernelStartError(ExecutionError):
    """A kernel could not be started (not installed, or it died while starting)."""


@dataclass
class PooledKernel:
    """A started, ready kernel taken from the pool for one run."""

    kernel_name: str
    connection_info: dict[str, Any]
    pid: int | None
    pgid: int | None
    started: float = 0.0
    """Seconds it took to start and become ready."""
    manager: AsyncKernelManager | None = None
    """The manager of a kernel started as its own process (None for a forked kernel)."""
    files: list[Path] = field(default_factory=list)
    """Connection file and socket files to remove once the kernel is gone."""
    connected: AsyncKernelClient | None = None
    """A client with running channels, connected on the pool's loop ahead of the run."""
    seen: dict[int, int] = field(default_factory=dict)
    """The kernel and the processes seen below it while it ran (pid: start time); they are
    killed with it, each only while its start time still names the same process."""

    @property
    def forked(self) -> bool:
        """True when the kernel was forked by the fork server."""
        return self.manager is None

    def client(self) -> AsyncKernelClient:
        """A new client for this kernel (channels not started), bound to the caller's loop."""
        if self.manager is not None:
            return self.manager.client()
        client = AsyncKernelClient()
        client.load_connection_info(self.connection_info)  # type: ignore[arg-type]
        return client

    async def is_alive(self) -> bool:
        """True while the kernel process runs."""
        if self.manager is not None:
            return bool(await self.manager.is_alive())
        return self.pid is not None and process_alive(self.pid)


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
        fork: bool | None = None,
    ) -> None:
        if size < 0:
            raise ValueError(f"pool size must be 0 or more, got {size}")
        self.size = size
        self.default_kernel = resolve_kernel_name(kernel_name)
        self.env = dict(os.environ if env is None else env)
        self.preload = tuple(preload)
        self.startup_timeout = startup_timeout
        self.prestart = prestart
        if fork is None:
            fork = os.environ.get(FORK_ENV, "1") != "0"
        self.fork = fork and hasattr(os, "fork")
        self._forkserver: asyncio.Future[_ForkServer] | None = None
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
            self._runtime_dir = kernel_scratch()
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
        name = resolve_kernel_name(kernel_name or self.default_kernel)
        coro = self._acquire(name, timeout or self.startup_timeout)
        if asyncio.get_running_loop() is self._require_loop():
            return await coro
        return await asyncio.wrap_future(self._submit(coro))

    def run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run ``coro`` on the pool's event loop (where pooled kernels' clients live)."""
        return self._submit(coro)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The pool's event loop (started on first use)."""
        return self._require_loop()

    async def exit_status(self, kernel: PooledKernel, wait: float = 1.0) -> str | None:
        """How a dead kernel ended (``"killed by signal SIGKILL"``); None if not known.

        Waits up to ``wait`` seconds for the process to end; runs on the pool's loop.
        """
        if kernel.manager is not None:
            process = getattr(kernel.manager.provisioner, "process", None)
            code = None
            for _ in range(max(1, int(wait / 0.01))):
                code = process.poll() if process is not None else None
                if code is not None:
                    break
                await asyncio.sleep(0.01)
            return exit_description(code)
        if self._forkserver is None or kernel.pid is None:
            return None
        with contextlib.suppress(Exception):
            server = await asyncio.shield(self._forkserver)
            return exit_description(await server.exit_code(kernel.pid, wait))
        return None

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
            if await item.is_alive():
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
        if self.fork and name == DEFAULT_KERNEL and _spec_runs_this_python(name):
            kernel = await self._fork_kernel(name)
        else:
            kernel = await self._spawn_kernel(name)
        self._live[id(kernel)] = kernel
        client = kernel.client()
        try:
            client.start_channels()
            await connect_client(client, self.startup_timeout, kernel)
            if self.preload and not kernel.forked:
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
        kernel.connected = client
        kernel.started = loop.time() - began
        return kernel

    def _socket_prefix(self) -> Path:
        assert self._runtime_dir is not None
        return self._runtime_dir / f"k{uuid.uuid4().hex[:10]}"

    async def _spawn_kernel(self, name: str) -> PooledKernel:
        """Start the kernel as its own process, through jupyter_client's kernel manager."""
        prefix = self._socket_prefix()
        manager = AsyncKernelManager(kernel_name=name, transport="ipc")
        manager.ip = str(prefix)
        spec = _ipc_kernel_spec(name)
        if spec is not None:
            manager._kernel_spec = spec  # read by the manager's kernel_spec property
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
        return PooledKernel(
            name,
            dict(manager.get_connection_info()),
            pid,
            getattr(provisioner, "pgid", None),
            manager=manager,
            files=[Path(pipe_path(str(prefix)))],
            seen=snapshot([pid]) if pid else {},
        )

    async def _fork_kernel(self, name: str) -> PooledKernel:
        """Fork the kernel from the fork server (its imports are already done)."""
        if self._forkserver is None:  # one server, however many kernels start at once
            assert self._runtime_dir is not None
            self._forkserver = asyncio.ensure_future(
                _ForkServer.start(self.env, self.preload, self._runtime_dir)
            )
        server = await asyncio.shield(self._forkserver)
        prefix = self._socket_prefix()
        connection_file, written = write_connection_file(
            f"{prefix}.json", transport="ipc", ip=str(prefix), kernel_name=name
        )
        info: dict[str, Any] = dict(written)
        files = [Path(connection_file), Path(pipe_path(str(prefix)))]
        files += [Path(f"{prefix}-{info[key]}") for key in _PORT_KEYS if key in info]
        pid = await server.fork(
            {
                "connection_file": connection_file,
                "env": self.env,
                "cwd": str(self._runtime_dir),
                "log": f"{prefix}.log",
            }
        )
        files.append(Path(f"{prefix}.log"))
        return PooledKernel(name, dict(info), pid, pid, files=files, seen=snapshot([pid]))

    async def _shutdown(self, kernel: PooledKernel) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._stopping.add(current)
            current.add_done_callback(self._stopping.discard)
        if kernel.connected is not None:
            with contextlib.suppress(Exception):
                kernel.connected.stop_channels()
            kernel.connected = None
        await asyncio.get_running_loop().run_in_executor(None, _kill_group, kernel)
        if kernel.forked and kernel.pid is not None:
            for _ in range(1000):  # the fork server reaps it; wait until it is gone (<= 5 s)
                if not process_alive(kernel.pid):
                    break
                await asyncio.sleep(0.005)
        if kernel.manager is not None:
            try:
                await kernel.manager.shutdown_kernel(now=True)
            except Exception:
                log.debug("kernel shutdown raised", exc_info=True)
        for file in kernel.files:
            with contextlib.suppress(OSError):
                file.unlink()
        self._live.pop(id(kernel), None)

    async def _shutdown_all(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for ready in self._ready.values():
            while not ready.empty():
                item = ready.get_nowait()
                if isinstance(item, PooledKernel):
                    self._live.setdefault(id(item), item)
        current = asyncio.current_task()
        others = [t for t in self._stopping if t is not current]
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.gather(
            *(self._shutdown(k) for k in list(self._live.values())), return_exceptions=True
        )
        if self._forkserver is not None:
            with contextlib.suppress(Exception):
                await (await self._forkserver).stop()


async def wait_for_reply(client: Any, msg_id: str, timeout: float) -> dict[str, Any]:
    """The shell reply to ``msg_id`` (other replies on the channel are skipped)."""
    while True:
        reply: dict[str, Any] = await client.get_shell_msg(timeout=timeout)
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return reply


async def connect_client(
    client: AsyncKernelClient, timeout: float, kernel: PooledKernel | None = None
) -> None:
    """Wait until ``client`` gets replies on shell and messages on IOPub.

    A new subscriber misses what the kernel publishes before its subscription is in place,
    so this asks for ``kernel_info`` until a message answering it (or the kernel's
    ``iopub_welcome``) arrives on IOPub too.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending: set[str] = set()
    while True:
        if kernel is not None and not await kernel.is_alive():
            raise KernelStartError(
                f"The {kernel.kernel_name!r} kernel exited while starting.",
                kernel_name=kernel.kernel_name,
            )
        pending.add(client.kernel_info())
        wait_until = min(deadline, loop.time() + 0.05)
        while loop.time() < wait_until:
            try:
                message = await client.get_iopub_msg(timeout=max(0.0, wait_until - loop.time()))
            except queue.Empty:
                break
            welcome = message.get("msg_type") == "iopub_welcome"
            if welcome or message.get("parent_header", {}).get("msg_id") in pending:
                return  # stray kernel_info replies are skipped by reply matching
        if loop.time() >= deadline:
            raise KernelStartError(
                f"The kernel did not answer within {timeout:g} s.",
                kernel_name=kernel.kernel_name if kernel else "",
            )


_PORT_KEYS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class _ForkServer:
    """The fork server process (``python -m clearnb.execution.forkserver``), driven by pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, env: Mapping[str, str], preload: Iterable[str], runtime_dir: Path
    ) -> _ForkServer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clearnb.execution.forkserver",
            *preload,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={"PYDEVD_DISABLE_FILE_VALIDATION": "1", **env},
            cwd=str(runtime_dir),
            start_new_session=True,
        )
        server = cls(process)
        try:
            reply = await server._read()
            if not reply.get("ready"):
                raise KernelStartError(f"the kernel fork server did not start: {reply}")
        except BaseException:
            await server.stop()
            raise
        return server

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise KernelStartError(
                "the kernel fork server exited; set CLEARNB_KERNEL_FORK=0 to start kernels "
                "without it"
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def _ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        async with self.lock:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(dict(request)).encode() + b"\n")
            await self.process.stdin.drain()
            return await self._read()

    def _exchange(self, request: Mapping[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send ``request`` and read its reply in a task of its own.

        A cancelled caller cannot cut the exchange short: a reply left unread would answer
        the next request.
        """
        return asyncio.ensure_future(self._ask(request))

    async def fork(self, request: Mapping[str, Any]) -> int:
        """Fork one kernel; returns its pid (a caller cancelled meanwhile has it killed)."""
        exchange = self._exchange(request)
        try:
            reply = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            exchange.add_done_callback(_kill_unwanted)
            raise
        if "pid" not in reply:
            raise KernelStartError(f"the kernel fork server could not fork: {reply.get('error')}")
        return int(reply["pid"])

    async def exit_code(self, pid: int, wait: float) -> int | None:
        """Exit code of kernel ``pid`` (negative: the signal), waiting up to ``wait`` s."""
        reply = await asyncio.shield(self._exchange({"exit_code": pid, "wait": wait}))
        code = reply.get("exit_code")
        return int(code) if isinstance(code, int) else None

    async def stop(self) -> None:
        """Close its stdin (it kills its kernels and exits) and wait for it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()


def _kill_unwanted(exchange: asyncio.Future[dict[str, Any]]) -> None:
    """Kill the kernel a cancelled fork request started (the fork server has not reaped it)."""
    if exchange.cancelled() or exchange.exception() is not None:
        return
    pid = exchange.result().get("pid")
    if isinstance(pid, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _spec_runs_this_python(name: str) -> bool:
    """True if kernel ``name`` would run this very interpreter (so forking is equivalent)."""
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return False
    if not spec.argv:
        return False
    command = spec.argv[0]
    major, minor = sys.version_info[:2]
    if command in ("python", f"python{major}", f"python{major}.{minor}"):
        return True  # jupyter_client runs these as sys.executable
    found = shutil.which(command)
    try:
        return found is not None and os.path.samefile(found, sys.executable)
    except OSError:
        return False


def _ipc_kernel_spec(name: str) -> Any:
    """Kernel ``name``'s spec changed to start :mod:`clearnb.execution.ipkernel`.

    Only for this Python's ``ipykernel_launcher`` (the kernel then opens no TCP port);
    None for any other kernel, which starts as its spec says.
    """
    if not _spec_runs_this_python(name):
        return None
    spec = KernelSpecManager().get_kernel_spec(name)
    if list(spec.argv[1:3]) != ["-m", "ipykernel_launcher"]:
        return None
    spec.argv = [sys.executable, "-m", "clearnb.execution.ipkernel", *spec.argv[3:]]
    return spec


def _kill_group(kernel: PooledKernel) -> None:
    """SIGKILL the kernel with every process it started (its group, session and tree)."""
    if sys.platform == "win32":
        return
    kill_tree(kernel.pid, kernel.pgid, kernel.seen)

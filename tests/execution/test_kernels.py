"""The kernel pool: kernels are ready ahead of need, used once, and never left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearnb.config import Config
from clearnb.execution.kernels import KernelPool, KernelStartError
from clearnb.execution.runner import NotebookRunner
from tests.helpers import child_kernel_pids, notebook, process_exists, wait_until_gone

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_kernels_are_prestarted_used_once_and_killed_on_release(fork: bool) -> None:
    with KernelPool(size=1, fork=fork) as pool:
        first = pool.acquire()
        second = pool.acquire()
        assert first.forked is fork and second.forked is fork
        assert first.pid != second.pid, "a kernel is never handed out twice"
        assert process_exists(first.pid) and process_exists(second.pid)
        pool.release(first).result(timeout=30)
        assert not process_exists(first.pid)
        pool.release(second).result(timeout=30)
        assert wait_until_gone(second.pid)
    assert child_kernel_pids() == []


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_kernels_use_ipc_sockets_not_tcp_ports(fork: bool) -> None:
    with KernelPool(size=0, fork=fork) as pool:
        kernel = pool.acquire()
        try:
            assert kernel.connection_info["transport"] == "ipc"
            assert Path(kernel.connection_info["ip"]).parent.exists()
        finally:
            pool.release(kernel).result(timeout=30)


def test_an_unknown_kernel_is_a_clear_error() -> None:
    with KernelPool(size=0) as pool, pytest.raises(KernelStartError, match="not installed"):
        pool.acquire("no-such-kernel")


def test_no_kernel_is_left_behind_after_failures(tmp_path: Path) -> None:
    with NotebookRunner(Config.at(tmp_path), pool_size=2) as runner:
        runner.execute(notebook("exits"))
        runner.execute(notebook("loops"), time_limit=1)
        runner.execute(notebook("raises"))
        assert child_kernel_pids(), "the pool keeps kernels ready while it is open"
    assert child_kernel_pids() == []


def test_forked_kernels_do_not_share_random_state() -> None:
    from clearnb.execution.kernels import connect_client, wait_for_reply

    async def draw(pool: KernelPool) -> str:
        kernel = await pool.acquire_async()
        client = kernel.connected or kernel.client()
        try:
            if kernel.connected is None:
                client.start_channels()
                await connect_client(client, 30, kernel)
            msg_id = client.execute("import random", user_expressions={"value": "random.random()"})
            reply = await wait_for_reply(client, msg_id, 30)
            return str(reply["content"]["user_expressions"]["value"]["data"]["text/plain"])
        finally:
            pool.release(kernel)

    with KernelPool(size=2, fork=True) as pool:
        values = {pool.run(draw(pool)).result(timeout=60) for _ in range(3)}
    assert len(values) == 3, f"kernels drew the same random numbers: {values}"

"""Waiting for a run in the main thread: Ctrl-C takes effect at once, wherever it lands.

Linux hands a process's SIGINT to any of its threads. These tests send it to a worker
thread on purpose (the case that made a run go on until its end under load) and check the
main thread still turns it into an abort promptly.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from clearnb.pipeline.waiting import INTERRUPTED, RunWaiter, wait_interruptibly


def interrupt_from_another_thread(delay: float) -> threading.Thread:
    """A thread that, after ``delay`` seconds, receives SIGINT itself (not the main one)."""

    def receive() -> None:
        time.sleep(delay)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        time.sleep(0.5)  # stays alive while the main thread handles it

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_landing_on_another_thread_aborts_the_run_promptly() -> None:
    aborted: list[tuple[str, float]] = []

    def abort(reason: str) -> None:  # as the engine's: the run settles soon after
        aborted.append((reason, time.monotonic()))
        threading.Timer(0.2, waiter.ended).start()

    waiter = RunWaiter("waited", abort)
    waiter.done.clear()
    ends = threading.Timer(30, waiter.ended)  # left alone, the run ends only after 30 s
    ends.start()
    try:
        interrupt_from_another_thread(0.3)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            waiter.wait()
        assert [reason for reason, _ in aborted] == [INTERRUPTED]
        assert aborted[0][1] - started < 10, "the abort came only when the run ended"
    finally:
        ends.cancel()


def test_a_timed_wait_returns_when_the_event_is_set_or_the_time_is_up() -> None:
    event = threading.Event()
    started = time.monotonic()
    assert wait_interruptibly(event, 0.5) is False
    assert 0.45 <= time.monotonic() - started < 5
    threading.Timer(0.3, event.set).start()
    assert wait_interruptibly(event, 30) is True
    assert wait_interruptibly(event, None) is True

"""Waiting for a local run: in a script the process waits for it; Ctrl-C aborts it cleanly.

A run goes on in a background thread so that a notebook stays responsive while the widget
shows it. ClearML's ``start()`` in a script waits for the run (``wait=True``); here a plain
Python process (not IPython) waits for every run it started before it exits, so a script
that ends right after ``pipe.start()`` still runs its pipeline. Ctrl-C during that wait, or
during :meth:`RunWaiter.wait`, aborts the run (steps aborted, kernels stopped, run recorded
``aborted``) and waits for it to settle; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable

from clearnb.current import in_ipython

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted (Ctrl-C)"
"""The reason recorded for a run aborted by Ctrl-C."""
INTERRUPTED_EXIT_CODE = 130
"""Exit status of a process left at once by a second Ctrl-C (as a shell's for SIGINT)."""
SIGNAL_CHECK_INTERVAL = 0.2
"""Seconds between two looks at pending signals while the main thread waits."""


class RunWaiter:
    """Tells when a run ended, and waits for it, turning Ctrl-C into a clean abort."""

    def __init__(self, name: str, abort: Callable[[str], None]) -> None:
        self.name = name
        self.abort = abort
        self.done = threading.Event()
        self.done.set()
        self.holds_process = False

    def started(self) -> None:
        """A run starts: outside IPython, the process will wait for it before it exits."""
        self.done.clear()
        if self.holds_process or in_ipython():
            return
        self.holds_process = True
        ref = weakref.ref(self)

        def wait_at_exit() -> None:
            waiter = ref()
            if waiter is not None:
                waiter.wait_at_exit()

        hold_process(wait_at_exit)

    def ended(self) -> None:
        """The run ended (its status recorded)."""
        self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until the run ends); True if it ended.

        Ctrl-C aborts the run, waits for it to settle and raises ``KeyboardInterrupt``.
        """
        try:
            return wait_interruptibly(self.done, timeout)
        except KeyboardInterrupt:
            self._abort_and_settle()
            raise

    def wait_at_exit(self) -> None:
        """Wait for a running run before the interpreter exits (Ctrl-C aborts it)."""
        if self.done.is_set():
            return
        log.warning("waiting for pipeline %r to end before exiting (Ctrl-C aborts it)", self.name)
        try:
            wait_interruptibly(self.done, None)
        except KeyboardInterrupt:
            self._abort_and_settle()

    def _abort_and_settle(self) -> None:
        log.warning(
            "%s: aborting pipeline %r; Ctrl-C again to exit at once", INTERRUPTED, self.name
        )
        self.abort(INTERRUPTED)
        try:
            wait_interruptibly(self.done, None)
        except KeyboardInterrupt:
            if in_ipython():  # never end a kernel: the cell stops, the abort goes on
                raise
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT_CODE)


def wait_interruptibly(event: threading.Event, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: for ever) for ``event``; True if it is set.

    The kernel may deliver SIGINT to any thread of the process; when it lands on another
    thread, a main thread blocked in one long ``Event.wait`` does not wake to run Python's
    handler until the event is set, so Ctrl-C would only take effect once the run ended.
    Short waits in a loop let the handler run (and ``KeyboardInterrupt`` rise) promptly.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = SIGNAL_CHECK_INTERVAL
        if deadline is not None:
            step = min(step, deadline - time.monotonic())
            if step <= 0:
                return event.is_set()
        if event.wait(step):
            return True


def hold_process(wait: Callable[[], None]) -> None:
    """Call ``wait`` in the main thread once the main script has ended.

    ``threading``'s exit hooks run before the interpreter refuses new threads and new
    futures (``concurrent.futures`` registers the same kind of hook), so a run waited for
    there can still start its steps and kernels; :mod:`atexit` comes too late for that.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - every supported Python has it
        import atexit

        atexit.register(wait)
        return
    register(wait)

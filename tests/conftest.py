"""Rules for the whole suite: in CI (``CI=true``, see :func:`tests.helpers.in_ci`) no test
may be skipped.

CI installs every extra of the project, Chromium and a PostgreSQL server, so a skip there
means a test silently stopped running. Tests skip through :func:`tests.helpers.require_module`
and :func:`tests.helpers.skip_or_fail_in_ci`, which already fail in CI; this hook also
fails any other skip (a plain ``pytest.importorskip`` or ``skipif`` added later).

The suite also takes Ctrl-C as a terminal gives it: a shell starts background jobs with
SIGINT ignored, Python then installs no handler, and every process started from it
inherits the ignored signal, so the Ctrl-C tests would test nothing.
"""

from __future__ import annotations

import signal
from collections.abc import Generator

import pytest

from tests.helpers import in_ci


def pytest_configure(config: pytest.Config) -> None:
    """Take SIGINT as Python does by default, even when started with it ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _failed_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, where nothing may be skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """In CI, a skipped test is reported failed, with the reason it gave for skipping."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        _failed_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    """In CI, a module that skips itself while it is collected is reported failed."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        _failed_skip(report)

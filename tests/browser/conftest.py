"""Fixtures for real-browser tests: a JupyterLab server, headless Chromium, a page.

Tests here are marked ``browser`` (and ``slow``). When /usr/bin/chromium is missing they
are skipped, except in CI (``CI=true``), where .ci/run installs it and a missing browser
(or JupyterLab, or Playwright) is a failure. A failing test gets a screenshot, the browser
console and JupyterLab's log tail in its report.

The server and the browser are started once for all tests in this package and stopped
after its last test (package scope: the rest of the suite does not run beside them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from tests.browser.lab import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    JupyterLab,
    chromium_missing_reason,
    screenshot,
    skip_without_chromium,
    start_jupyter_lab,
)
from tests.helpers import require_module

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Error, Page

HERE = Path(__file__).parent
CONSOLE = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/browser is a slow browser test, skipped without Chromium."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
            item.add_marker(skip_without_chromium)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """On failure, attach a screenshot path, the browser console and the server log."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not isinstance(item, pytest.Function):
        return
    page = cast("Page | None", item.funcargs.get("page"))
    if page is not None and report.when == "call":
        try:
            path = screenshot(page, f"FAILED-{item.name}")
            report.sections.append(("browser screenshot", str(path)))
        except Exception as exc:  # the page may be gone; the report must still be written
            report.sections.append(("browser screenshot", f"not taken: {exc}"))
        console = item.stash.get(CONSOLE, [])
        report.sections.append(("browser console (last 40)", "\n".join(console[-40:])))
    lab = item.funcargs.get("jupyter_lab")
    if isinstance(lab, JupyterLab):
        report.sections.append(("JupyterLab log (last 60 lines)", lab.log_tail(60)))


@pytest.fixture(scope="package")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """A JupyterLab server on 127.0.0.1; tests put notebooks under ``jupyter_lab.root``."""
    require_module("jupyterlab")
    lab = start_jupyter_lab(tmp_path_factory.mktemp("jupyter-lab"))
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright (never Playwright's own browsers)."""
    reason = chromium_missing_reason()
    if reason is not None:
        pytest.fail(f"cannot run browser tests: {reason}")
    sync_api = require_module("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context and page (1400x900) that records console messages.

    Afterwards the test's notebook sessions (and kernels) on ``jupyter_lab`` are ended.
    """
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    request.node.stash[CONSOLE] = console

    def on_console(message: ConsoleMessage) -> None:
        console.append(f"[{message.type}] {message.text}")

    def on_error(error: Error) -> None:
        console.append(f"[pageerror] {error}")

    page.on("console", on_console)
    page.on("pageerror", on_error)
    try:
        yield page
    finally:
        context.close()
        if "jupyter_lab" in request.fixturenames:  # the next test starts with no kernels
            lab = request.getfixturevalue("jupyter_lab")
            with contextlib.suppress(OSError):  # a dead server is reported by the test itself
                lab.end_sessions()

"""A step's reports in the widget's details, in a real browser: light, dark and narrow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser.lab import (
    JupyterLab,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_text,
    write_notebook,
)
from tests.helpers import NOTEBOOKS

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

CONTROLLER = f"""\
from clearnb import PipelineController

pipe = PipelineController(name="reports demo", project="tests")
pipe.add_step("report", notebook={str(NOTEBOOKS / "pipeline" / "report_step.ipynb")!r})
pipe.start()
pipe
"""


def use_theme(page: Page, theme: str) -> None:
    """Pick a theme from JupyterLab's Settings menu, as a user does."""
    page.get_by_role("menuitem", name="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text=theme).first.click()
    page.wait_for_function(
        "theme => document.body.dataset.jpThemeName === theme", arg=theme, timeout=30_000
    )
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30_000)


def test_the_details_of_a_step_show_its_reports(page: Page, jupyter_lab: JupyterLab) -> None:
    write_notebook(jupyter_lab, "reports.ipynb", [CONTROLLER], hide_code=True)
    open_notebook(page, jupyter_lab, "reports.ipynb")
    run_all_cells(page)
    step = page.locator("g.cnb-node[data-step='report']")
    page.locator("g.cnb-node[data-step='report'][data-status='completed']").wait_for(
        timeout=120_000
    )
    step.click()
    wait_for_text(page, ".cnb-details", "reports (4)", timeout=60_000)
    details = page.locator(".cnb-details").first
    text = details.inner_text()
    for shown in ("samples / green", "page / html", "text/html"):
        assert shown in text, text
    pictures = details.locator("img")
    assert pictures.count() >= 3, "the histogram, the matrix and the image are drawn"
    plots = pictures.last
    screenshot(page, "reports-light", show=plots)
    use_theme(page, "JupyterLab Dark")
    screenshot(page, "reports-dark", show=plots)
    page.set_viewport_size({"width": 560, "height": 900})
    screenshot(page, "reports-narrow", show=plots)
    use_theme(page, "JupyterLab Light")

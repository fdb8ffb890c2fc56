"""The controller widget in a real browser: live DAG, tooltip, details, Retry."""

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

STEPS = NOTEBOOKS / "pipeline"


def controller_cell(counter: str) -> str:
    return f"""\
from clearnb import PipelineController

pipe = PipelineController(name="browser demo", project="tests", max_workers=2)
pipe.add_step("data", notebook={str(STEPS / "data_step.ipynb")!r})
pipe.add_step(
    "process",
    notebook={str(STEPS / "process_step.ipynb")!r},
    parameter_override={{
        "General/dataset_url": "${{data.artifacts.dataset.url}}",
        "General/test_size": 0.25,
    }},
)
pipe.add_step("train", notebook={str(STEPS / "train_step.ipynb")!r},
              parameter_override={{"General/dataset_task_id": "${{process.id}}"}})
pipe.add_step(
    "check",
    notebook={str(STEPS / "flaky.ipynb")!r},
    parents=["train"],
    parameter_override={{"General/counter": {counter!r}, "General/succeed_on": 2}},
)
pipe.start()
pipe
"""


def node(page: Page, name: str) -> str:
    return f"g.cnb-node[data-step='{name}']"


def wait_for_status(page: Page, name: str, status: str, timeout: float = 120_000) -> None:
    page.locator(f"{node(page, name)}[data-status='{status}']").wait_for(
        state="visible", timeout=timeout
    )


def test_the_widget_runs_shows_and_retries_a_pipeline(page: Page, jupyter_lab: JupyterLab) -> None:
    counter = str(jupyter_lab.root / "flaky-counter")
    write_notebook(jupyter_lab, "controller.ipynb", [controller_cell(counter)], hide_code=True)
    open_notebook(page, jupyter_lab, "controller.ipynb")
    run_all_cells(page)

    wait_for_status(page, "data", "completed")
    wait_for_status(page, "process", "completed")
    wait_for_status(page, "train", "completed")
    wait_for_status(page, "check", "failed")
    canvas = page.locator(".cnb-canvas").first
    screenshot(page, "widget-failed", show=canvas)

    page.locator(node(page, "process")).hover()
    wait_for_text(page, ".cnb-tooltip", "General/test_size = 0.25")
    tooltip = page.locator(".cnb-tooltip").inner_text()
    assert "process" in tooltip and "${data.artifacts.dataset.url}" in tooltip
    screenshot(page, "widget-tooltip", show=canvas)

    page.locator(node(page, "process")).click()
    wait_for_text(page, ".cnb-details", "General/test_size")
    details = page.locator(".cnb-details").inner_text()
    assert "0.25" in details and "seen" in details and "open the executed notebook" in details
    screenshot(page, "widget-details", show=page.locator(".cnb-details").first)

    page.get_by_role("button", name="Retry failed").click()
    wait_for_status(page, "check", "completed")
    for name in ("data", "process", "train", "check"):
        wait_for_status(page, name, "completed", timeout=5_000)
    screenshot(page, "widget-retried", show=canvas)

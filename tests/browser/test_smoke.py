"""Smoke test: ipywidgets and anywidget render and talk to the kernel in JupyterLab."""

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

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(180)]

BUTTON_CELL = """\
import ipywidgets as widgets

label = widgets.Label(value="not clicked yet")
button = widgets.Button(description="Hello clearnb")


def on_click(_button):
    label.value = "clicked in the browser, set by python"
    hello.value = "changed by python"


button.on_click(on_click)
widgets.VBox([button, label])
"""

ANYWIDGET_CELL = '''\
import anywidget
import traitlets


class Hello(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const div = document.createElement("div");
      div.className = "clearnb-hello";
      const show = () => { div.textContent = model.get("value"); };
      show();
      model.on("change:value", show);
      el.appendChild(div);
      return () => model.off("change:value", show);
    }
    export default { render };
    """
    value = traitlets.Unicode("from python").tag(sync=True)


hello = Hello()
hello
'''


def test_widgets_render_and_round_trip(page: Page, jupyter_lab: JupyterLab) -> None:
    write_notebook(jupyter_lab, "smoke.ipynb", [BUTTON_CELL, ANYWIDGET_CELL], hide_code=True)
    open_notebook(page, jupyter_lab, "smoke.ipynb")
    run_all_cells(page)

    wait_for_text(page, "button.jupyter-button", "Hello clearnb")
    wait_for_text(page, ".widget-label", "not clicked yet")
    wait_for_text(page, "div.clearnb-hello", "from python")
    screenshot(page, "smoke-rendered")

    page.get_by_role("button", name="Hello clearnb").click()
    # The click reaches the kernel, whose handler updates both widgets' models.
    wait_for_text(page, ".widget-label", "clicked in the browser, set by python")
    wait_for_text(page, "div.clearnb-hello", "changed by python")
    screenshot(page, "smoke-clicked")

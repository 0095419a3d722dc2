"""Remote widgets and prompts in a real JupyterLab (Debian's chromium via pytest-playwright): a slider made
by a `%%cake` cell renders, moving it with the keyboard changes the remote value, a tqdm.auto bar reaches
100 %, and a remote input() is answered in the notebook's own prompt. Real server, kernels and session."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lab_util import Lab, write_notebook

pytestmark = pytest.mark.usefixtures("built_labextension")  # the side panel, built by tools/test.sh


CELLS = [
    "%load_ext jupyter_cake\n%cake use local --name lab-widgets --new",
    "%%cake\nimport ipywidgets as widgets\nslider = widgets.IntSlider(value=3, min=0, max=10)\nslider",
    "%%cake\nprint('remote value', slider.value)",
    "%%cake\nimport time\nfrom tqdm.auto import tqdm\nfor i in tqdm(range(40)):\n    time.sleep(0.02)",
    "%%cake\nname = input('your name? ')\nprint('hello', name)",
    "%cake down",
]


def _run_cell(page: Any, index: int) -> Any:
    """Run cell ``index`` as a user does (click into it, Shift+Enter); returns its output area."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell.locator(".jp-Cell-outputArea")


def test_remote_slider_progress_bar_and_prompt_in_jupyterlab(lab: Lab, page: Any, artifacts: Path) -> None:
    name = write_notebook(lab.root, "widgets.ipynb", CELLS)
    page.goto(lab.url(f"lab/tree/{name}?reset&token={lab.token}"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # The kernel is connected and idle (the status bar can say idle before the notebook's kernel
    # connection is up, and a cell run then is dropped).
    page.wait_for_function("() => { const k = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;"
                           " return k?.connectionStatus === 'connected' && k?.status === 'idle'; }",
                           timeout=120_000)  # fmt: skip
    try:
        _run_cell(page, 0).get_by_text(re.compile("started session")).wait_for(timeout=120_000)
        # The slider renders (its models were mirrored before the view was shown) at its remote value.
        shown = _run_cell(page, 1)
        handle = shown.locator(".widget-slider .noUi-handle")
        handle.wait_for(timeout=30_000)
        readout = shown.locator(".widget-readout")
        assert readout.inner_text().strip() == "3"
        # Four steps right with the keyboard, as a user who can't drag does: the remote value follows.
        handle.focus()
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("() => document.querySelector('.widget-readout')?.textContent.trim() === '7'")
        page.wait_for_timeout(300)  # the widget manager sends the change (debounced) to the kernel
        _run_cell(page, 2).get_by_text("remote value 7").wait_for(timeout=30_000)

        # The progress bar of a remote tqdm.auto loop reaches 100 %.
        bar = _run_cell(page, 3)
        bar.locator(".widget-hprogress").wait_for(timeout=30_000)
        bar.get_by_text(re.compile(r"100%")).wait_for(timeout=30_000)
        bar.get_by_text(re.compile(r"40/40")).wait_for(timeout=30_000)

        # A remote input(): JupyterLab's own prompt asks, the answer reaches the remote code.
        asked = _run_cell(page, 4)
        prompt = asked.locator(".jp-Stdin-input")
        prompt.wait_for(timeout=30_000)
        assert "your name?" in asked.inner_text()
        prompt.fill("Ada")
        prompt.press("Enter")
        asked.get_by_text("hello Ada").wait_for(timeout=30_000)

        body = page.locator("body").inner_text()
        assert "model not found" not in body and "Error displaying widget" not in body
    finally:
        page.screenshot(path=str(artifacts / "remote-widgets.png"))
        _run_cell(page, 5)
        page.wait_for_timeout(2000)  # `%cake down` ends the session before the server goes

"""Real browser (Debian's chromium via pytest-playwright): JupyterLab, the Cake panel, a %%cake cell
with its run header, cancel from the panel; and the panel's error state without the server extension."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from lab_util import Lab, lab_server, write_notebook

from jupyter_cake.store import Store

pytestmark = pytest.mark.usefixtures("built_labextension")  # the side panel, built by tools/test.sh


CELLS = [
    "%load_ext jupyter_cake\n%cake use local",
    "%%cake\nimport time\nfor i in range(120):\n    print('tick', i, flush=True)\n    time.sleep(0.25)",
]


def _open_panel(page: Any) -> Any:
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="cake-panel"]').click()
    panel = page.locator("#cake-panel")
    panel.wait_for(state="visible", timeout=30_000)
    return panel


def test_panel_session_run_live_output_and_cancel(lab: Lab, page: Any, artifacts: Path) -> None:
    name = write_notebook(lab.root, "demo.ipynb", CELLS)
    page.goto(lab.url(f"lab/tree/{name}?reset&token={lab.token}"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Notebook").first.wait_for()
    panel = _open_panel(page)

    # Start a local session from the panel, for the notebook in front (its `%cake use local` reuses it).
    before = {r.id for r in Store().sessions()}
    panel.locator('.cake-target[data-target="local"] .cake-start').click()
    deadline = time.monotonic() + 60
    while not (new := [r for r in Store().sessions(live_only=True) if r.id not in before]):
        assert time.monotonic() < deadline, "no session started from the panel"
        time.sleep(0.1)
    session_id = new[0].id
    panel.locator(f'.cake-session[data-session="{session_id}"][data-state="running"]').wait_for(timeout=30_000)
    assert Store().session(session_id).owner == str(lab.root / name)  # type: ignore[union-attr]

    # Run both cells: the first re-attaches to the panel's session, the second prints for a while.
    page.wait_for_function("() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'",
                           timeout=60_000)  # fmt: skip  (the kernel is up)
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    try:
        page.get_by_text(re.compile(f"re-attached to session {session_id}")).wait_for(timeout=60_000)
    finally:
        page.screenshot(path=str(artifacts / "after-first-cell.png"))
    page.keyboard.press("Shift+Enter")

    # The in-cell run header (an ipywidget) shows target, state and a Cancel button.
    header = page.locator(".cake-run-header")
    header.wait_for(timeout=30_000)
    assert "running" in header.inner_text()

    # The run appears in the panel; selecting it shows its live log lines.
    # (Earlier tests' runs may be listed too: the panel shows every session's runs, so pin this one.)
    deadline = time.monotonic() + 30
    while not (running := Store().runs(session_id=session_id, states=("running",), limit=10)):
        assert time.monotonic() < deadline, "the running cell never showed up as a run"
        time.sleep(0.1)
    assert len(running) == 1, running
    run_id = running[0].id
    run = panel.locator(f'.cake-run[data-run="{run_id}"][data-state="running"]')
    run.wait_for(timeout=30_000)
    run.locator(".cake-name").click()
    tail = panel.locator(".cake-tail")
    page.wait_for_function("() => /tick [3-9]/.test(document.querySelector('#cake-panel .cake-tail').textContent)",
                           timeout=30_000)  # fmt: skip
    assert tail.inner_text().startswith("tick 0")
    panel.screenshot(path=str(artifacts / "panel-light.png"))
    header.screenshot(path=str(artifacts / "run-widget-light.png"))

    # Dark theme: the panel follows it.
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false' && "  # the panel follows it
                           "getComputedStyle(document.querySelector('#cake-panel')).backgroundColor === 'rgb(33, 33, 33)'",
                           timeout=30_000)  # fmt: skip
    page.wait_for_timeout(1000)  # the theme's fade-in
    panel.screenshot(path=str(artifacts / "panel-dark.png"))
    header.screenshot(path=str(artifacts / "run-widget-dark.png"))

    # Interrupt from the panel, with confirmation: the cell ends as cancelled, the header collapses.
    run.locator(".cake-interrupt").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "Interrupt run" in dialog.inner_text()
    dialog.locator("button.jp-mod-warn").click()
    panel.locator(f'.cake-run[data-run="{run_id}"][data-state="aborted"]').wait_for(timeout=30_000)
    page.wait_for_function("() => /■ .* cancelled/.test(document.querySelector('.cake-run-header').textContent)",
                           timeout=30_000)  # fmt: skip
    page.get_by_text("KeyboardInterrupt").first.wait_for(timeout=10_000)
    assert page.locator(".cake-run-cancel").count() == 0  # collapsed to one line
    page.locator(".jp-Notebook .jp-Cell").nth(1).screenshot(path=str(artifacts / "cell-cancelled-dark.png"))

    # The run header's own Cancel button (routed through the server API by the lab extension).
    page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("() => /running/.test(document.querySelector('.cake-run-header')?.textContent)",
                           timeout=30_000)  # fmt: skip
    panel.locator('.cake-run[data-state="running"]').wait_for(timeout=30_000)
    page.locator(".cake-run-cancel").click()
    page.wait_for_function("() => /cancelled/.test(document.querySelector('.cake-run-header')?.textContent)",
                           timeout=30_000)  # fmt: skip
    page.wait_for_function(f"() => [...document.querySelectorAll('#cake-panel .cake-run[data-state=\"aborted\"]')]"
                           f".filter(row => row.textContent.includes('{session_id}')).length === 2", timeout=10_000)

    # Keyboard: the runs are a listbox; arrows move, Enter selects (and follows its output).
    rows = panel.locator(".cake-run")
    newest, older = rows.nth(0).get_attribute("data-run"), rows.nth(1).get_attribute("data-run")
    rows.nth(0).focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.dataset.run") == older
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#cake-panel .cake-tail-title').textContent.includes('{newest}')")
    page.wait_for_function("() => /tick 0/.test(document.querySelector('#cake-panel .cake-tail').textContent)", timeout=30_000)
    page.wait_for_timeout(1500)  # a tick of the panel's clock must not steal the focus
    assert page.evaluate("() => document.activeElement.dataset.run") == newest

    # Stop the session from the panel, with confirmation.
    panel.locator(f'.cake-session[data-session="{session_id}"] .cake-stop').click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    panel.locator(f'.cake-session[data-session="{session_id}"][data-state="stopped"]').wait_for(timeout=30_000)
    assert Store().session(session_id).state == "stopped"  # type: ignore[union-attr]
    panel.screenshot(path=str(artifacts / "panel-stopped-dark.png"))
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")


def test_panel_says_what_to_do_when_the_server_extension_is_disabled(
    page: Any, tmp_path: Path, artifacts: Path
) -> None:
    with lab_server(tmp_path, extension_enabled=False) as lab:
        page.goto(lab.url(f"lab?reset&token={lab.token}"))
        page.locator(".jp-SideBar").first.wait_for(timeout=60_000)
        panel = _open_panel(page)
        banner = panel.locator(".cake-banner")
        banner.wait_for(timeout=30_000)
        assert "server extension is not enabled" in banner.inner_text()
        assert "jupyter server extension enable jupyter_cake.server" in banner.inner_text()
        panel.screenshot(path=str(artifacts / "panel-extension-disabled.png"))

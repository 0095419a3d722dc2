"""The in-cell run header of a ``%%cake`` cell: target, state, elapsed time and a Cancel button while it
runs; one line (target, duration, exit) when it ends.

It is one display output, shown before the cell's own outputs and updated in place, whose bundle
carries both the ipywidgets view and a ``text/plain`` line. Frontends that render widgets (JupyterLab,
Notebook 7, VS Code) show the widget; any other (nbconvert, a frontend without the widget manager)
shows the plain line — never a raw widget repr like ``HBox(children=...)``.

When it appears: only for cells sent by an interactive frontend, recognised by the ``cellId`` it puts
in the execute request's metadata. Batch runners (nbclient, papermill) and plain IPython send none, and
their outputs stay exactly what the cell produced. ``CAKE_RUN_WIDGET=on`` / ``off`` forces it.

The Cancel button: the notebook kernel is busy following the run while the cell executes, so a widget
click reaches it only once the cell is over. Cake's JupyterLab extension therefore routes the click
(the button carries ``cake-run-cancel cake-run-<run id>`` classes) to the server's interrupt API; the
kernel-side handler still interrupts when the kernel does get the click in time (frontends that
deliver comm messages to a busy kernel).
"""

from __future__ import annotations

import html
import os
import time
from typing import Any

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
UPDATE_EVERY_S = 1.0
ICONS = {"ok": "✓", "error": "✗", "cancelled": "■", "timeout": "⏱"}


def wanted(shell: Any) -> bool:
    """Whether this cell gets a run header (see the module docstring)."""
    setting = os.environ.get("CAKE_RUN_WIDGET", "auto").lower()
    if setting in ("0", "off", "no", "false"):
        return False
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False  # plain IPython: no display outputs to update in place
    if setting in ("1", "on", "yes", "true"):
        return True
    try:
        return bool(kernel.get_parent().get("metadata", {}).get("cellId"))
    except AttributeError:
        return False


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class RunHeader:
    """Create with the target label, then ``running(run_id, cancel)``, ``tick()`` from the follow
    loop, and ``finish(exit)`` once (exit: ok | error | cancelled | timeout)."""

    def __init__(self, target: str, state: str = "starting") -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.target, self.state, self.run_id = target, state, ""
        self.started = time.monotonic()
        self._last = 0.0
        self._cancel: Any = None
        self.label = widgets.HTML()
        self.button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                     tooltip="Interrupt the remote cell (the session keeps its state)",
                                     layout=widgets.Layout(width="auto"))  # fmt: skip
        self.button.add_class("cake-run-cancel")
        self.button.on_click(lambda _: self.cancel())
        self.box = widgets.HBox([self.label, self.button], layout=widgets.Layout(align_items="center"))
        self.box.add_class("cake-run-header")
        self._render()
        self.handle = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def _text(self) -> str:
        elapsed = _elapsed(time.monotonic() - self.started)
        run = f" · run {self.run_id}" if self.run_id else ""
        if self.state in ICONS:
            return f"[cake] {ICONS[self.state]} {self.target} · {elapsed} · {self.state}{run}"
        if self.state == "starting":  # the session may still be starting (a --target cell): no clock yet
            return f"[cake] {self.target} · starting…"
        return f"[cake] {self.target} · {self.state} · {elapsed}{run}"

    def _render(self) -> None:
        self.label.value = f"<span class='cake-run-label'>{html.escape(self._text())}</span>"

    def _bundle(self) -> dict[str, Any]:
        return {
            "text/plain": self._text(),
            WIDGET_MIME: {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id},
        }

    def running(self, run_id: str, cancel: Any) -> None:
        self.run_id, self.state, self._cancel = run_id, "running", cancel
        self.started = time.monotonic()  # elapsed counts the run, not the session start
        self.button.add_class(f"cake-run-{run_id}")
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= UPDATE_EVERY_S:
            self._last = now
            self._render()

    def cancel(self) -> None:
        if self._cancel is not None and self.state == "running":
            self.button.disabled = True
            self.button.description = "Cancelling…"
            self._cancel()

    def finish(self, exit_state: str) -> None:
        """Collapse to one line: target, duration, exit."""
        self.state = exit_state
        self._render()
        self.box.children = (self.label,)
        self.button.close()
        self.handle.update(self._bundle(), raw=True)


def start(shell: Any, target: str, state: str = "starting") -> RunHeader | None:
    """A run header for this cell, or None where none is wanted (or ipywidgets is missing)."""
    if not wanted(shell):
        return None
    try:
        return RunHeader(target, state)
    except ImportError:
        return None

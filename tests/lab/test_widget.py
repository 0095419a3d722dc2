"""The in-cell run header under nbclient (a frontend that renders no widgets): a plain-text line, never a
widget repr; and no header at all unless asked for, so batch runs keep exactly the cell's outputs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from helpers import Notebook, local_session, text


@pytest.fixture(scope="module")
def forced() -> Iterator[Notebook]:
    """A notebook kernel started with CAKE_RUN_WIDGET=on (as if an interactive frontend sent the cells)."""
    with local_session("widget-tests", CAKE_RUN_WIDGET="on") as nb:
        yield nb


def _headers(cell: object) -> list[dict]:
    return [o for o in cell.outputs if o.output_type == "display_data" and "application/vnd.jupyter.widget-view+json" in o.data]  # type: ignore[attr-defined]


def test_header_falls_back_to_one_plain_line_with_target_duration_and_exit(forced: Notebook) -> None:
    cell = forced.run("%%cake\nprint('hello')\n6 * 7")
    [header] = _headers(cell)
    assert cell.outputs[0] is header  # above the cell's own outputs
    plain = header.data["text/plain"]
    assert plain.startswith("[cake] ✓ local · ") and " · ok · run r-" in plain, plain
    assert "HBox" not in str(cell.outputs) and "Button(" not in str(cell.outputs)
    assert text(cell) == "hello\n"
    assert [o.data["text/plain"] for o in cell.outputs if o.output_type == "execute_result"] == ["42"]


def test_header_says_error_and_cancelled(forced: Notebook) -> None:
    forced.fails("%%cake\n1 / 0")
    [header] = _headers(forced.nb.cells[-1])
    assert " · error · " in header.data["text/plain"]

    timer = threading.Timer(1.5, forced.interrupt)  # the notebook's stop button
    timer.start()
    forced.fails("%%cake\nimport time\ntime.sleep(30)")
    [header] = _headers(forced.nb.cells[-1])
    assert header.data["text/plain"].startswith("[cake] ■ local") and "cancelled" in header.data["text/plain"]


def test_header_of_a_cell_on_another_target(forced: Notebook) -> None:
    cell = forced.run("%%cake --target local --cpus 1\nprint('elsewhere')")
    [header] = _headers(cell)
    assert header.data["text/plain"].startswith("[cake] ✓ local · 1 CPU · ") and " · ok · " in header.data["text/plain"]
    assert "elsewhere\n" in text(cell)
    forced.run("%cake down 'local --cpus 1'")


def test_no_header_for_batch_runs(fresh_notebook: Notebook) -> None:
    """nbclient sends no cellId: outputs are exactly the cell's (what test_notebook.py relies on)."""
    fresh_notebook.run("%cake use local --name widget-tests-batch")
    try:
        cell = fresh_notebook.run("%%cake\nprint('plain')")
        assert [o.output_type for o in cell.outputs] == ["stream"] and text(cell) == "plain\n"
    finally:
        fresh_notebook.run("%cake down")

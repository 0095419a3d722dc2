"""Helpers shared by test modules in every folder: live notebooks through nbclient, process checks.

(Kept out of conftest.py so that test folders with a conftest.py of their own can import them.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for what runs inside (kernels started then inherit them); restore after."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def nanny_pids(data_dir: Path) -> set[int]:
    """Nanny processes started under this test store (what 'nothing left running' checks)."""
    wanted = ["-m", "jupyter_cake.nanny", "--session-dir"]
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not a process, or it just exited
            continue
        if argv[1:4] == wanted and argv[4].startswith(str(data_dir)):
            pids.add(int(proc.name))
    return pids


class Recorder(NotebookClient):
    """nbclient that also keeps every iopub message with the local time it arrived."""

    received: list[tuple[float, dict[str, Any]]]

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.received.append((time.time(), msg))
        return super().process_message(msg, cell, cell_index)


@dataclass
class Notebook:
    """A live notebook: cells run one by one in the same kernel, like a user clicking Run."""

    client: Recorder
    nb: Any
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def run(self, source: str, timeout: float = 120) -> Any:
        """Execute one cell; return it (outputs applied as a frontend would). Raises on cell error."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.received = []
        self.client.timeout = timeout
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def fails(self, source: str, timeout: float = 120) -> str:
        """Execute a cell that must fail; return the error text nbclient reports."""
        from nbclient.exceptions import CellExecutionError

        with pytest.raises(CellExecutionError) as info:
            self.run(source, timeout)
        return str(info.value)

    @property
    def kernel_pid(self) -> int:
        return int(self.client.km.provisioner.process.pid)

    def interrupt(self) -> None:
        os.kill(self.kernel_pid, signal.SIGINT)  # what the notebook's stop button does for ipykernel

    def close(self) -> None:
        self.stack.close()


def text(cell: Any, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == name)


def open_notebook(cwd: Path | None = None) -> Notebook:
    nb = nbformat.v4.new_notebook()
    client = Recorder(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd or ROOT)}})
    client.received = []
    notebook = Notebook(client, nb)
    notebook.stack.enter_context(client.setup_kernel())
    notebook.run("%load_ext jupyter_cake")
    return notebook

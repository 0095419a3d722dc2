"""Shared fixtures: an isolated Cake store, and notebooks executed for real through nbclient.

Every test runs real kernels: nbclient starts an ipykernel for the "notebook", the magics start a Cake
session (nanny + another ipykernel) on the local target. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def cake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One private store for the whole test run; kernels started by tests inherit it."""
    path = tmp_path_factory.mktemp("cake-data")
    old = {k: os.environ.get(k) for k in ("CAKE_DATA_DIR", "CAKE_CONFIG")}
    os.environ["CAKE_DATA_DIR"] = str(path)
    os.environ["CAKE_CONFIG"] = str(path / "targets.toml")
    yield path
    subprocess.run([sys.executable, "-m", "jupyter_cake.cli", "down", "--all"], capture_output=True, check=False)
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


@pytest.fixture(scope="module")
def notebook() -> Iterator[Notebook]:
    """One notebook kernel with a `local` Cake session, shared by a module's tests (as a user would)."""
    nb = open_notebook()
    nb.run("%cake use local --name tests")
    yield nb
    with contextlib.suppress(Exception):
        nb.run("%cake down")
    nb.close()


@pytest.fixture
def fresh_notebook() -> Iterator[Notebook]:
    nb = open_notebook()
    yield nb
    nb.close()

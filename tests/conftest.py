"""Shared fixtures: an isolated Cake store, and notebooks executed for real through nbclient.

Every test runs real kernels: nbclient starts an ipykernel for the "notebook", the magics start a Cake
session (nanny + another ipykernel) on the local target. Nothing is mocked.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Notebook, environment, local_session, nanny_pids, open_notebook, text

__all__ = ["Notebook", "environment", "nanny_pids", "open_notebook", "text"]


@pytest.fixture(scope="session", autouse=True)
def cake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One private store for the whole test run; kernels started by tests inherit it."""
    path = tmp_path_factory.mktemp("cake-data")
    with environment(CAKE_DATA_DIR=str(path), CAKE_CONFIG=str(path / "targets.toml")):
        yield path
        subprocess.run([sys.executable, "-m", "jupyter_cake.cli", "down", "--all"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def notebook() -> Iterator[Notebook]:
    """One notebook kernel with a `local` Cake session, shared by a module's tests (as a user would)."""
    with local_session("tests") as nb:
        yield nb


@pytest.fixture
def fresh_notebook() -> Iterator[Notebook]:
    with open_notebook() as nb:
        yield nb

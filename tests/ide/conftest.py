"""Fixtures of the IDE tests: private Jupyter dirs with a Cake kernelspec installed by `cake kernel install`.

The root conftest's autouse ``cake_data_dir`` already gives every process of the run a private Cake store.
Everything here is real: kernelspecs on disk, jupyter_client launching them, proxies, nannies, kernels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import environment
from ide_util import cake

KERNEL = "cake-test-local"


@pytest.fixture(scope="session")
def ide_env(tmp_path_factory: pytest.TempPathFactory, cake_data_dir: Path) -> Iterator[dict[str, str]]:
    """Private Jupyter data/runtime/config dirs, so kernelspecs never land in the user's own."""
    root = tmp_path_factory.mktemp("jupyter")
    values = {
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_PATH": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        # Notice a session that ended under a connected kernel within a second, not five.
        "CAKE_IDE_LIVENESS_S": "0.5",
    }
    with environment(**values):
        yield dict(os.environ)


@pytest.fixture(scope="session")
def cake_kernel(ide_env: dict[str, str]) -> str:
    """A kernelspec for the local target, installed the way a user does it."""
    result = cake("kernel", "install", "local", "--name", KERNEL, env=ide_env)
    assert result.returncode == 0, result.stderr
    return KERNEL

"""Fixtures of the JupyterLab tests: a real `jupyter lab` server (see lab_util.py) and Debian's chromium
for pytest-playwright.

The root conftest's autouse ``cake_data_dir`` gives the server (and every kernel it starts) the test
store. Nothing is mocked: sessions are real nannies + kernels on the local target.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_util import ARTIFACTS, CHROMIUM, LABEXTENSION, Lab, lab_server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, cake_data_dir: Path) -> Iterator[Lab]:
    with lab_server(tmp_path_factory.mktemp("lab")) as server:
        yield server


# -- pytest-playwright with Debian's chromium (Playwright's own browser download can't work here) -------
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (tools/test.sh does it as root)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"],
    }  # fmt: skip


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def built_labextension() -> None:
    """For the browser tests: the side panel must be built (tools/test.sh builds it from labextension/)."""
    if not (LABEXTENSION / "package.json").exists():
        pytest.fail("the labextension is not built: cd labextension && npm ci && npm run build:prod (tools/test.sh does it)")

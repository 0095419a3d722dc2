"""Ray tests: nothing of Ray may outlive its session. Heads started by this test run are found by
their token path (inside this run's private Cake store), stopped by process group, and reported."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenarios import ray_heads


@pytest.fixture(scope="package", autouse=True)
def no_ray_left_behind(cake_data_dir: Path) -> Iterator[None]:
    yield
    left = ray_heads(cake_data_dir)
    for pid in left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"Ray heads outlived their sessions (stopped now): {sorted(left)}"

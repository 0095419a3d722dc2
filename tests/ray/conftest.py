"""Ray tests: nothing of Ray may outlive its session. Heads started by this test run are found by
their token path (inside this run's private Cake store), stopped by process group, and reported."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def ray_heads(data_dir: Path) -> set[int]:
    """PIDs of `ray start --head` processes whose session directory is in ``data_dir``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"ray.scripts.scripts" not in argv or b"--head" not in argv:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        token = next((e.split(b"=", 1)[1] for e in environ if e.startswith(b"RAY_AUTH_TOKEN_PATH=")), b"")
        if token.decode(errors="replace").startswith(str(data_dir)):
            pids.add(int(proc.name))
    return pids


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

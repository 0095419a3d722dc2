"""SkyPilot for real on the local Slurm cluster (tests/infra/slurm-up.sh, sky-venv.sh, sky-up.sh;
`make test` runs them). Cake reaches SkyPilot only through its bridge, with CAKE_SKY_PYTHON naming
the interpreter of the separate .venv-sky; the test venv never imports sky."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sky_infra import SKY, SKY_PYTHON, SLURM_ROOT, sky_clusters, sky_jobs_in_slurm

from helpers import environment
from jupyter_cake.manager import Cake


@pytest.fixture(scope="session")
def sky_ready() -> Iterator[Path]:
    if not SKY_PYTHON.exists():
        pytest.fail(
            f"No test SkyPilot: {SKY_PYTHON} is missing. Run tests/infra/sky-venv.sh and "
            "sudo tests/infra/sky-up.sh after tests/infra/slurm-up.sh (`make test` does all three)."
        )
    os.environ["SLURM_CONF"] = str(SLURM_ROOT / "etc" / "slurm.conf")
    yield SKY
    # Nothing may outlive the tests: sessions, clusters, Slurm allocations, or the API server they started.
    # Sessions the tests left "running" in the store (e.g. the one whose kernel was stopped to test re-use)
    # are taken down now, while the API server still runs, not by the final `cake down --all`.
    cake = Cake()
    with environment(CAKE_SKY_PYTHON=str(SKY_PYTHON)):
        for row in cake.store.sessions(live_only=True):
            if row.backend == "sky":
                with contextlib.suppress(Exception):
                    cake.down(row)
    left = sky_clusters()
    for name in left:
        subprocess.run([str(SKY / "sky"), "down", "-y", name], capture_output=True, timeout=300)
    deadline = time.time() + 30
    while sky_jobs_in_slurm() and time.time() < deadline:
        time.sleep(1)
    jobs = sky_jobs_in_slurm()
    subprocess.run([str(SKY / "sky"), "api", "stop"], capture_output=True, timeout=120)
    assert not left, f"tests left SkyPilot clusters behind: {left}"
    assert not jobs, f"tests left Slurm allocations behind: {jobs}"


@pytest.fixture(scope="module")
def sky_env(sky_ready: Path) -> Iterator[None]:
    """While a module of tests/sky runs, Cake finds SkyPilot through CAKE_SKY_PYTHON (kernels started
    in the module inherit it); other test folders see a machine without SkyPilot."""
    with environment(CAKE_SKY_PYTHON=str(SKY_PYTHON)):
        yield

"""The real local Slurm cluster brought up by tests/infra/slurm-up.sh (`make test` does it).

Named targets for the tests: `hpc` reaches the cluster through the key-only sshd on 127.0.0.1 acting
as login node (host alias cake-login); `hpc-local` uses this machine as the login node (sbatch on PATH).
The remote Python is this venv's (it has ipykernel and cloudpickle, as a cluster's Python would).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_jobs import SLURM_ROOT, SSH_CONFIG, squeue_jobs


@pytest.fixture(scope="session")
def slurm(cake_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    env_file = SLURM_ROOT / "env.sh"
    if not env_file.exists():
        pytest.fail(f"No local Slurm cluster: run `sudo tests/infra/slurm-up.sh` first (`make test` does). {env_file} is missing.")
    os.environ["SLURM_CONF"] = str(SLURM_ROOT / "etc" / "slurm.conf")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        pytest.fail(f"The local Slurm controller is not up ({ping.stdout.strip() or ping.stderr.strip()}); run tests/infra/slurm-up.sh.")
    bare = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = sys.executable
    ssh = {"ssh_config": str(SSH_CONFIG)}  # through the login node's sshd
    targets: dict[str, dict[str, str]] = {
        "hpc": {"infra": "slurm/cake-login/debug", "python": python, **ssh},
        "hpc-local": {"infra": "slurm/cakecluster/debug", "python": python},
        "hpc-unreachable": {"infra": "slurm/cake-unreachable", **ssh},
        "hpc-badkey": {"infra": "slurm/cake-badkey", **ssh},
        "hpc-nopython": {"infra": "slurm/cake-login/debug", "python": "/nonexistent/python3", **ssh},
        "hpc-noipykernel": {"infra": "slurm/cake-login/debug", "python": str(bare / "bin" / "python"), **ssh},
    }
    config = "".join(
        f"\n[targets.{name}]\n" + "".join(f'{key} = "{value}"\n' for key, value in fields.items())
        for name, fields in targets.items()
    )
    Path(os.environ["CAKE_CONFIG"]).write_text(config)
    before = squeue_jobs()
    yield SLURM_ROOT
    deadline = time.time() + 20  # cancelled jobs linger a moment in COMPLETING
    while (leftover := squeue_jobs() - before) and time.time() < deadline:
        time.sleep(0.5)
    subprocess.run(["scancel", *leftover], capture_output=True)
    assert not leftover, f"tests left Slurm jobs behind: {sorted(leftover)}"


@pytest.fixture(autouse=True)
def show_queue_on_failure() -> Iterator[None]:
    """The queue before each test, in the captured output that pytest prints when the test fails."""
    out = subprocess.run(["squeue", "-o", "%i %j %T %r %M"], capture_output=True, text=True)
    print("queue before the test:\n" + out.stdout)
    yield

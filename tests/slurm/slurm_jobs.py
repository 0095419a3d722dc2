"""Queries of the local test cluster's queue."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SLURM_ROOT = Path(os.environ.get("CAKE_SLURM_ROOT", "/tmp/cake-slurm"))
SSH_CONFIG = SLURM_ROOT / "ssh" / "ssh_config"


def squeue_jobs() -> set[str]:
    """Cake's and the tests' jobs that hold or wait for resources (a cancelled job may linger a moment
    as COMPLETING; other users' jobs on the cluster are none of the tests' business)."""
    out = subprocess.run(["squeue", "-h", "-t", "PENDING,CONFIGURING,RUNNING", "-o", "%i %j"], capture_output=True, text=True, timeout=30)
    return {job for job, name in (line.split(maxsplit=1) for line in out.stdout.splitlines()) if name.startswith("cake-")}

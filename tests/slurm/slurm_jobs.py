"""Queries of the local test cluster's queue."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SLURM_ROOT = Path(os.environ.get("CAKE_SLURM_ROOT", "/tmp/cake-slurm"))
SSH_CONFIG = SLURM_ROOT / "ssh" / "ssh_config"


def squeue_jobs() -> set[str]:
    """Jobs that hold or wait for resources (a cancelled job may linger a moment as COMPLETING)."""
    out = subprocess.run(["squeue", "-h", "-t", "PENDING,CONFIGURING,RUNNING", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return set(out.stdout.split())

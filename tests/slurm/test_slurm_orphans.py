"""A start killed half-way on the real Slurm cluster (tests/infra/slurm-up.sh) leaves no job behind: the
job's name (`cake-<session id>`) is in the store before sbatch runs, so the job is found by it and cancelled."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import cake_cli, kill_starting
from slurm_jobs import squeue_jobs

pytestmark = pytest.mark.usefixtures("slurm")


def _queued(row: Any) -> list[str]:
    """Ids of the session's job in the queue, found by its name as a user would."""
    out = subprocess.run(["squeue", "-h", "-n", f"cake-{row.id}", "-o", "%i"], check=False, capture_output=True, text=True, timeout=30)
    return out.stdout.split()


def test_down_cancels_the_job_of_a_start_killed_before_sbatch_answered(tmp_path: Path) -> None:
    """Slurm accepted the job but its answer (the job id) never reached the starter, as when the SSH call
    timed out; then the starter was killed. `cake down NAME` finds the job by its name and cancels it."""
    hang = tmp_path / "bin"
    hang.mkdir()
    sbatch = hang / "sbatch"  # the real sbatch, whose answer then hangs like a stuck SSH connection
    sbatch.write_text(f"#!/bin/sh\n{shutil.which('sbatch')} \"$@\" || exit $?\nexec sleep 300\n")
    sbatch.chmod(0o755)
    env = {"PATH": f"{hang}:{os.environ['PATH']}"}
    row = kill_starting("orphan-sbatch", lambda r: bool(_queued(r)), "--target", "hpc-local", cwd=tmp_path, env=env)
    job = _queued(row)[0]
    assert "job_id" not in row.allocation_data  # the starter never learnt the job's id
    down = cake_cli("down", "orphan-sbatch")
    assert down.returncode == 0 and "is down: its start was interrupted" in down.stdout, down
    assert job not in squeue_jobs(), f"job {job} of the killed start is still in the queue"


def test_status_cancels_the_job_of_a_start_killed_after_sbatch_over_ssh(tmp_path: Path) -> None:
    """Over SSH to the login node: the starter killed right after sbatch was accepted. The next `cake status`
    sees the starter is gone, cancels the job and shows the start failed."""
    row = kill_starting("orphan-ssh", lambda r: bool(_queued(r)), "--target", "hpc", cwd=tmp_path)
    job = _queued(row)[0]
    status = cake_cli("status", "--all")
    line = next((ln for ln in status.stdout.splitlines() if ln.startswith(row.id)), status.stdout)
    assert job not in squeue_jobs(), f"job {job} of the killed start is still in the queue after `cake status`"
    assert "failed" in line and "start was interrupted" in line, line

"""Ray on the local Slurm cluster (tests/infra/slurm-up.sh: one node, partition debug), reached over
SSH through the login alias cake-login as a laptop would reach a real cluster: the head starts in
the allocation next to the kernel, the dashboard comes back through an SSH port forward."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import scenarios
from helpers import Notebook, open_notebook, text

SLURM_ROOT = Path(os.environ.get("CAKE_SLURM_ROOT", "/tmp/cake-slurm"))
SSH_CONFIG = SLURM_ROOT / "ssh" / "ssh_config"
NAME = "ray-slurm"
TARGET_LINE = f"slurm/cake-login/debug --ray --option python={sys.executable} --option ssh_config={SSH_CONFIG}"
TARGET = ["--target", TARGET_LINE, "--name", NAME]


def _cake_jobs() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=30).stdout
    return {job for job, name in (line.split(maxsplit=1) for line in out.splitlines()) if name.startswith("cake-")}


@pytest.fixture(scope="module")
def nb(cake_data_dir: Path) -> Iterator[Notebook]:
    if not (SLURM_ROOT / "env.sh").exists():
        pytest.fail(f"No local Slurm cluster: run `sudo tests/infra/slurm-up.sh` first. {SLURM_ROOT}/env.sh is missing.")
    os.environ["SLURM_CONF"] = str(SLURM_ROOT / "etc" / "slurm.conf")
    before = _cake_jobs()
    notebook = open_notebook()
    try:
        cell = notebook.run(f"%cake use {TARGET_LINE} --name {NAME} --timeout 300", timeout=400)
        assert re.search(r"Ray 2\.\d+\.\d+ is up at 127\.0\.0\.1:\d+", scenarios.shown(cell)), scenarios.shown(cell)
        yield notebook
    finally:
        with contextlib.suppress(Exception):
            notebook.run("%cake down", timeout=120)
        notebook.close()
        deadline = time.time() + 30  # a cancelled job lingers a moment in COMPLETING
        while (left := _cake_jobs() - before) and time.time() < deadline:
            time.sleep(0.5)
        assert not left, f"the Ray session left Slurm jobs behind: {sorted(left)}"


def test_cell_tasks_stream_worker_prints_into_the_cell(nb: Notebook) -> None:
    scenarios.tasks_stream_worker_output(nb)


def test_actor_keeps_state_across_cells(nb: Notebook) -> None:
    scenarios.actor_keeps_state(nb)


def test_ray_runs_inside_the_allocation(nb: Notebook) -> None:
    cell = nb.run("%%cake\nimport os\nprint(os.environ.get('SLURM_JOB_ID'), ray.get_runtime_context().get_node_id() != '')")
    job, in_ray = text(cell).split()
    assert job.isdigit() and in_ray == "True"
    scenarios.ray_address_is_set(nb, loopback=True)  # one node: Ray's single-node mode on the node


def test_dashboard_answers_through_the_ssh_forward(nb: Notebook) -> None:
    scenarios.dashboard_answers(nb)


def test_cake_run_ray_ctrl_c_stops_the_job(nb: Notebook, tmp_path: Path) -> None:
    url, token = scenarios.dashboard_answers(nb)
    scenarios.cake_run_ctrl_c_stops_the_job(tmp_path, TARGET, url, token)


def test_cake_run_ray_exit_codes(nb: Notebook, tmp_path: Path) -> None:
    scenarios.cake_run_exit_codes(tmp_path, TARGET)

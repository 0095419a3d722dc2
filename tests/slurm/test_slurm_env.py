"""`--env` on the real Slurm cluster: the kernel (and the target's `setup`) see the value; the batch
script Slurm keeps, the local job.sbatch and `scontrol show job` never do. The value travels over the
SSH channel into a 0600 file in the remote session directory."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import files_containing, open_notebook, text
from slurm_jobs import SSH_CONFIG
from jupyter_cake.store import SESSION_ENV_FILE, Store

pytestmark = pytest.mark.usefixtures("slurm")


def test_env_values_reach_the_kernel_and_setup_but_never_the_script(cake_data_dir: Path) -> None:
    secret = "s3cr3t-" + secrets.token_hex(12)
    # `setup` runs in the job before the kernel: it must see the value too (module loads, logins...).
    with open(os.environ["CAKE_CONFIG"], "a") as config:
        config.write('\n[targets.hpc-env]\ninfra = "slurm/cake-login/debug"\n'
                     f'python = "{sys.executable}"\nssh_config = "{SSH_CONFIG}"\n'
                     'setup = "export CAKE_TEST_LEN=${#CAKE_TEST_SECRET}"\n')  # fmt: skip
    with open_notebook() as nb:
        nb.run(f"%cake use hpc-env --env CAKE_TEST_SECRET={secret} --name slurm-env --new")
        try:
            cell = nb.run('%%cake\nimport os\nprint(os.environ["CAKE_TEST_SECRET"][::-1], os.environ["CAKE_TEST_LEN"])')
            assert text(cell) == f"{secret[::-1]} {len(secret)}\n"

            row = Store().live_session("slurm-env", "")
            assert row is not None
            job = str(row.allocation_data["job_id"])
            script = subprocess.run(["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True, timeout=30, check=False)
            assert script.returncode == 0 and "CAKE_TEST_SECRET" in script.stdout, script.stderr
            shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30, check=False)
            assert shown.returncode == 0 and job in shown.stdout
            for what in (script.stdout, shown.stdout, (Path(row.session_dir) / "job.sbatch").read_text()):
                assert secret not in what

            # On the cluster: a 0600 file in the session directory, only that user's.
            remote = f"{row.allocation_data['session_remote']}/env.sh"
            mode = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "cake-login", "stat", "-c", "%a", remote],
                                  capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
            assert mode.stdout.strip() == "600", mode.stderr
            # Here: only the session's own env file has it.
            found = files_containing(cake_data_dir, secret.encode())
            assert found == [Path(row.session_dir) / SESSION_ENV_FILE]
        finally:
            nb.run("%cake down")

"""The sbatch script of a `--ray` session: golden files for one and several nodes (the multi-node
path — one Ray worker per other node via srun — can't run on the one-node test cluster), the quoting
of the spec of the nanny's Ray service, and the Ray modules shipped with the nanny."""

from __future__ import annotations

import base64
import io
import json
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import assert_matches_golden, sbatch_script
from jupyter_cake.backends.slurm.script import nanny_archive
from jupyter_cake.ray import REMOTE_MODULES, versions, worker

GOLDEN = Path(__file__).parent / "golden"
CLIENT = {"host": "laptop", "python": "3.11.7", "ray": "2.60.0"}  # fixed: goldens don't depend on this machine


@pytest.fixture(autouse=True)
def _client_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray spec carries this machine's versions (checked against the cluster's): fix them."""
    monkeypatch.setattr(versions, "local_versions", lambda: dict(CLIENT))


@pytest.mark.parametrize(
    ("name", "spec", "named"),
    [
        ("ray_one_node", "slurm/hpc/gpu --gpus T4:1 --ray", {}),
        ("ray_four_nodes", "t", {"infra": "slurm/hpc/gpu", "gpus": "A100:8", "nodes": 4, "cpus": 32, "ray": True,
                                 "python": "/opt/py/bin/python3", "setup": "module load cuda/12.4"}),
    ],
)  # fmt: skip
def test_ray_scripts_match_golden_files(name: str, spec: str, named: dict[str, object]) -> None:
    script = sbatch_script(spec, **named)
    assert_matches_golden(script, GOLDEN / f"{name}.sbatch")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def _ray_spec(argv: list[str]) -> dict[str, object]:
    """The spec of the nanny's Ray service: ``--service ray jupyter_cake.ray.head SPEC``."""
    at = argv.index("--service")
    assert argv[at + 1 : at + 3] == ["ray", "jupyter_cake.ray.head"]
    spec: dict[str, object] = json.loads(argv[at + 3])
    return spec


def _nanny_argv(script: str) -> list[str]:
    """The nanny's srun command as bash would split it."""
    line = script[script.index("exec srun") :].replace("\\\n", " ")
    return shlex.split(line.split("\n", 1)[0].replace('"$SLURM_JOB_ID"', "42"))


def test_single_node_runs_ray_on_loopback_without_workers() -> None:
    script = sbatch_script("slurm/hpc --ray")
    argv = _nanny_argv(script)
    ray = _ray_spec(argv)
    assert ray["mode"] == "loopback" and ray["nodes"] == 1 and ray["check"] is True
    assert "jupyter_cake.ray.worker" not in script and "--nodelist" not in script


def test_multi_node_starts_one_worker_per_other_node_and_pins_the_nanny_to_the_head() -> None:
    script = sbatch_script("slurm/hpc --nodes 3 --ray --option ray_check=off")
    workers = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--nodes=2 --ntasks=2 --ntasks-per-node=1" in workers and '--exclude="$HEAD_NODE"' in workers
    assert script.index("jupyter_cake.ray.worker") < script.index("exec srun")  # workers first, in the background
    assert '--nodelist="$HEAD_NODE"' in script[script.index("exec srun") :]
    argv = _nanny_argv(script)
    ray = _ray_spec(argv)
    assert ray["mode"] == "cluster" and ray["nodes"] == 3 and ray["check"] is False


def test_worker_command_sets_the_node_address_and_the_allocations_cpus() -> None:
    argv = worker.command("/opt/py/bin/python3", "10.1.2.3:6379", "10.1.2.4", "16")
    assert argv == ["/opt/py/bin/python3", "-m", "ray.scripts.scripts", "start", "--address=10.1.2.3:6379",
                    "--node-ip-address=10.1.2.4", "--block", "--disable-usage-stats", "--num-cpus=16"]  # fmt: skip
    assert "--num-cpus" not in " ".join(worker.command("python3", "10.1.2.3:6379", "10.1.2.4", None))


def test_nanny_archive_ships_the_ray_modules_and_they_need_only_the_standard_library(tmp_path: Path) -> None:
    archive, _ = nanny_archive()
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive)), mode="r:gz") as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    assert {f"jupyter_cake/ray/{name}" for name in REMOTE_MODULES} <= names
    assert "jupyter_cake/ray/session.py" not in names  # client side only
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import jupyter_cake.ray.head, jupyter_cake.ray.worker, jupyter_cake.ray.kernel_hooks; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'zmq', 'IPython'))))")  # fmt: skip
    out = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

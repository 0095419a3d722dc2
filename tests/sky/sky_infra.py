"""The SkyPilot set up by tests/infra/sky-venv.sh + sky-up.sh on the local Slurm cluster, and queries of it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SLURM_ROOT = Path(os.environ.get("CAKE_SLURM_ROOT", "/tmp/cake-slurm"))
SKY = SLURM_ROOT / "sky"
SKY_PYTHON = SKY / "python"  # .venv-sky's python with the test SkyPilot HOME (see sky-up.sh)
NODE_PYTHON = SKY / "node-python" / "bin" / "python"
SKY_USER = os.environ.get("CAKE_SKY_USER", "cakesky")
# The local Slurm cluster through SkyPilot (Host cakecluster in the test ~/.slurm/config). One CPU and
# 2 GB: SkyPilot would ask 4 CPUs and 16 GB per GPU, more than this 2-core machine has.
TARGET = f"slurm/cakecluster/debug --via sky --cpus 1 --memory 2 --option python={NODE_PYTHON}"


def sky_clusters() -> list[str]:
    """Cluster names `sky status` shows, asked through SkyPilot's own SDK."""
    code = "import json, sky; print(json.dumps([r['name'] for r in sky.get(sky.status())]))"
    done = subprocess.run([str(SKY_PYTHON), "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def sky_jobs_in_slurm() -> list[str]:
    """Slurm jobs of SkyPilot's login user (its clusters are sbatch allocations)."""
    out = subprocess.run(["squeue", "-h", "-u", SKY_USER, "-o", "%i %j %T"], capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line.strip()]


def forge(known: Path, host: str, workdir: Path) -> str:
    """Replace the key recorded for ``host`` with a freshly generated one of the same type, as an
    impostor's would be; returns the original text to restore."""
    original = known.read_text()
    if not (workdir / "impostor.pub").exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "impostor")], check=True, timeout=30)
    fake = (workdir / "impostor.pub").read_text().split()[1]
    lines = [f"{host} ssh-ed25519 {fake}" if line.split(" ", 1)[0] == host else line for line in original.splitlines()]
    assert lines != original.splitlines(), f"no key recorded for {host}"
    known.write_text("\n".join(lines) + "\n")
    return original

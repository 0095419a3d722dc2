"""`cake kernel install / list / remove`: kernelspecs any Jupyter frontend can pick."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ide_util import cake
from jupyter_client.kernelspec import KernelSpecManager


def test_install_list_remove(ide_env: dict[str, str], tmp_path: Path) -> None:
    installed = cake("kernel", "install", "local", "--gpus", "A100:1", "--cpus", "4", env=ide_env)
    assert installed.returncode == 0, installed.stderr
    assert "Installed kernelspec 'cake-local-a100-1' (Python 3 (Cake: local · A100:1 · 4 CPU))" in installed.stdout

    spec = KernelSpecManager().get_kernel_spec("cake-local-a100-1")
    assert spec.display_name == "Python 3 (Cake: local · A100:1 · 4 CPU)"  # target and GPUs, in every picker
    assert spec.interrupt_mode == "message" and spec.language == "python"
    assert spec.argv == [sys.executable, "-m", "jupyter_cake.ide_bridge.kernel", "-f", "{connection_file}",
                         "--target", "local --gpus A100:1 --cpus 4", "--name", "cake-local-a100-1",
                         "--on-shutdown", "down"]  # fmt: skip
    assert Path(spec.resource_dir, "logo-64x64.png").exists()

    # A named target stays a name, so edits to targets.toml apply at the next launch.
    config = Path(os.environ["CAKE_CONFIG"])
    config.write_text('[targets.gpu-box]\ninfra = "local"\ncpus = "2"\n')
    try:
        named = cake("kernel", "install", "gpu-box", "--name", "box", "--on-shutdown", "keep", env=ide_env)
        assert named.returncode == 0, named.stderr
        assert "Python 3 (Cake: gpu-box (local) · 2 CPU)" in named.stdout
    finally:
        config.unlink()

    # Elsewhere than the user's data dir.
    prefixed = cake("kernel", "install", "local", "--name", "in-prefix", "--prefix", str(tmp_path), env=ide_env)
    assert prefixed.returncode == 0, prefixed.stderr
    kernel_json = tmp_path / "share" / "jupyter" / "kernels" / "in-prefix" / "kernel.json"
    assert json.loads(kernel_json.read_text())["metadata"]["cake"] == {"target": "local", "on_shutdown": "down"}

    listing = cake("kernel", "list", env=ide_env).stdout
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "cake-local-a100-1" in rows and "local --gpus A100:1 --cpus 4" in rows["cake-local-a100-1"]
    assert "box" in rows and "keep" in rows["box"]
    assert "python3" not in rows  # only Cake's

    removed = cake("kernel", "remove", "cake-local-a100-1", "box", env=ide_env)
    assert removed.returncode == 0 and removed.stdout.count("Removed kernelspec") == 2
    listing = cake("kernel", "list", env=ide_env).stdout
    assert "cake-local-a100-1" not in listing and "box " not in listing


def test_bad_input_is_explained(ide_env: dict[str, str]) -> None:
    for args, expected in (
        (["install"], "Which target?"),
        (["install", "slrum/hpc"], "slurm"),
        (["install", "aws/us-east-1", "--gpus", "A100:1"], "goes through SkyPilot, which is not installed here"),
        (["install", "local", "--name", "no spaces!"], "is not allowed"),
        (["install", "local", "--on-shutdown", "later"], "down, keep"),
        (["install", "local", "--user", "--sys-prefix"], "only one of"),
        (["remove", "python3"], "not a Cake kernelspec"),
        (["remove", "nope"], "No kernelspec named 'nope'"),
    ):
        result = cake("kernel", *args, env=ide_env)
        assert result.returncode == 2 and expected in result.stderr, (args, result.stderr)
    assert KernelSpecManager().get_kernel_spec("python3")  # untouched

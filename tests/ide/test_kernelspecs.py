"""`cake kernel install / list / remove`: kernelspecs any Jupyter frontend can pick."""

from __future__ import annotations

import json
import os
import subprocess
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
    assert spec.argv == [sys.executable, "-m", "ide_bridge.kernel", "-f", "{connection_file}",
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


def test_kernelspecs_of_earlier_versions_still_work_and_reinstalling_migrates(ide_env: dict[str, str], tmp_path: Path) -> None:
    """Before ide_bridge was a top-level package, kernelspecs ran `-m jupyter_cake.ide_bridge.kernel`.
    Users' IDEs still hold those: they must stay Cake kernels, still start, and move on when reinstalled."""
    data = tmp_path / "data"  # a kernels dir of this test's own
    env = dict(ide_env, JUPYTER_DATA_DIR=str(data), JUPYTER_PATH=str(data))
    old_argv = [sys.executable, "-m", "jupyter_cake.ide_bridge.kernel", "-f", "{connection_file}",
                "--target", "local --cpus 2", "--name", "old-cake", "--on-shutdown", "keep"]  # fmt: skip
    spec_dir = data / "kernels" / "old-cake"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": old_argv, "display_name": "Python 3 (Cake: local · 2 CPU)", "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": False, "cake": {"target": "local --cpus 2", "on_shutdown": "keep"}},
    }))  # fmt: skip

    # (a) still a Cake kernelspec
    listing = cake("kernel", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert "old-cake" in rows and "local --cpus 2" in rows["old-cake"] and "keep" in rows["old-cake"]

    # (b) the old entry still starts the proxy, ide_bridge.kernel's own main (a missing connection file
    # is its first check: it got the arguments, and no session is started for it)
    old_entry = [sys.executable, "-m", "jupyter_cake.ide_bridge.kernel"]
    helped = subprocess.run([*old_entry, "--help"], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert helped.returncode == 0 and "usage: python -m ide_bridge.kernel" in helped.stdout, helped.stderr
    started = subprocess.run([*old_entry, "-f", str(tmp_path / "missing.json"), "--target", "local"], check=False,
                             capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert started.returncode == 2, started.stderr
    assert "[cake] cannot start the kernel: Cannot read the connection file" in started.stderr
    # Importing the old path loads nothing of the bridge: only running it does.
    probe = "import sys, jupyter_cake.ide_bridge.kernel; print(sorted(m for m in sys.modules if m.startswith('ide_bridge')))"
    imported = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stderr

    # Installing it again under its name writes the current argv over the old one.
    again = cake("kernel", "install", "local", "--cpus", "2", "--name", "old-cake", "--on-shutdown", "keep", env=env)
    assert again.returncode == 0, again.stderr
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == [sys.executable, "-m", "ide_bridge.kernel", *old_argv[3:]]
    assert [line.split()[0] for line in cake("kernel", "list", env=env).stdout.splitlines()[1:]] == ["old-cake"]


def test_env_values_stay_out_of_the_kernelspec_and_reach_the_kernel(ide_env: dict[str, str], cake_data_dir: Path) -> None:
    """`--env HF_TOKEN=...` on a kernelspec: the argv (world-readable in kernel.json, and in `ps` while
    the proxy runs) holds a 0600 file's path, not the value; the kernel the IDE starts still has it."""
    import secrets
    import stat

    from helpers import files_containing, kernel_from_spec

    secret = "s3cr3t-" + secrets.token_hex(12)
    name = "cake-test-env"
    installed = cake("kernel", "install", "local", "--env", f"CAKE_TEST_SECRET={secret}", "--name", name, env=ide_env)
    assert installed.returncode == 0 and secret not in installed.stdout + installed.stderr, installed
    spec = KernelSpecManager().get_kernel_spec(name)
    assert secret not in json.dumps(spec.to_dict()) and spec.metadata["cake"]["target"] == "local --env CAKE_TEST_SECRET=***"
    env_file = Path(spec.argv[spec.argv.index("--env-file") + 1])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and json.loads(env_file.read_text()) == {"CAKE_TEST_SECRET": secret}
    assert secret not in cake("kernel", "list", env=ide_env).stdout

    seen: list[dict] = []
    with kernel_from_spec(name) as kc:
        reply = kc.execute_interactive("import os; print(os.environ['CAKE_TEST_SECRET'][::-1])", timeout=60,
                                       output_hook=lambda msg: seen.append(msg))  # fmt: skip
        assert reply["content"]["status"] == "ok"
        assert secret[::-1] + "\n" in [m["content"].get("text") for m in seen]
        readable = [Path(p, "cmdline") for p in Path("/proc").glob("[0-9]*")]
        assert not [p for p in readable if _holds(p, secret.encode())], "a process's argv shows the value"
        # In Cake's files too, only 0600 files hold it: the kernelspec's env file and the session's.
        holders = files_containing(cake_data_dir, secret.encode())
        assert env_file in holders and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in holders), holders
    assert cake("kernel", "remove", name, env=ide_env).returncode == 0
    assert not env_file.exists()  # removing the kernelspec removes its values


def _holds(path: Path, needle: bytes) -> bool:
    try:
        return needle in path.read_bytes()
    except OSError:  # the process ended meanwhile
        return False

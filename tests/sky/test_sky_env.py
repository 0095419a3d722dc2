"""`--env` through SkyPilot: the bridge hands the values to SkyPilot as task *secrets* (set in the task's
setup and run like envs, redacted in SkyPilot's logs, stored YAML and dashboard), with the test SkyPilot."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from sky_infra import SKY_PYTHON
from jupyter_cake.backends.sky.resources import task_spec
from jupyter_cake.targets import parse_target

BRIDGE_DIR = Path(__file__).resolve().parents[2] / "jupyter_cake" / "backends" / "sky"
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import bridge_main
task = bridge_main.build_task(json.loads(sys.argv[2]))
shown = json.dumps(task.to_yaml_config(use_user_specified_yaml=True), default=str)
print(json.dumps({"secrets": {k: v.get_secret_value() for k, v in task.secrets.items()}, "envs": task.envs, "shown": shown}),
      file=sys.__stderr__)
"""


def test_env_values_become_skypilot_secrets(tmp_path: Path) -> None:
    # Only SkyPilot's Python is needed (no API server, no cluster): not the sky_ready fixture's teardown.
    if not SKY_PYTHON.exists():
        pytest.fail(f"No test SkyPilot: {SKY_PYTHON} is missing. Run tests/infra/sky-venv.sh (`make test` does).")
    secret = "s3cr3t-" + secrets.token_hex(12)
    spec = task_spec(parse_target(["aws", "--env", f"CAKE_TEST_SECRET={secret}"]), "s")
    done = subprocess.run([str(SKY_PYTHON), "-c", PROBE, str(BRIDGE_DIR), json.dumps(spec)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stderr.strip().splitlines()[-1])
    assert task["secrets"] == {"CAKE_TEST_SECRET": secret} and "CAKE_TEST_SECRET" not in task["envs"]
    assert secret not in task["shown"]  # what SkyPilot shows of the task

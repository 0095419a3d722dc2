"""``python -m jupyter_cake.ray.worker``: one Ray worker node of a multi-node session (stdlib only).

Started by the sbatch script with srun, one task on every node but the head's. It waits for the head
to write ``ray/head.json`` in the session directory (on the shared home, like the nanny's own files),
checks that this node's Python and Ray match the head's, and then becomes ``ray start --block`` with
the node's own address set explicitly. Problems are printed as ``cake-error:`` lines, which Cake shows
when the session fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from jupyter_cake.ray import ports, versions

HEAD_WAIT_S = 600.0  # the head may take minutes on a loaded node; Slurm's time limit still applies


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jupyter_cake.ray.worker")
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--python", default=sys.executable)
    return parser.parse_args(argv)


def command(python: str, head_address: str, node_ip: str, cpus: str | None) -> list[str]:
    argv = [python, "-m", "ray.scripts.scripts", "start", f"--address={head_address}",
            f"--node-ip-address={node_ip}", "--block", "--disable-usage-stats"]  # fmt: skip
    if cpus:
        argv.append(f"--num-cpus={int(cpus)}")
    return argv


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    head_file = args.session_dir / "ray" / "head.json"
    deadline = time.monotonic() + HEAD_WAIT_S
    while not head_file.exists():
        if time.monotonic() > deadline:
            sys.exit(f"cake-error: the Ray head did not come up within {HEAD_WAIT_S:g} s; see {args.session_dir}/ray/head.log")
        time.sleep(0.5)
    head = json.loads(head_file.read_text())
    mine = versions.local_versions()
    problem = versions.mismatch(head["versions"], mine, args.python)
    if problem:
        message = f"worker node {mine['host']}: {problem.replace('here vs', 'on the head vs')}"
        (args.session_dir / "ray" / f"worker-{mine['host']}.error").write_text(message + "\n")  # the head reports it
        sys.exit(f"cake-error: {message}")
    node_ip = ports.route_address(head["address"].rsplit(":", 1)[0])
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(args.session_dir / "ray" / "auth_token"),
               RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
    env.pop("RAY_AUTH_TOKEN", None)
    # The shipped nanny folder was on PYTHONPATH only to start this module: Ray's workers (user code)
    # must not see Cake's stub package.
    root = str(Path(__file__).resolve().parents[2])
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(kept)
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    os.execvpe(args.python, command(args.python, head["address"], node_ip, cpus), env)


if __name__ == "__main__":
    main()

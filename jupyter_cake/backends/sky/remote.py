"""What runs on the head node and how Cake reaches it.

The nanny is the SkyPilot job of the session (the task's ``run``): it keeps the cluster busy while
the notebook uses it, and when it ends (idle, ``%cake down``) SkyPilot's autodown takes the cluster.
It is shipped inside the run command like the Slurm backend's batch script (a base64 tarball of the
stdlib-only nanny package), so the node needs only a Python with ipykernel and cloudpickle.

The channel is plain OpenSSH with the key, user and port SkyPilot itself uses for the cluster (read
from its command runner by the bridge), written as a private ssh_config in the session directory so
jupyter_cake.ssh (ControlMaster, port forwards, repair) works unchanged. For Slurm, SkyPilot's runner
reaches the login node; the kernel's node is the same host or one hop further (ProxyJump).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from jupyter_cake.backends.slurm.script import REMOTE_HOME, nanny_archive
from jupyter_cake.errors import CakeError

HOST_ALIAS = "cake-sky-head"
LOGIN_ALIAS = "cake-sky-login"


def session_subdir(session_id: str) -> str:
    return f"{REMOTE_HOME}/sessions/{session_id}"


def run_command(session_id: str, python: str, idle_minutes: float, workdir: str | None) -> str:
    """The task's run: unpack the nanny (once per Cake version) and exec it on the head node only."""
    q = shlex.quote
    archive, archive_hash = nanny_archive()
    sub = session_subdir(session_id)
    workdir_arg = f"--workdir {q(workdir)} " if workdir else ""
    lines = [
        "# Cake session " + session_id + ": the nanny (which starts the kernel) on the head node.",
        'if [ "${SKYPILOT_NODE_RANK:-0}" != 0 ]; then exit 0; fi',
        "set -u",
        f'CAKE_HOME="$HOME"/{q(REMOTE_HOME)}',
        f'SESSION_DIR="$HOME"/{q(sub)}',
        'mkdir -p "$SESSION_DIR"',
        f'NANNY="$CAKE_HOME/nanny-{archive_hash}"',
        f"PYTHON={q(python)}",
        # A failure is written where Cake polls for the nanny's report, so it shows within a second.
        'fail() { echo "cake-error: $*" | tee "$SESSION_DIR/failed" >&2; exit 3; }',
        'command -v "$PYTHON" >/dev/null 2>&1 || fail "no $PYTHON on $(hostname); set the target option python = \\"/path/to/python3\\", or install Python in the task setup"',
        '"$PYTHON" -c "import ipykernel, cloudpickle" 2>/dev/null || fail "$PYTHON on $(hostname) lacks ipykernel or cloudpickle; add \\"$PYTHON -m pip install ipykernel cloudpickle\\" to the setup of the target (option setup) or of the task YAML"',
        'if [ ! -d "$NANNY" ]; then',
        '  tmp=$(mktemp -d "$CAKE_HOME/.nanny.XXXXXX") || fail "cannot write to $CAKE_HOME"',
        "  base64 -d > \"$tmp/nanny.tgz\" <<'CAKE_NANNY_ARCHIVE'",
        *(archive[i : i + 76] for i in range(0, len(archive), 76)),
        "CAKE_NANNY_ARCHIVE",
        '  tar -xzf "$tmp/nanny.tgz" -C "$tmp" && rm -f "$tmp/nanny.tgz"',
        '  mv -T "$tmp" "$NANNY" 2>/dev/null || rm -rf "$tmp"',
        "fi",
        'echo "cake: starting the kernel on $(hostname)"',
        'exec env CAKE_NANNY_ROOT="$NANNY" PYTHONPATH="$NANNY${PYTHONPATH:+:$PYTHONPATH}" \\',
        f'  "$PYTHON" -m jupyter_cake.nanny --session-dir "$SESSION_DIR" --idle-minutes {idle_minutes:g} {workdir_arg}',
        "",
    ]
    return "\n".join(lines)


def write_ssh_config(session_dir: Path, ssh: dict[str, Any], node: str | None = None) -> Path:
    """A private ssh_config with SkyPilot's connection settings for this cluster (mode 0600):
    LOGIN_ALIAS is the host SkyPilot's runner reaches; HOST_ALIAS the node running the kernel, the
    same host or, given ``node`` (a Slurm compute node), one hop further through the login node."""
    if ssh.get("runner") not in ("SSHCommandRunner", "SlurmCommandRunner"):
        raise CakeError(
            f"Cake cannot open a channel to this SkyPilot cluster yet (SkyPilot reaches it with "
            f"{ssh.get('runner')}, not SSH). For Kubernetes use Cake's direct backend: drop --via sky."
        )
    for key in ("ssh_user", "ip", "port", "ssh_private_key", "ssh_proxy_command", "ssh_proxy_jump"):
        _one_line(key, ssh.get(key))
    _one_line("slurm_node", node)
    common = [
        f"  User {ssh['ssh_user']}",
        f"  Port {int(ssh.get('port') or 22)}",
        "  StrictHostKeyChecking no",  # as SkyPilot does: cluster host keys are new on every launch
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
    ]
    if ssh.get("ssh_private_key"):
        common += [f"  IdentityFile {ssh['ssh_private_key']}", "  IdentitiesOnly yes"]
    if ssh.get("ssh_proxy_command"):
        common.append(f"  ProxyCommand {ssh['ssh_proxy_command']}")
    if ssh.get("ssh_proxy_jump"):
        common.append(f"  ProxyJump {ssh['ssh_proxy_jump']}")
    if node:
        lines = [f"Host {LOGIN_ALIAS}", f"  HostName {ssh['ip']}", *common,
                 f"Host {HOST_ALIAS}", f"  HostName {node}", *common, f"  ProxyJump {LOGIN_ALIAS}", ""]  # fmt: skip
    else:
        lines = [f"Host {HOST_ALIAS} {LOGIN_ALIAS}", f"  HostName {ssh['ip']}", *common, ""]
    path = session_dir / "ssh_config"
    path.touch(mode=0o600)
    path.write_text("\n".join(lines))
    return path


def _one_line(key: str, value: object) -> None:
    """Each value SkyPilot reports becomes one ssh_config line: a line break in it would start
    directives of its own (a ProxyCommand runs a command), so it is refused."""
    if value is not None and any(c in str(value) for c in "\n\r\0"):
        raise CakeError(
            f"SkyPilot reported {key} = {str(value)!r} for this cluster, which contains a line break and "
            "cannot go into an ssh_config line. Check the cluster's SSH settings with `sky status -v`, "
            "or `sky down` it and launch again."
        )

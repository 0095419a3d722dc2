"""What runs on the head node and how Cake reaches it.

The nanny is the SkyPilot job of the session (the task's ``run``): it keeps the cluster busy while
the notebook uses it, and when it ends (idle, ``%cake down``) SkyPilot's autodown takes the cluster.
It is shipped inside the run command like the Slurm backend's batch script (a base64 tarball of the
stdlib-only nanny package), so the node needs only a Python with ipykernel and cloudpickle.

The channel is plain OpenSSH with the key, user and port SkyPilot itself uses for the cluster (read
from its command runner by the bridge), written as a private ssh_config in the session directory so
jupyter_cake.ssh (ControlMaster, port forwards, repair) works unchanged. For Slurm, SkyPilot's runner
reaches the login node; the kernel's node is the same host or one hop further (ProxyJump).

Host keys: SkyPilot records none (its own ssh runs with StrictHostKeyChecking=no and
UserKnownHostsFile=/dev/null, and the cluster handle carries no key), so Cake pins them itself, trust on
first use per session: the first connection of a session records every host it reaches (the login node
and the jump to the kernel's node included; the jump's ssh reads the same config) in the session's own
known_hosts (mode 0600), and OpenSSH refuses a different key from then on (``accept-new``). A session that
re-uses a cluster already up starts from the keys the latest earlier session of that cluster recorded,
so re-attaching through a new session does not trust whatever answers first. A changed key is one
HostKeyChanged error that says what to do, never a silent reconnect.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

from jupyter_cake.backends.slurm.script import REMOTE_HOME, nanny_archive
from jupyter_cake.errors import CakeError, ChannelRefused
from jupyter_cake.ssh import SSHConnection

HOST_ALIAS = "cake-sky-head"
LOGIN_ALIAS = "cake-sky-login"
KNOWN_HOSTS = "known_hosts"
_ROLES = {HOST_ALIAS: "the node running the kernel", LOGIN_ALIAS: "the login node SkyPilot reaches"}
_CLUSTER_HEADER = "# cake: host keys of SkyPilot cluster "  # first line; lets a later session of the cluster find them
# What OpenSSH prints (at LogLevel ERROR too) when a host offers a key other than the recorded one.
_KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")
_CHANGED_HOST = re.compile(r"Host key for (\S+) has changed")
# The lines that turned checking off in ssh_configs written before host keys were pinned.
_UNPINNED = ("  StrictHostKeyChecking no\n", "  UserKnownHostsFile /dev/null\n")


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
        *_pinning(session_dir),
        "  LogLevel ERROR",  # still shows a changed host key: OpenSSH reports it as an error
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


def _pinning(session_dir: Path) -> list[str]:
    """The ssh_config lines that pin host keys in the session's known_hosts (created 0600 if missing).
    In every Host block, so the ProxyJump hop, which ssh runs with this same config, is pinned too."""
    known = session_dir / KNOWN_HOSTS
    known.touch(mode=0o600)
    os.chmod(known, 0o600)  # touch keeps the mode of a file that exists
    # Quoted for paths with spaces; '%' doubled because ssh expands %-tokens in this option.
    quoted = str(known.resolve()).replace("%", "%%")
    if any(c in quoted for c in '"\n\r\0'):
        raise CakeError(
            f"The session directory {str(session_dir)!r} contains a quote or line break, which cannot go into an "
            "ssh_config line. Point CAKE_DATA_DIR at a plain directory."
        )
    return [
        "  StrictHostKeyChecking accept-new",  # learn on first use; a different key later is refused
        f'  UserKnownHostsFile "{quoted}"',  # only the session's file: no stale ~/.ssh entries for re-used IPs
    ]


def pin_host_keys(session_dir: Path, cluster: str, reused: bool) -> Path:
    """Start the session's known_hosts (mode 0600) before its first connection. SkyPilot gives no host
    key to compare with, so a fresh cluster's keys are learned on first use. A re-used cluster (already
    UP) starts from what the latest earlier session of it recorded: otherwise a session whose pinned key
    was refused could simply be replaced by a new one that trusts the impostor."""
    lines = [f"{_CLUSTER_HEADER}{cluster}"]
    if reused:
        earlier = [p for p in session_dir.parent.glob(f"*/{KNOWN_HOSTS}") if p.parent != session_dir and _cluster_of(p) == cluster]
        if earlier:
            latest = max(earlier, key=lambda p: p.stat().st_mtime)
            lines += [line for line in latest.read_text().splitlines() if line.strip() and not line.startswith("#")]
    path = session_dir / KNOWN_HOSTS
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def _cluster_of(known_hosts: Path) -> str | None:
    try:
        with known_hosts.open() as f:
            first = f.readline().rstrip("\n")
    except OSError:
        return None
    return first[len(_CLUSTER_HEADER) :] if first.startswith(_CLUSTER_HEADER) else None


def upgrade_ssh_config(session_dir: Path) -> None:
    """A session started before host keys were pinned has an ssh_config that turns checking off: pin it
    now (its keys are learned on the next new connection), rather than keep connecting unchecked."""
    path = session_dir / "ssh_config"
    try:
        text = path.read_text()
    except OSError:
        return
    if _UNPINNED[0] in text:
        pinned = "".join(f"{line}\n" for line in _pinning(session_dir))
        path.write_text(text.replace(_UNPINNED[0] + _UNPINNED[1], pinned).replace(_UNPINNED[0], pinned))


class HostKeyChanged(ChannelRefused):
    """A node of the cluster offered an SSH host key other than the one the session recorded."""


class PinnedSSH(SSHConnection):
    """The SSH connection to a node of the session's cluster (``alias`` in its ssh_config). A refused host
    key becomes HostKeyChanged, which names the host, the file and the fix, instead of ssh's generic
    failure; ``refused`` keeps it, so a channel repair can raise it rather than count it a dropped link."""

    def __init__(self, alias: str, session_dir: Path, cluster: str) -> None:
        super().__init__(alias, session_dir.name, str(session_dir / "ssh_config"))
        self.session_dir = session_dir
        self.known_hosts = session_dir / KNOWN_HOSTS
        self.cluster = cluster
        self.refused: HostKeyChanged | None = None

    def start(self) -> None:
        try:
            super().start()
        except CakeError as exc:
            said = str(exc)
            if any(marker in said for marker in _KEY_CHANGED):
                self.refused = self._changed(said)
            else:
                self.refused = self._login_refused()
            if self.refused is None:
                raise
            raise self.refused from None
        self.refused = None

    def _changed(self, said: str) -> HostKeyChanged:
        found = _CHANGED_HOST.search(said)
        host = found.group(1) if found else self.host
        return HostKeyChanged(
            f"Refused to connect to SkyPilot cluster {self.cluster}: {host} ({_ROLES.get(self.host, self.host)}) presented "
            f"an SSH host key other than the one this session recorded in {self.known_hosts} on its first "
            "connection. Someone may be impersonating the node (and could read every cell), or the cluster "
            "was re-created. If it was re-created legitimately (e.g. launched again after autodown): "
            "`%cake down`, then start the session again. If you know why the key changed: remove the old "
            f"key with `ssh-keygen -f {shlex.quote(str(self.known_hosts))} -R {shlex.quote(host)}` and retry."
        )

    def _login_refused(self) -> HostKeyChanged | None:
        """Whether the jump to the head failed on the login node's key. With ControlPersist, ssh sends the
        jump's stderr to /dev/null, so a refused login key shows on the head's connection only as a
        closed connection: the login node is asked on its own to tell."""
        if self.host != HOST_ALIAS or f"  ProxyJump {LOGIN_ALIAS}" not in Path(self.ssh_config or "").read_text():
            return None
        login = PinnedSSH(LOGIN_ALIAS, self.session_dir, self.cluster)
        try:
            login.start()  # if it opens, it stays for the session like the one _wait_for_nanny used
        except CakeError:
            pass
        return login.refused


def _one_line(key: str, value: object) -> None:
    """Each value SkyPilot reports becomes one ssh_config line: a line break in it would start
    directives of its own (a ProxyCommand runs a command), so it is refused."""
    if value is not None and any(c in str(value) for c in "\n\r\0"):
        raise CakeError(
            f"SkyPilot reported {key} = {str(value)!r} for this cluster, which contains a line break and "
            "cannot go into an ssh_config line. Check the cluster's SSH settings with `sky status -v`, "
            "or `sky down` it and launch again."
        )

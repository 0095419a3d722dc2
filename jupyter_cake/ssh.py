"""One multiplexed SSH connection per session (OpenSSH ControlMaster), driven by argv lists.

Every remote command goes through ``shlex.join``: user-supplied text is never pasted into a shell
string. The master connection carries the session's port forwards, so the Jupyter protocol travels
encrypted and remote kernels only ever listen on loopback. If the master drops while the allocation
lives, ``ensure`` brings it back with the same forwards and ZMQ reconnects by itself.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.targets import check_host_name

CONNECT_TIMEOUT_S = 15
# The master outlives the process that opened it (a notebook restart re-attaches through it), but
# not forever: once nothing has used it for this long it exits; the next use opens a new one.
CONTROL_PERSIST = "15m"


def checked_destination(host: str, what: str = "SSH host") -> str:
    """``host`` if ssh can only read it as a destination. ssh parses an argument that starts with '-' as
    an option (``-oProxyCommand=...`` would run a command), so such a name is refused before any ssh
    runs (the same rule as for host names in targets); ``--`` before the destination in every argv
    below is the second line of defence."""
    return check_host_name(host, f"{what} {host!r}", "a host name as in ~/.ssh/config or DNS",
                           "hpc, login.example.org or me@login.example.org")  # fmt: skip


def control_path(key: str) -> Path:
    """A short socket path (Unix sockets are limited to ~104 bytes), private to this user."""
    base = Path(tempfile.gettempdir()) / f"cake-ssh-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    return base / hashlib.sha256(key.encode()).hexdigest()[:16]


class SSHConnection:
    def __init__(self, host: str, key: str, ssh_config: str | None = None, jump: str | None = None) -> None:
        self.host = checked_destination(host)
        self.ssh_config = os.path.expanduser(ssh_config) if ssh_config else None
        self.jump = jump
        self.socket = control_path(f"{key}:{host}:{jump}")
        self._up = False  # this object started or checked the master; commands don't re-check it

    def _base(self) -> list[str]:
        args = ["ssh"]
        if self.ssh_config:
            args += ["-F", self.ssh_config]
        if self.jump:
            # Checked here, not in __init__: callers set .jump after construction. ssh hands the jump host
            # to a second ssh as its destination, so a leading '-' would become an option there.
            args += ["-J", checked_destination(self.jump, "SSH jump host")]
        return args + [
            "-o", f"ControlPath={self.socket}",
            "-o", "BatchMode=yes",  # never hang on a password prompt inside a notebook
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip

    def argv(self, *options: str, command: str | None = None) -> list[str]:
        """``ssh [options] -- host [command]``: every option before the ``--``, so neither the host nor
        the command can be read as an option (OpenSSH stops parsing options at ``--``)."""
        return [*self._base(), *options, "--", self.host, *([command] if command is not None else [])]

    def alive(self) -> bool:
        if not self.socket.exists():
            self._up = False
            return False
        check = subprocess.run(self.argv("-O", "check"), capture_output=True, timeout=10)
        self._up = check.returncode == 0
        return self._up

    def start(self) -> None:
        """Open the master connection (authenticates once; later commands reuse it)."""
        if self._up or self.alive():
            self._up = True
            return
        self.socket.unlink(missing_ok=True)
        argv = self.argv("-M", "-N", "-f", "-o", f"ControlPersist={CONTROL_PERSIST}", "-o", "ExitOnForwardFailure=yes")
        # The master stays in the background (-f) holding whatever stdout/stderr it was given: pipes
        # would never reach EOF, so its stderr goes to a file we read after it has forked.
        with tempfile.TemporaryFile() as errors:
            try:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                      timeout=CONNECT_TIMEOUT_S + 10)  # fmt: skip
            except subprocess.TimeoutExpired:
                done = None
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
        if done is None:
            raise CakeError(
                f"Could not reach the login node {self.host!r} within {CONNECT_TIMEOUT_S + 10} s. "
                "Check the host name, your network/VPN, and `ssh " + self.host + "` in a terminal."
            ) from None
        if done.returncode != 0:
            detail = stderr.strip().rstrip(".") or f"ssh exited with code {done.returncode}"
            hint = "check your SSH key and ~/.ssh/config for it" if "Permission denied" in detail else "check that the host is reachable and `ssh " + self.host + "` works in a terminal"
            raise CakeError(f"Could not connect to {self.host!r}: {detail}. Fix: {hint}.")
        self._up = True

    def run(
        self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60, then: Sequence[str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` (and, if it succeeds, ``then``) on the remote host; nothing is shell-interpreted
        except the fixed ``&&`` between the two quoted commands."""
        self.start()
        command = shlex.join(argv) + (f" && {shlex.join(then)}" if then else "")
        feed: dict[str, Any] = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        done = subprocess.run(self.argv(command=command), capture_output=True, timeout=timeout, **feed)
        if done.returncode == 255 and not self.alive():  # the master died since: reconnect once
            self.start()
            done = subprocess.run(self.argv(command=command), capture_output=True, timeout=timeout, **feed)
        return done

    def forward(self, ports: Sequence[tuple[int, int]], remote_host: str = "127.0.0.1") -> None:
        """Forward each (local port, remote port) pair, all in one request to the master."""
        self.start()
        specs = [arg for local, remote in ports for arg in ("-L", f"127.0.0.1:{local}:{remote_host}:{remote}")]
        done = subprocess.run(self.argv("-O", "forward", *specs), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise CakeError(f"Could not forward local ports through {self.host!r}: {done.stderr.strip()}")

    def close(self) -> None:
        self._up = False
        if self.socket.exists():
            subprocess.run(self.argv("-O", "exit"), capture_output=True, timeout=10)

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

from jupyter_cake.errors import CakeError

CONNECT_TIMEOUT_S = 15


def control_path(key: str) -> Path:
    """A short socket path (Unix sockets are limited to ~104 bytes), private to this user."""
    base = Path(tempfile.gettempdir()) / f"cake-ssh-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    return base / hashlib.sha256(key.encode()).hexdigest()[:16]


class SSHConnection:
    def __init__(self, host: str, key: str, ssh_config: str | None = None, jump: str | None = None) -> None:
        self.host = host
        self.ssh_config = os.path.expanduser(ssh_config) if ssh_config else None
        self.jump = jump
        self.socket = control_path(f"{key}:{host}:{jump}")

    def _base(self) -> list[str]:
        args = ["ssh"]
        if self.ssh_config:
            args += ["-F", self.ssh_config]
        if self.jump:
            args += ["-J", self.jump]
        return args + [
            "-o", f"ControlPath={self.socket}",
            "-o", "BatchMode=yes",  # never hang on a password prompt inside a notebook
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip

    def alive(self) -> bool:
        if not self.socket.exists():
            return False
        check = subprocess.run([*self._base(), "-O", "check", self.host], capture_output=True, timeout=10)
        return check.returncode == 0

    def start(self) -> None:
        """Open the master connection (authenticates once; later commands reuse it)."""
        if self.alive():
            return
        self.socket.unlink(missing_ok=True)
        argv = [*self._base(), "-M", "-N", "-f", "-o", "ControlPersist=yes", "-o", "ExitOnForwardFailure=yes", self.host]
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

    def run(
        self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60, then: Sequence[str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` (and, if it succeeds, ``then``) on the remote host; nothing is shell-interpreted
        except the fixed ``&&`` between the two quoted commands."""
        self.start()
        command = shlex.join(argv) + (f" && {shlex.join(then)}" if then else "")
        feed = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        return subprocess.run([*self._base(), self.host, command], capture_output=True, timeout=timeout, **feed)

    def forward(self, local_port: int, remote_host: str, remote_port: int) -> None:
        self.start()
        spec = f"127.0.0.1:{local_port}:{remote_host}:{remote_port}"
        done = subprocess.run([*self._base(), "-O", "forward", "-L", spec, self.host], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise CakeError(f"Could not forward local port {local_port} through {self.host!r}: {done.stderr.strip()}")

    def close(self) -> None:
        if self.socket.exists():
            subprocess.run([*self._base(), "-O", "exit", self.host], capture_output=True, timeout=10)

"""The ssh command lines Cake builds: every option before `--`, the host right after it, and host names
that ssh would read as options refused before any ssh runs. The argv is checked as built (subprocess.run
recorded), then for real against the local cluster's login node (host alias cake-login)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slurm_jobs import SSH_CONFIG

from jupyter_cake.backends.slurm import Shell, SlurmBackend, SlurmChannel
from jupyter_cake.errors import CakeError
from jupyter_cake.nanny.nanny import free_ports
from jupyter_cake.ssh import SSHConnection

HOSTILE = "-oProxyCommand=touch {marker}"


@pytest.fixture(autouse=True)
def private_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Control sockets in a short private directory (/tmp is shared with other test runs; Unix socket
    paths are limited to ~104 bytes, too short for pytest's tmp_path)."""
    base = tempfile.mkdtemp(prefix="cake-argv-")
    monkeypatch.setattr(tempfile, "tempdir", base)
    yield
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every argv jupyter_cake.ssh hands to subprocess.run, which succeeds without running anything."""
    calls: list[list[str]] = []

    def record(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        calls.append(list(argv))
        empty: Any = "" if kwargs.get("text") else b""
        return subprocess.CompletedProcess(argv, 0, empty, empty)

    monkeypatch.setattr(subprocess, "run", record)
    return calls


def _base(conn: SSHConnection, config: str) -> list[str]:
    return ["ssh", "-F", config, "-o", f"ControlPath={conn.socket}", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]  # fmt: skip


def test_every_ssh_argv_ends_its_options_with_a_double_dash(ran: list[list[str]]) -> None:
    conn = SSHConnection("hpc", f"argv-{uuid.uuid4().hex}", "/etc/cake/ssh_config")
    base = _base(conn, "/etc/cake/ssh_config")
    conn.run(["squeue", "-h", "-j", "7"])
    conn.socket.touch()  # as if the master were up: alive() asks it
    conn.alive()
    conn.forward([(40001, 8888)])
    conn.close()
    assert ran == [
        [*base, "-M", "-N", "-f", "-o", "ControlPersist=15m", "-o", "ExitOnForwardFailure=yes", "--", "hpc"],
        [*base, "--", "hpc", "squeue -h -j 7"],
        [*base, "-O", "check", "--", "hpc"],
        [*base, "-O", "forward", "-L", "127.0.0.1:40001:127.0.0.1:8888", "--", "hpc"],
        [*base, "-O", "exit", "--", "hpc"],
    ]


def test_the_compute_node_is_reached_with_the_jump_host_as_an_option(ran: list[list[str]]) -> None:
    data = {"login": "hpc", "node": "gpu-node-3", "login_host": "login1", "ssh_config": None}
    ssh = SlurmBackend()._node_shell(data, f"argv-{uuid.uuid4().hex}").ssh
    assert ssh is not None
    channel = SlurmChannel({}, "tcp://127.0.0.1:1", ssh, [(40002, 5555)])
    channel.establish()
    start, forward = ran
    assert start[-2:] == ["--", "gpu-node-3"] and start.index("-J") < start.index("--") and start[start.index("-J") + 1] == "hpc"
    assert forward[-4:] == ["-L", "127.0.0.1:40002:127.0.0.1:5555", "--", "gpu-node-3"]


def test_a_hostile_login_host_is_refused_before_any_ssh_runs(ran: list[list[str]], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(CakeError) as err:
        Shell({"login": HOSTILE.format(marker=marker), "ssh_config": str(SSH_CONFIG)}, f"argv-{uuid.uuid4().hex}")
    assert str(err.value) == (
        f"Invalid SSH host {HOSTILE.format(marker=marker)!r}: it starts with '-', which ssh would read as an option, "
        "not a host. It must be a host name as in ~/.ssh/config or DNS; use a name like hpc, login.example.org or "
        "me@login.example.org."
    )
    assert ran == [] and not marker.exists()


def test_a_hostile_jump_host_is_refused_before_any_ssh_runs(ran: list[list[str]]) -> None:
    # ssh hands the jump host to a second ssh as its destination: a leading '-' would be an option there.
    data = {"login": "-oProxyCommand=id", "node": "gpu-node-3", "login_host": "login1", "ssh_config": None}
    shell = SlurmBackend()._node_shell(data, f"argv-{uuid.uuid4().hex}")
    with pytest.raises(CakeError, match=r"Invalid SSH jump host '-oProxyCommand=id': it starts with '-'"):
        shell.run(["cat", "nanny.json"])
    assert ran == []


# ---------------------------------------------------------------- for real, through the login node's sshd


@pytest.fixture
def login_node() -> Iterator[SSHConnection]:
    if not SSH_CONFIG.exists():
        pytest.fail(f"No local Slurm cluster: run `sudo tests/infra/slurm-up.sh` first (`make test` does). {SSH_CONFIG} is missing.")
    conn = SSHConnection("cake-login", f"argv-{uuid.uuid4().hex}", str(SSH_CONFIG))
    yield conn
    conn.close()


def test_the_double_dash_argv_works_with_openssh(login_node: SSHConnection) -> None:
    done = login_node.run(["printf", "%s", "-v --not-an-option"])
    assert (done.returncode, done.stdout) == (0, b"-v --not-an-option")
    assert login_node.alive()  # ssh -O check -- cake-login
    local = free_ports("127.0.0.1", 1)[0]
    login_node.forward([(local, 2222)])  # ssh -O forward -L ... -- cake-login: to the login node's own sshd
    with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")
    login_node.close()  # ssh -O exit -- cake-login
    assert not login_node.alive()


def test_the_double_dash_alone_keeps_a_hostile_host_from_being_an_option(login_node: SSHConnection, tmp_path: Path) -> None:
    # The second line of defence, with the name check bypassed: after `--` ssh takes the text as a host
    # name (which does not resolve), never as -o ProxyCommand=..., so no command runs.
    marker = tmp_path / "pwned"
    login_node.host = HOSTILE.format(marker=marker)
    login_node._up = True  # straight to the command, as a re-attached session would
    with pytest.raises(CakeError, match="Could not connect"):
        login_node.run(["true"], timeout=30)
    assert not marker.exists()

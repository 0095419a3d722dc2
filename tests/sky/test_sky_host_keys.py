"""Host-key pinning of the SkyPilot channel against a real sshd: the local Slurm cluster's login node
(tests/infra/slurm-up.sh), reached the way SkyPilot's Slurm runner describes it, with the kernel's node
one hop further (ProxyJump). No SkyPilot launch: this is Cake's side of the channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sky_infra import SKY_USER, SLURM_ROOT, forge

from jupyter_cake.backends.sky.remote import HOST_ALIAS, LOGIN_ALIAS, HostKeyChanged, PinnedSSH, pin_host_keys, write_ssh_config

SSHD_PORT = 2222  # slurm-up.sh's sshd; its host key is $R/ssh/host_key


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Path]:
    session = tmp_path / "s-0123abcd"
    session.mkdir()
    pin_host_keys(session, "cake-test-0000", reused=False)
    ssh = {"runner": "SlurmCommandRunner", "ip": "127.0.0.1", "port": SSHD_PORT, "ssh_user": SKY_USER,
           "ssh_private_key": str(SLURM_ROOT / "ssh" / "id_ed25519")}  # fmt: skip
    write_ssh_config(session, ssh, node="localhost")  # the "compute node": the same sshd under another name
    yield session
    for alias in (HOST_ALIAS, LOGIN_ALIAS):
        PinnedSSH(alias, session, "cake-test-0000").close()


def test_first_use_records_both_hops_and_a_changed_key_on_either_is_refused(session: Path, tmp_path: Path) -> None:
    head = PinnedSSH(HOST_ALIAS, session, "cake-test-0000")
    assert head.run(["true"], timeout=30).returncode == 0
    known = session / "known_hosts"
    host_key = (SLURM_ROOT / "ssh" / "host_key.pub").read_text().split()[:2]
    recorded = {line.split()[0]: line.split()[1:3] for line in known.read_text().splitlines() if not line.startswith("#")}
    assert recorded == {f"[127.0.0.1]:{SSHD_PORT}": host_key, f"[localhost]:{SSHD_PORT}": host_key}

    for host in (f"[127.0.0.1]:{SSHD_PORT}", f"[localhost]:{SSHD_PORT}"):  # the login node (the jump), the node
        head.close()
        original = forge(known, host, tmp_path)
        try:
            with pytest.raises(HostKeyChanged) as refused:
                head.run(["true"], timeout=30)
        finally:
            known.write_text(original)
        said = str(refused.value)
        assert f"{host} (" in said and str(known) in said and "`%cake down`, then start the session again" in said, said
        assert f"ssh-keygen -f {known} -R '{host}'" in said
        assert head.run(["true"], timeout=30).returncode == 0  # the recorded key again: it connects

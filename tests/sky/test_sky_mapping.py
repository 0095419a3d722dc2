"""How a target becomes a SkyPilot task, and the errors that come before any SkyPilot process starts.
(No SkyPilot needed: this is Cake's side of the bridge.)"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import environment
from jupyter_cake.backends.base import Allocation
from jupyter_cake.backends.sky import SkyBackend
from jupyter_cake.backends.sky.plan import plan_text
from jupyter_cake.backends.sky.remote import HOST_ALIAS, LOGIN_ALIAS, pin_host_keys, write_ssh_config
from jupyter_cake.backends.sky.resources import cluster_name, resources, task_spec
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import TargetError, parse_target


def test_resources_map_onto_skypilots() -> None:
    target = parse_target("aws/us-east-1 --gpus A100:8 --cpus 32+ --memory 256 --image nvcr.io/pytorch:24.01 --spot --disk 500")
    assert resources(target) == {
        "infra": "aws/us-east-1", "accelerators": "A100:8", "cpus": "32+", "memory": "256",
        "image_id": "docker:nvcr.io/pytorch:24.01", "use_spot": True, "disk_size": 500,
    }  # fmt: skip
    assert resources(parse_target("gcp --image docker:ubuntu:22.04"))["image_id"] == "docker:ubuntu:22.04"
    spec = task_spec(parse_target("slurm/hpc/gpu --via sky --nodes 2 --env A=1 --option setup=module\\ load\\ cuda"), "s")
    assert spec["num_nodes"] == 2 and spec["envs"] == {"A": "1"} and spec["setup"] == "module load cuda"


def test_bad_input_is_refused_before_skypilot_runs(tmp_path: Path) -> None:
    with pytest.raises(CakeError, match=r"SkyPilot needs a GPU type.*--gpus T4:2"):
        resources(parse_target("aws --gpus 2"))
    with pytest.raises(CakeError, match="does not exist"):
        task_spec(parse_target(f"aws --task {tmp_path / 'missing.yaml'}"), "s")
    (tmp_path / "noinfra.yaml").write_text("resources:\n  cpus: 2\n")
    with pytest.raises(CakeError, match=r"names no infra.*%cake use aws --task"):
        parse_target(f"--task {tmp_path / 'noinfra.yaml'}")
    (tmp_path / "t.yaml").write_text("resources:\n  cloud: gcp\n  region: us-central1\n")
    assert parse_target(f"--task {tmp_path / 't.yaml'}").infra == "gcp/us-central1"


def test_without_skypilot_the_error_says_how_to_install_it() -> None:
    with environment(CAKE_SKY_PYTHON="/nonexistent/python"), pytest.raises(CakeError, match="CAKE_SKY_PYTHON"):
        from jupyter_cake.backends import get_backend

        get_backend("sky").preflight(parse_target("aws --gpus A100:1"))  # type: ignore[attr-defined]


def test_cluster_names_are_stable_valid_and_per_target() -> None:
    a = cluster_name(parse_target("aws --gpus A100:1"), "")
    assert a == cluster_name(parse_target("aws --gpus A100:1"), "")  # found again after a restart
    assert a != cluster_name(parse_target("aws --gpus A100:2"), "")
    assert a.startswith("cake-") and a == a.lower() and len(a) <= 40


def test_plan_explains_targets_that_do_not_go_through_skypilot() -> None:
    assert "not through SkyPilot" in plan_text(parse_target("local"))
    assert "--via sky" in plan_text(parse_target("slurm/hpc/gpu"))


def test_cluster_names_never_start_with_a_dash_whatever_the_user_name() -> None:
    # The name reaches SkyPilot and the `sky down NAME` Cake suggests: a leading '-' would be an option.
    hostile = "-oProxyCommand=touch x"
    with environment(LOGNAME=hostile, USER=hostile, LNAME=hostile, USERNAME=hostile):
        name = cluster_name(parse_target("aws --gpus A100:1"), "")
    assert name.startswith("cake-oproxycomman-") and re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", name)


@pytest.mark.parametrize(("text", "label"), [("slurm/-oProxyCommand --via sky", "cluster"), ("ssh/-F", "pool")])
def test_hosts_skypilot_reaches_with_ssh_are_refused_when_the_target_is_parsed(text: str, label: str) -> None:
    with pytest.raises(TargetError, match=rf"Invalid {label} '-\w+' in infra .*starts with '-'.*use a name like"):
        parse_target(text)


@pytest.mark.parametrize("key", ["ssh_user", "ip", "ssh_proxy_command", "ssh_private_key"])
def test_ssh_config_values_with_line_breaks_are_refused(tmp_path: Path, key: str) -> None:
    # Each value is one ssh_config line: a newline would add directives (ProxyCommand runs a command).
    ssh = {"runner": "SSHCommandRunner", "ssh_user": "ubuntu", "ip": "10.0.0.5", key: "x\nProxyCommand touch /tmp/x"}
    with pytest.raises(CakeError, match=rf"SkyPilot reported {key} = .*contains a line break.*sky status -v"):
        write_ssh_config(tmp_path, ssh)
    assert not (tmp_path / "ssh_config").exists()
    with pytest.raises(CakeError, match="SkyPilot reported slurm_node"):
        write_ssh_config(tmp_path, {"runner": "SlurmCommandRunner", "ssh_user": "me", "ip": "10.0.0.5"}, node="n1\nHost *")


def test_the_head_node_is_reached_with_every_option_before_a_double_dash(tmp_path: Path) -> None:
    allocation = Allocation("sky", tmp_path / "s-0123abcd")
    argv = SkyBackend._head(allocation).argv("-O", "check")
    assert argv[0] == "ssh" and argv[1:3] == ["-F", str(tmp_path / "s-0123abcd" / "ssh_config")]
    assert argv[-4:] == ["-O", "check", "--", "cake-sky-head"]


def _effective(config: Path, alias: str) -> set[str]:
    """What ssh itself makes of the config for ``alias`` (``ssh -G`` resolves it without connecting)."""
    done = subprocess.run(["ssh", "-G", "-F", str(config), alias], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines())


@pytest.mark.parametrize("node", [None, "gpu-node-7"])
def test_the_ssh_config_pins_host_keys_in_the_sessions_known_hosts(tmp_path: Path, node: str | None) -> None:
    # node: Slurm through SkyPilot with the kernel one hop past the login node (ProxyJump): both pinned.
    session = tmp_path / "s-0123abcd"
    session.mkdir()
    ssh = {"runner": "SlurmCommandRunner", "ssh_user": "me", "ip": "10.0.0.5", "port": 2222, "ssh_private_key": "/k"}
    config = write_ssh_config(session, ssh, node=node)
    text = config.read_text()
    assert "StrictHostKeyChecking no" not in text and "/dev/null" not in text, text
    known = session / "known_hosts"
    assert known.is_file() and stat.S_IMODE(known.stat().st_mode) == 0o600
    for alias in (HOST_ALIAS, LOGIN_ALIAS):
        effective = _effective(config, alias)
        assert "stricthostkeychecking accept-new" in effective and f"userknownhostsfile {known.resolve()}" in effective
    assert ("proxyjump " + LOGIN_ALIAS in _effective(config, HOST_ALIAS)) == (node is not None)
    # Nothing on the command line Cake runs turns checking back off.
    argv = " ".join(SkyBackend._head(Allocation("sky", session, {"cluster": "cake-x"})).argv("-O", "check"))
    assert "StrictHostKeyChecking" not in argv and "KnownHostsFile" not in argv


def test_a_session_from_before_pinning_is_pinned_when_it_is_next_reached(tmp_path: Path) -> None:
    session = tmp_path / "s-0123abcd"
    session.mkdir()
    (session / "ssh_config").write_text(
        f"Host {HOST_ALIAS} {LOGIN_ALIAS}\n  HostName 10.0.0.5\n  User me\n  Port 22\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    SkyBackend._head(Allocation("sky", session, {"cluster": "cake-x"}))
    effective = _effective(session / "ssh_config", HOST_ALIAS)
    assert "stricthostkeychecking accept-new" in effective and f"userknownhostsfile {(session / 'known_hosts').resolve()}" in effective


def test_a_session_that_reuses_a_cluster_starts_from_the_keys_recorded_for_it(tmp_path: Path) -> None:
    # Otherwise a session whose pinned key was refused could be replaced by a new one trusting anything.
    old, other, new = (tmp_path / n for n in ("s-old", "s-other", "s-new"))
    for d in (old, other, new):
        d.mkdir()
    for d, cluster, key in ((old, "cake-me-1", "AAAAold"), (other, "cake-me-2", "AAAAother")):
        known = pin_host_keys(d, cluster, reused=False)
        known.write_text(known.read_text() + f"[10.0.0.5]:22 ssh-ed25519 {key}\n")  # as ssh's accept-new appends
    assert "AAAAold" in pin_host_keys(new, "cake-me-1", reused=True).read_text()
    assert "AAAAother" not in (new / "known_hosts").read_text()
    # A fresh launch is a new cluster with new keys: nothing carried over.
    assert "AAAA" not in pin_host_keys(new, "cake-me-1", reused=False).read_text()
    assert stat.S_IMODE((new / "known_hosts").stat().st_mode) == 0o600

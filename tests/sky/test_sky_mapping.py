"""How a target becomes a SkyPilot task, and the errors that come before any SkyPilot process starts.
(No SkyPilot needed: this is Cake's side of the bridge.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import environment
from jupyter_cake.backends.base import Allocation
from jupyter_cake.backends.sky import SkyBackend
from jupyter_cake.backends.sky.plan import plan_text
from jupyter_cake.backends.sky.remote import write_ssh_config
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

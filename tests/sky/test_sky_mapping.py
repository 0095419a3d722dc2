"""How a target becomes a SkyPilot task, and the errors that come before any SkyPilot process starts.
(No SkyPilot needed: this is Cake's side of the bridge.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import environment
from jupyter_cake.backends.sky.plan import plan_text
from jupyter_cake.backends.sky.resources import cluster_name, resources, task_spec
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import parse_target


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

"""The Pod a target asks for (no cluster needed): resources, GPU placement, overrides, bad options,
and that the kubernetes client stays out of `import jupyter_cake` + the backend module."""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys

import pytest

from jupyter_cake.backends.kubernetes.podspec import build_pod
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import parse_target


def _pod(line: str) -> dict:
    return build_pod(parse_target(line), "s-0123abcd", "team", 30, "ARCHIVE")


def test_resources_gpus_and_overrides_land_in_the_pod() -> None:
    pod = _pod('k8s/prod --gpus A100:2 --cpus 4 --memory 16 --image ml:1 --env HF_HOME=/data/hf '
               '--option gpu_label=nvidia.com/gpu.product --option labels=team=ml '
               '--option \'node_selector={"pool":"gpu"}\' --option service_account=notebooks')
    spec = pod["spec"]
    container = spec["containers"][0]
    assert pod["metadata"]["name"] == "cake-s-0123abcd" and pod["metadata"]["namespace"] == "team"
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert container["image"] == "ml:1"
    assert container["resources"] == {"requests": {"cpu": "4000m", "memory": "16384Mi"},
                                      "limits": {"cpu": "4000m", "memory": "16384Mi", "nvidia.com/gpu": "2"}}
    assert spec["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "A100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["serviceAccountName"] == "notebooks" and spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False  # kernel code gets no API credentials
    assert {"name": "HF_HOME", "valueFrom": {"secretKeyRef": {"name": "cake-s-0123abcd-env", "key": "HF_HOME"}}} in container["env"]


def test_at_least_cpus_and_memory_request_without_a_limit() -> None:
    container = _pod("k8s --cpus 2+ --memory 8+")["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "2000m", "memory": "8192Mi"}}


def test_gpu_types_map_a_type_to_node_labels_and_unknown_types_are_named() -> None:
    types = shlex.quote(json.dumps({"A100": {"cloud.example/accelerator": "a100"}}))
    pod = _pod(f"k8s --gpus A100:1 --option gpu_types={types}")
    assert pod["spec"]["nodeSelector"] == {"cloud.example/accelerator": "a100"}
    with pytest.raises(CakeError, match="only knows A100"):
        _pod(f"k8s --gpus H100:1 --option gpu_types={types}")


@pytest.mark.parametrize(("option", "message"), [
    ("'labels=bad key=1'", "not a valid Kubernetes label"),
    ("tolerations=not-json", "must be a list"),
    ("namespace_is_fine=1 --nodes 2", "one Pod on one node"),
    ("service_account=Bad_Name", "not a valid name"),
])  # fmt: skip
def test_bad_options_are_refused_with_the_fix(option: str, message: str) -> None:
    with pytest.raises(CakeError, match=message):
        _pod(f"k8s --option {option}")


def test_the_backend_module_does_not_import_the_kubernetes_client() -> None:
    code = "import sys, jupyter_cake, jupyter_cake.backends.kubernetes; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_env_values_go_into_a_secret_owned_by_the_pod_never_into_the_pod_spec() -> None:
    from types import SimpleNamespace

    from jupyter_cake.backends.kubernetes.podspec import env_secret, owner_patch

    secret_value = "s3cr3t-" + secrets.token_hex(8)
    target = parse_target(["k8s", "--env", f"HF_TOKEN={secret_value}", "--env", "B=2"])
    pod = build_pod(target, "s-0123abcd", "team", 30, "ARCHIVE")
    assert secret_value not in json.dumps(pod)  # only references: anyone who may read Pods reads the spec
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "cake-s-0123abcd-env", "key": "HF_TOKEN"}}}
    secret = env_secret(target, "s-0123abcd", "team")
    assert secret is not None and secret["metadata"]["name"] == "cake-s-0123abcd-env" and secret["metadata"]["namespace"] == "team"
    assert secret["stringData"] == {"HF_TOKEN": secret_value, "B": "2"}
    assert secret["metadata"]["labels"]["jupyter-cake/session"] == "s-0123abcd"
    created = SimpleNamespace(metadata=SimpleNamespace(name="cake-s-0123abcd", uid="u-1"))
    assert owner_patch(created) == {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "cake-s-0123abcd", "uid": "u-1"}]}}  # fmt: skip
    assert env_secret(parse_target("k8s"), "s-0123abcd", "team") is None


def test_secret_verbs_are_asked_only_for_targets_with_env() -> None:
    from jupyter_cake.backends.kubernetes.rbac import (
        REQUIRED,
        REQUIRED_ENV_SECRET,
        ROLE_YAML,
    )

    assert {r for _, r, _ in REQUIRED} == {"pods"} and {(v, r) for v, r, _ in REQUIRED_ENV_SECRET} == {
        ("create", "secrets"), ("patch", "secrets"), ("delete", "secrets")}  # fmt: skip
    assert 'resources: ["secrets"]' in ROLE_YAML and '"create", "patch", "delete"' in ROLE_YAML

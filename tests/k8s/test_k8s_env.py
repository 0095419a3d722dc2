"""`--env` on the real local Kubernetes: the kernel sees the value; the Pod spec holds only a reference to
a Secret that the Pod owns, so Kubernetes deletes it with the Pod. The documented Role is enough."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from helpers import open_notebook, text
from k8s_cluster import Cluster
from test_k8s_access import _documented_rules, _service_account_kubeconfig
from jupyter_cake.store import Store

pytestmark = pytest.mark.timeout(240)


def test_env_values_travel_in_a_secret_the_pod_owns(k8s: Cluster, tmp_path: Path) -> None:
    from kubernetes.client.rest import ApiException

    secret = "s3cr3t-" + secrets.token_hex(12)
    # As a user with only the documented Role: its Secret verbs must be enough.
    kubeconfig = _service_account_kubeconfig(k8s, "cake-env", _documented_rules(), tmp_path)
    with open_notebook() as nb:
        nb.run(f"%cake use k8s --image localhost/cake-python:test --option kubeconfig={kubeconfig} "
               f"--env CAKE_TEST_SECRET={secret} --name k8s-env --new")  # fmt: skip
        try:
            cell = nb.run('%%cake\nimport os\nprint(os.environ["CAKE_TEST_SECRET"][::-1])')
            assert text(cell) == secret[::-1] + "\n"
            row = Store().live_session("k8s-env", "")
            assert row is not None
            pod_name = row.allocation_data["pod"]
            pod = k8s.core.read_namespaced_pod(pod_name, k8s.namespace)
            spec = json.dumps(k8s.core.api_client.sanitize_for_serialization(pod))
            assert secret not in spec and "secretKeyRef" in spec
            assert secret not in (Path(row.session_dir) / "pod.json").read_text()
            stored = k8s.core.read_namespaced_secret(f"{pod_name}-env", k8s.namespace)
            owners = [(o.kind, o.name, o.uid) for o in stored.metadata.owner_references or []]
            assert owners == [("Pod", pod_name, pod.metadata.uid)]
        finally:
            nb.run("%cake down")
    deadline = time.time() + 60  # the garbage collector deletes the Secret once its owner is gone
    while time.time() < deadline:
        try:
            k8s.core.read_namespaced_secret(f"{pod_name}-env", k8s.namespace)
        except ApiException as exc:
            assert exc.status == 404
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the env Secret outlived its Pod")
    assert k8s.pods() == []

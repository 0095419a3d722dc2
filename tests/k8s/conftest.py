"""The real local Kubernetes cluster brought up by tests/infra/k8s-up.sh (`make test` does it).

Sessions go to a fresh namespace per test run, in the image `localhost/cake-python:test` (python3 + ipykernel,
pyzmq, cloudpickle, numpy, matplotlib; no Cake) that k8s-build.sh made and k8s-up.sh imported.
Targets are spelled out on the line (``K8S``), so the tests don't depend on targets.toml.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from k8s_cluster import KUBECONFIG, Cluster, admin


@pytest.fixture(scope="session")
def k8s() -> Iterator[Cluster]:
    if not KUBECONFIG.exists():
        pytest.fail(f"No local Kubernetes: run `sudo tests/infra/k8s-up.sh` first (`make test` does). {KUBECONFIG} is missing.")
    from kubernetes import client

    core, rbac = admin()
    namespace = f"cake-test-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    deadline = time.time() + 30  # Pods can only be created once the namespace's default account exists
    while not core.list_namespaced_service_account(namespace).items:
        assert time.time() < deadline, f"namespace {namespace} never got its default ServiceAccount"
        time.sleep(0.1)
    target = f"k8s/cake --image localhost/cake-python:test --option kubeconfig={KUBECONFIG} --option namespace={namespace}"
    cluster = Cluster(core, rbac, namespace, target)
    yield cluster
    leftover = cluster.pods()
    core.delete_namespace(namespace)
    assert not leftover, f"tests left session Pods behind: {leftover}"

"""Admin access to the local test cluster, for the tests' own checks (never for Cake itself)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

K8S_RUN = Path(os.environ.get("CAKE_K8S_RUN", "/tmp/cake-k8s"))
KUBECONFIG = K8S_RUN / "kubeconfig"
# k8s-up.sh's loopback registry (it holds busybox; anything else named there is "not found")
REGISTRY = f"127.0.0.1:{os.environ.get('CAKE_K8S_REGISTRY_PORT', '35000')}"


def admin() -> tuple[Any, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(str(KUBECONFIG))
    return client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)


def session_pods(core: Any, namespace: str) -> list[str]:
    """Cake's session Pods in ``namespace`` that still exist (terminating ones included)."""
    pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=jupyter-cake")
    return [p.metadata.name for p in pods.items]


@dataclass
class Cluster:
    """The `k8s` fixture: admin clients and the namespace this test run's sessions go to."""

    core: Any
    rbac: Any
    namespace: str
    target: str  # a target line for sessions in this namespace, in the test image

    def pods(self) -> list[str]:
        return session_pods(self.core, self.namespace)

"""A start killed half-way on the real Kubernetes cluster (tests/infra/k8s-up.sh) leaves no Pod behind: the
Pod's name and cluster are in the store before it is created, so the next look finds it and deletes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import cake_cli, kill_starting
from k8s_cluster import Cluster
from jupyter_cake.backends.kubernetes.podspec import SESSION_LABEL, env_secret_name, pod_name

pytestmark = pytest.mark.timeout(240)


def test_status_deletes_the_pod_of_a_start_killed_after_the_pod_was_created(k8s: Cluster, tmp_path: Path) -> None:
    """kill -9 of the starter (`cake run`) as soon as its Pod exists: the next `cake status` sees the starter
    is gone, deletes the Pod and shows the start failed (before, the Pod kept its node for the idle window)."""
    row = kill_starting("orphan-pod", lambda r: pod_name(r.id) in k8s.pods(), "--target", k8s.target, cwd=tmp_path)
    status = cake_cli("status", "--all")
    line = next((ln for ln in status.stdout.splitlines() if ln.startswith(row.id)), status.stdout)
    assert pod_name(row.id) not in k8s.pods(), "the killed start's Pod is still there after `cake status`"
    assert "failed" in line and "start was interrupted" in line, line


def test_down_deletes_the_env_secret_of_a_start_killed_before_its_pod_owned_it(k8s: Cluster, tmp_path: Path) -> None:
    """With --env the Secret comes first and has no owner until the Pod exists: the starter killed right
    after creating it used to leave the values in the namespace for good. `cake down` deletes it."""
    secret = "CAKE_TEST_SECRET=orphaned-value"

    def secrets_of(row: Any) -> list[str]:
        found = k8s.core.list_namespaced_secret(k8s.namespace, label_selector=f"{SESSION_LABEL}={row.id}")
        return [s.metadata.name for s in found.items]

    row = kill_starting("orphan-secret", lambda r: bool(secrets_of(r)), "--target", f"{k8s.target} --env {secret}",
                        cwd=tmp_path)  # fmt: skip
    assert secrets_of(row) == [env_secret_name(row.id)]  # what the killed start left
    down = cake_cli("down", row.id)
    assert down.returncode == 0 and "is down: its start was interrupted" in down.stdout, down
    assert secrets_of(row) == [] and pod_name(row.id) not in k8s.pods()

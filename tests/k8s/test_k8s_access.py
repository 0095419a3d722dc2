"""Least-privilege RBAC and start errors on the real local cluster: each is one clear message, fast,
and leaves no Pod behind."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import Notebook, open_notebook, text
from k8s_cluster import KUBECONFIG, REGISTRY, Cluster
from jupyter_cake.backends.kubernetes.rbac import ROLE_YAML

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def nb() -> Iterator[Notebook]:
    notebook = open_notebook()
    yield notebook
    notebook.close()


def _service_account_kubeconfig(k8s: Cluster, name: str, rules: list[dict[str, Any]], tmp: Path) -> Path:
    """A ServiceAccount bound to a Role with ``rules`` in the test namespace, and a kubeconfig with its token."""
    from kubernetes import client

    ns = k8s.namespace
    k8s.core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    k8s.rbac.create_namespaced_role(ns, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                         "metadata": {"name": name}, "rules": rules})  # fmt: skip
    k8s.rbac.create_namespaced_role_binding(ns, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        "roleRef": {"kind": "Role", "name": name, "apiGroup": "rbac.authorization.k8s.io"},
    })  # fmt: skip
    deadline = time.time() + 30  # the token controller creates the account's token Secret
    while True:
        account = k8s.core.read_namespaced_service_account(name, ns)
        if account.secrets:
            break
        assert time.time() < deadline, "no token for the ServiceAccount"
        time.sleep(0.2)
    secret = k8s.core.read_namespaced_secret(account.secrets[0].name, ns)
    token = base64.b64decode(secret.data["token"]).decode()
    admin = yaml.safe_load(KUBECONFIG.read_text())
    config = {
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "cake", "context": {"cluster": "cake", "user": name, "namespace": ns}}],
        "current-context": "cake",
    }  # fmt: skip
    path = tmp / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _documented_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ROLE_YAML.split("---")[0].replace("NAMESPACE", "x"))["rules"]


def test_the_documented_role_is_enough_and_a_missing_verb_is_named(k8s: Cluster, nb: Notebook, tmp_path: Path) -> None:
    kubeconfig = _service_account_kubeconfig(k8s, "cake-user", _documented_rules(), tmp_path)
    # The Role-only account: its kubeconfig's context namespace is the test namespace, no admin anywhere.
    nb.run(f"%cake use k8s --image localhost/cake-python:test --option kubeconfig={kubeconfig} --name k8s-role --new")
    assert text(nb.run("%%cake\nprint(6 * 7)")) == "42\n"
    nb.run("%cake down")
    assert k8s.pods() == []

    without_forward = [r for r in _documented_rules() if r["resources"] != ["pods/portforward"]]
    kubeconfig = _service_account_kubeconfig(k8s, "cake-noforward", without_forward, tmp_path)
    error = nb.fails(f"%cake use k8s --image localhost/cake-python:test --option kubeconfig={kubeconfig} --name k8s-nofwd --new")
    assert "missing verb(s) get pods/portforward, create pods/portforward" in error
    assert "least-privilege RBAC" in error
    assert k8s.pods() == []


def test_role_yaml_in_the_readme_is_the_one_the_code_documents() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert ROLE_YAML.split("---")[0].strip() in readme


@pytest.fixture(scope="module")
def unreachable_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = yaml.safe_load(KUBECONFIG.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens there
    path = tmp_path_factory.mktemp("kc") / "unreachable"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("k8s/nope --option kubeconfig={kc}", ["no context 'nope'", "it has cake", "kubectl config get-contexts"]),
        ("k8s --option kubeconfig=/nonexistent/kubeconfig", ["No kubeconfig found", "/nonexistent/kubeconfig", "KUBECONFIG"]),
        ("k8s --option kubeconfig={unreachable}", ["unreachable", "127.0.0.1:9", "kubectl cluster-info"]),
        ("k8s/cake --image localhost/cake-python-bare:test --option kubeconfig={kc} --option namespace={ns}",
         ["lacks ipykernel", "installing them failed", "No module named pip", "pip install ipykernel pyzmq cloudpickle"]),
        ("k8s/cake --image localhost/cake-python-bare:test --option install_kernel=false --option kubeconfig={kc} "
         "--option namespace={ns}", ["lacks ipykernel, jupyter-client, pyzmq, cloudpickle. Use an image"]),
        ("k8s/cake --image {registry}/busybox:latest --option kubeconfig={kc} --option namespace={ns}", ["has no Python", "python3"]),
        ("k8s/cake --image {registry}/no-such-image:1 --option kubeconfig={kc} --option namespace={ns}",
         ["cannot be pulled", "no-such-image:1", "Fix --image"]),
        ("k8s/cake --image localhost/cake-python:test --option kubeconfig={kc} --option namespace=Bad_NS", ["not a valid name", "namespace"]),
    ],
    ids=["unknown-context", "no-kubeconfig", "unreachable", "no-ipykernel", "no-ipykernel-no-install", "no-python",
         "no-such-image", "bad-namespace"],
)
def test_start_errors_are_clear_fast_and_leave_no_pod(k8s: Cluster, nb: Notebook, unreachable_kubeconfig: Path, spec: str,
                                                      expected: list[str]) -> None:  # fmt: skip
    line = spec.format(kc=KUBECONFIG, ns=k8s.namespace, unreachable=unreachable_kubeconfig, registry=REGISTRY)
    error = nb.fails_with(f"%cake use {line} --name k8s-bad --new", *expected, within=30)
    assert "Traceback" not in error.split("CakeError")[-1]
    assert k8s.pods() == []


def test_a_namespace_quota_that_refuses_the_pod_is_reported_with_the_quota(k8s: Cluster, nb: Notebook) -> None:
    from kubernetes import client

    namespace = f"{k8s.namespace}-quota"
    k8s.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        k8s.core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="small"), spec=client.V1ResourceQuotaSpec(hard={"limits.memory": "1Gi"})))  # fmt: skip
        deadline = time.time() + 30  # the quota controller fills in its status (until then it admits
        # nothing), and Pods need the namespace's default ServiceAccount
        while not ((k8s.core.read_namespaced_resource_quota("small", namespace).status.hard or {})
                   and k8s.core.list_namespaced_service_account(namespace).items):  # fmt: skip
            assert time.time() < deadline
            time.sleep(0.2)
        line = f"k8s/cake --image localhost/cake-python:test --memory 2 --option kubeconfig={KUBECONFIG} --option namespace={namespace}"
        error = nb.fails(f"%cake use {line} --name k8s-quota --new")
        assert "exceeded quota: small" in error and "limits.memory" in error and "larger quota" in error
        assert k8s.core.list_namespaced_pod(namespace).items == []
    finally:
        k8s.core.delete_namespace(namespace)

"""Reaching the cluster: kubeconfig + context -> API clients, with clear errors and deadlines.

The kubernetes client is imported here, inside functions, never at module import: `import jupyter_cake`
and the magics stay free of it (DESIGN seam 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError

CONNECT_TIMEOUT_S = 5.0  # TCP connect to the API server; with one retry, unreachable fails in ~10 s
READ_TIMEOUT_S = 30.0


def request_timeout() -> tuple[float, float]:
    return (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)


@dataclass
class Cluster:
    """API clients for one context and the namespace sessions go to."""

    core: Any  # kubernetes.client.CoreV1Api
    auth: Any  # kubernetes.client.AuthorizationV1Api
    namespace: str
    context: str  # "" for the kubeconfig's current context / in-cluster
    kubeconfig: str  # "" for the default search (KUBECONFIG, ~/.kube/config) / in-cluster
    server: str
    configuration: Any = None

    def fresh_core(self) -> Any:
        """A CoreV1Api on its own ApiClient. kubernetes.stream (exec, port-forward) swaps the client's
        request method while it opens a websocket, which is not thread-safe: every websocket gets a
        client of its own so concurrent forwards and ordinary calls never see each other's swap."""
        from kubernetes import client

        return client.CoreV1Api(client.ApiClient(self.configuration))

    def describe(self) -> str:
        return f"context {self.context or '(current)'} at {self.server}"


def _kubeconfig_files(explicit: str) -> list[str]:
    if explicit:
        return [os.path.expanduser(explicit)]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.expanduser("~/.kube/config")]


def connect(context: str = "", kubeconfig: str = "", namespace: str = "") -> Cluster:
    """Load the client for ``context`` (the current one when empty). Raises CakeError with the fix."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    files = _kubeconfig_files(kubeconfig)
    existing = [f for f in files if Path(f).is_file()]
    configuration = client.Configuration()
    if not existing:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not context and not kubeconfig:
            config.load_incluster_config(client_configuration=configuration)
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            default_ns = ns_file.read_text().strip() if ns_file.exists() else "default"
            return _finish(configuration, namespace or default_ns, "", "")
        raise CakeError(
            f"No kubeconfig found (looked at {', '.join(files)}). Point KUBECONFIG at your cluster's "
            "kubeconfig, set the target option kubeconfig=/path/to/config, or log in with your cloud's CLI "
            "(it writes ~/.kube/config)."
        )
    config_file = os.pathsep.join(existing) if len(existing) > 1 else existing[0]
    try:
        contexts, current = config.list_kube_config_contexts(config_file=existing[0] if len(existing) == 1 else None)
    except ConfigException as exc:
        raise CakeError(f"The kubeconfig {config_file} is not usable ({exc}). Fix it or point KUBECONFIG elsewhere.") from None
    names = [c["name"] for c in contexts]
    if context and context not in names:
        raise CakeError(
            f"The kubeconfig {config_file} has no context {context!r}; it has {', '.join(names) or 'none'}. "
            "Use k8s/<one of those> (`kubectl config get-contexts` lists them)."
        )
    if not context and not current:
        raise CakeError(
            f"The kubeconfig {config_file} has no current context. Name one: k8s/<context> "
            f"(available: {', '.join(names) or 'none'})."
        )
    chosen = next(c for c in contexts if c["name"] == (context or current["name"]))
    default_ns = (chosen.get("context") or {}).get("namespace") or "default"
    try:
        config.load_kube_config(config_file=config_file, context=context or None,
                                client_configuration=configuration, persist_config=False)  # fmt: skip
    except (ConfigException, OSError, ValueError) as exc:
        raise CakeError(f"Could not load context {chosen['name']!r} from {config_file}: {exc}") from None
    return _finish(configuration, namespace or default_ns, context, kubeconfig)


def _finish(configuration: Any, namespace: str, context: str, kubeconfig: str) -> Cluster:
    from kubernetes import client

    from jupyter_cake.backends.kubernetes.podspec import check_name

    # urllib3 retries a refused/timed-out connection 3 times by default: one retry bounds the wait.
    configuration.retries = 1
    api = client.ApiClient(configuration)
    return Cluster(core=client.CoreV1Api(api), auth=client.AuthorizationV1Api(api),
                   namespace=check_name("namespace", namespace), context=context, kubeconfig=kubeconfig,
                   server=str(configuration.host), configuration=configuration)  # fmt: skip


def unreachable(cluster: Cluster, exc: BaseException) -> CakeError:
    return CakeError(
        f"The Kubernetes API server of {cluster.describe()} is unreachable ({type(exc).__name__}: "
        f"{str(exc)[:300]}); gave up after {CONNECT_TIMEOUT_S * 2:g} s. Check VPN/network and that the "
        "cluster is up (`kubectl cluster-info`)."
    )


def network_errors() -> tuple[type[BaseException], ...]:
    import urllib3.exceptions

    return (urllib3.exceptions.HTTPError, OSError)

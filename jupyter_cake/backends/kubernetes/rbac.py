"""The least-privilege Role Cake needs, and errors that name the verb RBAC refused.

Cake needs, in ONE namespace (a Role + RoleBinding, never a ClusterRole):

    pods              create, get, list, watch, delete   the session Pod; list + watch follow it (by name)
                                                         while the session lives
    pods/portforward  get, create                        the channel (websocket port-forward is a GET,
                                                         SPDY port-forward a create)
    pods/log          get                                the container's log, shown when a kernel fails to start
    secrets           create, patch, delete              only with --env: the Secret holding the values (never
                                                         in the Pod spec), made owned by the Pod (patch) so it
                                                         is deleted with it; delete if the start fails half-way

``ROLE_YAML`` is the documented manifest (README, "Kubernetes"); ``preflight`` asks the API server
(SelfSubjectAccessReview, allowed to every authenticated user) before creating anything, so a
missing permission fails the start with all missing verbs named instead of half-way through.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jupyter_cake.errors import CakeError

# (verb, resource, subresource): what the backend does, in the order it does it.
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("create", "pods", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("watch", "pods", ""),
    ("delete", "pods", ""),
    ("get", "pods", "portforward"),
    ("create", "pods", "portforward"),
    ("get", "pods", "log"),
)
# Only for a target with --env (env_secret): a session without never touches Secrets, so a Role for it
# needs no Secret verbs and is not refused for lacking them.
REQUIRED_ENV_SECRET: tuple[tuple[str, str, str], ...] = (
    ("create", "secrets", ""),
    ("patch", "secrets", ""),
    ("delete", "secrets", ""),
)

ROLE_YAML = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: jupyter-cake
  namespace: NAMESPACE
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["pods/portforward"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]           # only for --env (the values' Secret, owned by the Pod)
  verbs: ["create", "patch", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: jupyter-cake
  namespace: NAMESPACE
subjects:
- kind: User            # or ServiceAccount / Group
  name: USER
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: jupyter-cake
  apiGroup: rbac.authorization.k8s.io
"""

_FORBIDDEN = re.compile(r'cannot (\w+) resource "([^"]+)"(?: in API group "[^"]*")?(?: in the namespace "([^"]+)")?')


def _resource(resource: str, sub: str) -> str:
    return f"{resource}/{sub}" if sub else resource


def fix_hint(namespace: str) -> str:
    return (
        f"Ask your cluster admin for Cake's Role in namespace {namespace!r} (README, 'Kubernetes: "
        "least-privilege RBAC'), or pick another namespace with --option namespace=<ns>."
    )


def preflight(auth_api: Any, namespace: str, env_secret: bool = False) -> None:
    """Raise a CakeError naming every permission Cake lacks in ``namespace`` (``env_secret``: including
    the Secret verbs a target with --env needs)."""
    from kubernetes import client

    from jupyter_cake.backends.kubernetes.cluster import request_timeout

    missing = []
    for verb, resource, sub in REQUIRED + (REQUIRED_ENV_SECRET if env_secret else ()):
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb=verb, resource=resource, subresource=sub or None
                )
            )
        )
        result = auth_api.create_self_subject_access_review(review, _request_timeout=request_timeout())
        if not result.status.allowed:
            missing.append(f"{verb} {_resource(resource, sub)}")
    if missing:
        raise CakeError(
            f"Kubernetes RBAC forbids what Cake needs in namespace {namespace!r}: missing verb(s) "
            f"{', '.join(missing)}. {fix_hint(namespace)}"
        )


def api_error(exc: Any, doing: str, namespace: str, context: str) -> CakeError:
    """A CakeError for an ApiException raised while ``doing`` something (e.g. "create the session Pod")."""
    status = getattr(exc, "status", None)
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = str(body.get("message") or getattr(exc, "reason", "") or exc)
    if status == 403:
        match = _FORBIDDEN.search(message)
        if match:
            verb, resource, ns = match.group(1), match.group(2), match.group(3) or namespace
            return CakeError(
                f"Kubernetes RBAC forbids Cake to {doing}: missing verb {verb!r} on {resource!r} in namespace "
                f"{ns!r} ({message}). {fix_hint(ns)}"
            )
        if "exceeded quota" in message:
            return CakeError(f"Kubernetes refused to {doing}: {message}. Ask for fewer resources or a larger quota.")
        return CakeError(f"Kubernetes refused to {doing}: {message}. {fix_hint(namespace)}")
    if status == 401:
        return CakeError(
            f"The Kubernetes API server rejected the credentials of context {context!r} ({message}). "
            "Log in again (refresh the token in your kubeconfig) and retry."
        )
    if status == 404 and "namespace" in message.lower():
        return CakeError(f"Could not {doing}: {message}. Create the namespace or fix --option namespace=<ns>.")
    return CakeError(f"Kubernetes could not {doing}: {message} (HTTP {status}).")

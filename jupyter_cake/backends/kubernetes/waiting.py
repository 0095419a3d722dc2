"""Reading a session Pod's state: why it waits, whether it can still start, why it ended.

Works on the client's V1Pod objects but only reads attributes, so it stays easy to follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_cake.backends.kubernetes.podspec import CONTAINER

# Waiting reasons that never resolve by themselves: fail at once instead of waiting out --timeout.
FATAL_WAITING = {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
                 "StartError", "ContainerCannotRun", "ErrImageNeverPull"}  # fmt: skip
PULL_WAITING = {"ErrImagePull", "ImagePullBackOff"}
NOT_FOUND_HINTS = ("not found", "manifest unknown", "repository does not exist", "pull access denied")


@dataclass
class PodState:
    phase: str  # Pending, Running, Succeeded, Failed, Unknown, Gone
    ready: bool  # the session container runs
    waiting: str  # human text: why it is not running yet ("" when nothing to say)
    fatal: str  # non-empty: it will never start (or has ended); the reason


def _container(pod: Any) -> Any:
    for status in pod.status.container_statuses or []:
        if status.name == CONTAINER:
            return status
    return None


def _unschedulable(pod: Any) -> str:
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"{cond.reason or 'Unschedulable'}: {cond.message or 'no node fits'}"
    return ""


def terminated_reason(pod: Any) -> str:
    """Why a Pod's session container stopped, in words (OOMKilled, evicted, the nanny's own reason)."""
    status = pod.status
    if status.reason == "Evicted":
        return f"its Pod was evicted by Kubernetes ({status.message or 'node pressure'})"
    if status.reason == "DeadlineExceeded":
        return f"its Pod hit activeDeadlineSeconds ({status.message or ''})"
    container = _container(pod)
    term = container.state.terminated if container is not None and container.state else None
    if term is None and container is not None and container.last_state is not None:
        term = container.last_state.terminated
    if term is None:
        if pod.metadata.deletion_timestamp is not None:
            return "its Pod was deleted (e.g. `kubectl delete pod`, or by an operator or node drain)"
        return f"its Pod is {status.phase}"
    if term.reason == "OOMKilled":
        limit = ""
        spec_container = next((c for c in pod.spec.containers if c.name == CONTAINER), None)
        if spec_container is not None and spec_container.resources and spec_container.resources.limits:
            limit = f" of {spec_container.resources.limits.get('memory', '?')}"
        return (f"its Pod ran out of memory (OOMKilled: the memory limit{limit} was exceeded); "
                "ask for more with --memory GB")  # fmt: skip
    message = (term.message or "").strip()
    if term.reason in FATAL_WAITING:
        return _start_failure(pod, term.reason, message)
    if "terminated (SIGTERM)" in message and pod.metadata.deletion_timestamp is not None:
        return "its Pod was deleted (e.g. `kubectl delete pod`, or by an operator or node drain)"
    if message:
        return message.splitlines()[-1][:500] if "cake-error:" not in message else message.split("cake-error:", 1)[1].strip()
    return f"its container exited with code {term.exit_code} ({term.reason or 'no reason given'})"


def pod_state(pod: Any | None) -> PodState:
    if pod is None:
        return PodState("Gone", False, "", "its Pod was deleted (it no longer exists)")
    phase = pod.status.phase or "Pending"
    container = _container(pod)
    if pod.metadata.deletion_timestamp is not None:
        return PodState(phase, False, "", terminated_reason(pod))
    if phase in ("Succeeded", "Failed"):
        return PodState(phase, False, "", terminated_reason(pod))
    if container is not None and container.state is not None:
        if container.state.running is not None:
            return PodState(phase, True, "", "")
        if container.state.terminated is not None:
            return PodState(phase, False, "", terminated_reason(pod))
        waiting = container.state.waiting
        if waiting is not None:
            reason, message = waiting.reason or "Waiting", (waiting.message or "").strip()
            text = f"{reason}: {message}" if message else reason
            if reason in FATAL_WAITING:
                return PodState(phase, False, text, _start_failure(pod, reason, message))
            if reason in PULL_WAITING and any(h in message.lower() for h in NOT_FOUND_HINTS):
                return PodState(phase, False, text, f"the image {_image(pod)!r} cannot be pulled ({message}). Fix --image.")
            if reason == "ContainerCreating":
                text = f"ContainerCreating (pulling the image {_image(pod)} or mounting volumes)"
            return PodState(phase, False, text, "")
    unschedulable = _unschedulable(pod)
    if unschedulable:
        return PodState(phase, False, unschedulable, "")
    if not pod.spec.node_name:
        return PodState(phase, False, "waiting for the scheduler", "")
    return PodState(phase, False, f"scheduled on {pod.spec.node_name}, starting", "")


def _image(pod: Any) -> str:
    return next((c.image for c in pod.spec.containers if c.name == CONTAINER), "?")


def _start_failure(pod: Any, reason: str, message: str) -> str:
    if "executable file not found" in message or "no such file or directory" in message:
        return (f"the image {_image(pod)!r} has no Python to run ({message}). Use an image with python3 and "
                "ipykernel, or set the target option python=/path/to/python3.")  # fmt: skip
    return f"the session container could not start ({reason}: {message})."

"""Client side of a Ray session: the spec of the nanny's Ray service, waiting for the head after the
kernel is up, the dashboard through the channel, and ``%cake ray``.

Nothing here imports ray: the client may not even have it (the cells run remotely).
"""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Any

from jupyter_cake.errors import CakeError
from jupyter_cake.ray import versions

if TYPE_CHECKING:
    from jupyter_cake.backends.base import Progress
    from jupyter_cake.manager import Handle
    from jupyter_cake.targets import Target

RAY_START_TIMEOUT_S = 180.0  # Ray's head takes 8-12 s on 2 idle cores, several times that under load
POLL_S = 0.1
NO_SERVICE = "runs no service named"  # the nanny's answer when the session has no Ray head


def spec(target: Target) -> str:
    """The spec of the nanny's Ray service (jupyter_cake.ray.head): how to run the head and what to check the cluster against."""
    options = target.options_dict()
    check = options.get("ray_check", "on").lower()
    if check not in ("on", "off"):
        raise CakeError(f"--option ray_check takes on or off, not {check!r}.")
    from jupyter_cake.backends.base import idle_minutes

    # Ray activity is polled often enough that idle release never misses a busy cluster.
    poll_s = max(1.0, min(5.0, idle_minutes(target) * 60 / 4)) if idle_minutes(target) else 5.0
    return json.dumps(
        {"mode": "loopback" if target.nodes == 1 else "cluster", "nodes": target.nodes,
         "client": versions.local_versions(), "check": check == "on", "poll_s": poll_s},
        sort_keys=True,
    )  # fmt: skip


def wait_ready(handle: Handle, progress: Progress, timeout: float = RAY_START_TIMEOUT_S) -> dict[str, Any]:
    """Block until the session's Ray head answers; raise the head's own error (version mismatch,
    missing Ray, a crash with its log) if it can't. Then forward the dashboard."""
    start = time.monotonic()
    while True:
        try:
            status = ray_status(handle)
        except CakeError as exc:
            if NO_SERVICE not in str(exc):
                raise
            raise CakeError(
                f"--ray: the {handle.backend.name} backend did not start Ray in session {handle.id}; Ray sessions "
                "run on local and slurm/... targets so far. Drop --ray, or use one of those targets."
            ) from None
        if status["state"] == "ready":
            break
        if status["state"] not in ("starting", "joining"):
            raise CakeError(f"Ray did not start on session {handle.id}: {status.get('error') or status['state']}")
        waited = time.monotonic() - start
        if waited > timeout:
            raise CakeError(
                f"Ray's head did not come up within {timeout:g} s on session {handle.id}. "
                "`cake logs`/`%cake status` show the session; its ray/head.log has Ray's own output."
            )
        what = "waiting for Ray workers to join" if status["state"] == "joining" else "starting Ray"
        progress(f"{what} on {handle.target.describe()}: {waited:.0f} s", transient=True)
        time.sleep(POLL_S)
    url = dashboard_url(handle, status)
    took = (status.get("ready_at") or 0) - (status.get("started") or 0)
    progress(f"Ray {status['versions'].get('ray')} is up at {status['address']} ({took:.1f} s); dashboard {url}")
    return status


def ray_status(handle: Handle, details: bool = False) -> dict[str, Any]:
    """The head's status, from the nanny's Ray service (jupyter_cake.ray.head.RayHead.status)."""
    return handle.nanny("service", name="ray", details=details)


def dashboard_url(handle: Handle, status: dict[str, Any]) -> str:
    """A URL on this machine for the head's dashboard, through the session's channel (an SSH forward
    where the backend has one). The local port is kept with the allocation, so re-attaching (another
    process, a notebook restart) reuses it while it still answers."""
    remote = int(status["dashboard_port"])
    known = handle.allocation.data.get("ray_dashboard")
    if known and known[1] == remote and _answers(int(known[0])):
        return f"http://127.0.0.1:{known[0]}"
    local = handle.remote.channel.forward(remote)
    handle.allocation.data["ray_dashboard"] = [local, remote]
    handle.cake.store.update_session(handle.id, allocation=json.dumps(handle.allocation.data))
    return f"http://127.0.0.1:{local}"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _amount(name: str, value: float) -> str:
    if name in ("memory", "objectStoreMemory", "object_store_memory"):
        return f"{value / 2**30:.1f} GiB"
    return f"{value:g}"


def info_text(handle: Handle) -> str:
    """What ``%cake ray`` prints: address, versions, resources (used / total), dashboard URL."""
    status = ray_status(handle, details=True)
    if status["state"] != "ready":
        return f"Ray on session {handle.id}: {status['state']}{': ' + status['error'] if status.get('error') else ''}"
    url = dashboard_url(handle, status)
    resources = status.get("resources") or {}
    total, used = resources.get("total") or {}, resources.get("used") or {}
    lines = [
        f"Ray {status['versions'].get('ray')} (Python {status['versions'].get('python')}) on session {handle.id}",
        f"  address    {status['address']}  (RAY_ADDRESS in the session: ray.init() connects to it)",
        f"  nodes      {resources.get('nodes') or '?'}",
        f"  activity   {'tasks or jobs running' if status.get('busy') else 'idle'}",
        "  resources  " + (", ".join(
            f"{name} {_amount(name, used[name]) + ' used of ' if name in used else ''}{_amount(name, total[name])}"
            for name in sorted(total) if not name.startswith(("node:", "accelerator_type"))
        ) or "(not reported yet)"),  # fmt: skip
        f"  dashboard  {url}",
        f"             (token authentication: the dashboard asks once for the token in {status['token_path']} "
        "on the session's node)",
    ]
    return "\n".join(lines)

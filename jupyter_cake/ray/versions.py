"""Python and Ray versions on both sides, and the check that names what differs.

Ray refuses (or worse, half-works) when the driver and the cluster differ in Python minor version or
Ray version. The check runs on the cluster side before ``ray start`` (seconds, not the 10 s a Ray
start costs) and compares against what the client machine reported when the session was requested.
Versions are read from package metadata: no ``import ray`` (1-2 s, hundreds of MB) on either side.
"""

from __future__ import annotations

import platform
import socket
from typing import Any


def ray_version() -> str | None:
    """The Ray installed for this interpreter, from its distribution metadata; None if absent."""
    from importlib import metadata

    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return None


def local_versions() -> dict[str, Any]:
    return {"python": platform.python_version(), "ray": ray_version(), "host": socket.gethostname()}


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def mismatch(client: dict[str, Any], cluster: dict[str, Any], python: str = "python") -> str | None:
    """None when the two sides can work together, else one message naming every difference and the fix.

    Python must agree on major.minor (pickled functions and Ray's wire format depend on it), Ray on
    the exact version. A client without Ray only needs the cluster to have one."""
    where = f"{python} on {cluster.get('host') or 'the cluster'}"
    if not cluster.get("ray"):
        wanted = f"ray[default]=={client['ray']}" if client.get("ray") else "'ray[default]'"
        return f"Ray is not installed for {where}. Install it there: {python} -m pip install {wanted}"
    problems = []
    if client.get("python") and _minor(client["python"]) != _minor(cluster["python"]):
        problems.append(f"Python {client['python']} here vs {cluster['python']} on the cluster")
    if client.get("ray") and client["ray"] != cluster["ray"]:
        problems.append(f"Ray {client['ray']} here vs {cluster['ray']} on the cluster")
    if not problems:
        return None
    fix = f"install the same versions on both sides (e.g. pip install ray[default]=={cluster['ray']} here)"
    return (
        f"Ray version check failed: {'; '.join(problems)} ({where}). Ray needs matching Python minor and Ray "
        f"versions between this machine and the cluster: {fix}, or skip the check with --option ray_check=off."
    )

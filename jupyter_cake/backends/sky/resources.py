"""Target -> the parts of a SkyPilot task: resources, node count, envs, cluster name.

Standard library only: this runs in Cake's process, and the result is plain JSON that the bridge
(running with SkyPilot's own Python) turns into ``sky.Resources`` / ``sky.Task``. Keeping the mapping
here means a bad target is refused before any SkyPilot process starts.
"""

from __future__ import annotations

import getpass
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target

# Options of a sky target that Cake itself reads; they never reach SkyPilot.
CAKE_OPTIONS = ("python", "sky_python", "setup")
# Image ids SkyPilot takes verbatim; a bare name means a container image.
_IMAGE_PREFIXES = ("docker:", "ami-", "projects/", "skypilot:")
_CLUSTER_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?", re.ASCII)  # fullmatch only


def cluster_name(target: Target, session_name: str) -> str:
    """The SkyPilot cluster of one (target, session name): deterministic, so a cluster left running
    (its session idle-stopped, or started from another machine) is found and re-used, not duplicated.
    SkyPilot cluster names are lowercase letters, digits and '-' and must start with a letter."""
    user = re.sub(r"[^a-z0-9]+", "-", _user().lower()).strip("-")[:12] or "user"
    digest = hashlib.sha256(f"{target.canonical()}\0{session_name}".encode()).hexdigest()[:8]
    name = f"cake-{user}-{digest}"
    # A real check, not an assert (python -O drops those): the name reaches SkyPilot and `sky` commands
    # we suggest, where a leading '-' would read as an option.
    if not _CLUSTER_RE.fullmatch(name):
        raise CakeError(
            f"Cake made the SkyPilot cluster name {name!r}, which is not a valid one (lowercase letters, digits "
            "and '-', starting with a letter). Set USER to a plain user name and try again."
        )
    return name


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return os.environ.get("USER", "user")


def resources(target: Target) -> dict[str, Any]:
    """Keyword arguments for ``sky.Resources`` (JSON-able)."""
    out: dict[str, Any] = {}
    if target.cloud != "local":
        out["infra"] = target.infra
    if target.gpus is not None:
        if not target.gpus.name:
            raise CakeError(
                f"SkyPilot needs a GPU type, not just a count (--gpus {target.gpus.count}). "
                f"Name one, e.g. --gpus T4:{target.gpus.count} or --gpus A100:{target.gpus.count}."
            )
        out["accelerators"] = f"{target.gpus.name}:{target.gpus.count}"
    if target.cpus is not None:
        out["cpus"] = _amount(target.cpus.value) + ("+" if target.cpus.or_more else "")
    if target.memory is not None:
        out["memory"] = _amount(target.memory.value) + ("+" if target.memory.or_more else "")
    if target.image is not None:
        image = target.image
        out["image_id"] = image if image.startswith(_IMAGE_PREFIXES) else f"docker:{image}"
    if target.spot:
        out["use_spot"] = True
    if target.disk is not None:
        out["disk_size"] = target.disk
    return out


def _amount(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def task_spec(target: Target, session_name: str, run: str | None = None) -> dict[str, Any]:
    """Everything the bridge needs to build the task: the user's task YAML (if any) plus the target's
    own resources, which win over the YAML's where both say something."""
    options = target.options_dict()
    spec: dict[str, Any] = {
        "name": f"cake-{session_name}"[:60] if session_name else "cake",
        "resources": resources(target),
        "num_nodes": target.nodes,
        "envs": target.env_dict(),
        "setup": options.get("setup"),
        "run": run,
        "yaml": None,
    }
    if target.task is not None:
        path = Path(target.task).expanduser()
        if not path.is_file():
            raise CakeError(
                f"The SkyPilot task file {target.task!r} does not exist (looked in {path.resolve()}). "
                "Give the path of a task YAML, e.g. --task task.yaml."
            )
        spec["yaml"] = str(path.resolve())
        if target.nodes == 1:
            spec["num_nodes"] = None  # the YAML's num_nodes (if any) stands
    return spec


def autostop_minutes(idle_minutes: float) -> int:
    """SkyPilot counts a cluster idle once no job runs. The nanny is the session's job and ends after
    ``idle_minutes`` without use, so SkyPilot only needs a short grace after that before its autodown
    (whole minutes; at least one)."""
    return max(1, min(5, math.ceil(idle_minutes)))

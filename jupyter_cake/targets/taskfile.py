"""Reading the infra of a SkyPilot task YAML, so `%cake use --task task.yaml` needs no infra of its own.

Only the infra is read here (pyyaml, which Jupyter already depends on); everything else in the file
(resources, envs, setup, workdir, file_mounts) is SkyPilot's to parse, in the bridge. It lives with the
targets, not in the sky backend, because the target line needs it and targets import no backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError


def task_infra(path_text: str) -> str:
    """The infra string (SkyPilot syntax) the task's resources name, e.g. ``slurm/hpc/gpu`` or ``aws/us-east-1``."""
    path = Path(path_text).expanduser()
    try:
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CakeError(f"Could not read the SkyPilot task file {path_text!r}: {exc.strerror or exc}. Give the path of a task YAML.") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and friends: the message says where
        raise CakeError(f"The SkyPilot task file {path_text!r} is not valid YAML: {exc}") from None
    resources: Any = (doc or {}).get("resources") if isinstance(doc, dict) else None
    if isinstance(resources, dict):
        for key in ("any_of", "ordered"):  # candidates: the first one names where
            if isinstance(resources.get(key), list) and resources[key]:
                resources = {**resources, **resources[key][0]}
        infra = resources.get("infra")
        if isinstance(infra, str) and infra.strip():
            return infra.strip()
        parts = [str(resources[k]) for k in ("cloud", "region", "zone") if resources.get(k)]
        if parts and resources.get("cloud"):
            return "/".join(parts)
    raise CakeError(
        f"The SkyPilot task file {path_text!r} names no infra (resources: infra: ...). "
        "Add one there, or give it on the line: `%cake use aws --task task.yaml`."
    )

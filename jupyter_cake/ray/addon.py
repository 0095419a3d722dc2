"""``--ray`` as an add-on (jupyter_cake.addons): the hooks through which Ray plugs into a session.

Registered as the entry point ``ray`` of ``jupyter_cake.addons``. Light to import (no ray, no
backends): the engine loads it for every ``--ray`` target, the Slurm backend for its nanny archive.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_cake.addons import NodePlan, NodeService
from jupyter_cake.errors import CakeError

if TYPE_CHECKING:
    from jupyter_cake.backends.base import Backend, Progress
    from jupyter_cake.targets import Target

RAY_DIR = Path(__file__).resolve().parent


class RayAddon:
    name = "ray"

    def check(self, target: Target, backend: Backend) -> None:
        if not backend.runs_node_services:  # say so before allocating anything
            raise CakeError(
                f"--ray: Ray sessions run on local and slurm/... targets so far, not through the {backend.name} "
                "backend. Drop --ray, or use one of those targets."
            )

    def node_plan(self, target: Target) -> NodePlan:
        from jupyter_cake.ray.session import spec
        from jupyter_cake.ray.slurm import batch_lines

        service = NodeService(name=self.name, module="jupyter_cake.ray.head", spec=spec(target))
        return NodePlan(services=(service,), batch=batch_lines(target.nodes))

    def node_files(self) -> Mapping[str, bytes]:
        from jupyter_cake.ray import REMOTE_MODULES

        return {f"jupyter_cake/ray/{name}": (RAY_DIR / name).read_bytes() for name in REMOTE_MODULES}

    def ready(self, handle: Any, progress: Progress) -> None:
        """The head boots beside the kernel; `use` returns once ray.init() would work."""
        from jupyter_cake.ray.session import wait_ready

        wait_ready(handle, progress)

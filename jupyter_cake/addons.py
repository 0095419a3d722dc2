"""Add-ons: layers above the engine that plug into a session through a few named hooks (Ray today).

The engine and the backends know an add-on only through this interface, never by name, so nothing
below an add-on imports it (no import circles, and a third party can add one). An add-on is turned on
by its target flag (``Target.addons``, e.g. ``--ray``) and registered under the entry point group
``jupyter_cake.addons``, loaded on first use like the backends.

The hooks, and who calls each:

    check(target, backend)   the engine, before anything is allocated: refuse what the backend
                             cannot offer, with the fix (``Backend.runs_node_services``)
    node_plan(target)        the backends, while they build the allocation: services the nanny runs
                             beside the kernel, and lines a batch script (Slurm) runs before the
                             nanny's step
    node_files()             the backends that ship the nanny: the add-on's node-side modules
    ready(handle, progress)  the engine, once a new session's kernel answers: wait for the add-on
                             (e.g. the Ray head), raise its own error if it cannot come up

What a backend offers in return is small and explicit: the nanny's ``--service`` arguments (below),
the batch script's shell variables ``$NANNY``, ``$PYTHON`` and ``$SESSION_DIR``, and a channel that
forwards further ports (``Channel.forward``). The nanny's side of a service is ``jupyter_cake.nanny.services``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from jupyter_cake import entrypoints
from jupyter_cake.errors import CakeError

if TYPE_CHECKING:
    from jupyter_cake.backends.base import Backend, Progress
    from jupyter_cake.targets import Target

ENTRY_POINT_GROUP = "jupyter_cake.addons"


@dataclass(frozen=True)
class NodeService:
    """A process the nanny starts beside the kernel and answers control requests for.

    ``module`` is importable next to the nanny (shipped by ``node_files``); its ``start(session_dir,
    spec, python)`` returns the running service (``jupyter_cake.nanny.services.Service``). ``spec`` is
    JSON that only the add-on reads."""

    name: str
    module: str
    spec: str

    def nanny_args(self) -> list[str]:
        return ["--service", self.name, self.module, self.spec]


@dataclass(frozen=True)
class BatchLines:
    """What an add-on adds to a batch script: ``lines`` run before the nanny's step (fixed text and
    quoted values only), ``nanny_step`` are extra options of the nanny's own step (e.g. a node list)."""

    lines: tuple[str, ...] = ()
    nanny_step: str = ""


@dataclass(frozen=True)
class NodePlan:
    """Everything the add-ons of one target ask of the allocation; empty for a plain session."""

    services: tuple[NodeService, ...] = ()
    batch: BatchLines = field(default_factory=BatchLines)

    def nanny_args(self) -> list[str]:
        return [arg for service in self.services for arg in service.nanny_args()]


class Addon(Protocol):
    name: str

    def check(self, target: Target, backend: Backend) -> None: ...

    def node_plan(self, target: Target) -> NodePlan: ...

    def node_files(self) -> Mapping[str, bytes]: ...

    def ready(self, handle: Any, progress: Progress) -> None: ...


@cache
def get_addon(name: str) -> Addon:
    found = entrypoints.find(ENTRY_POINT_GROUP, name)
    if found is None:
        raise CakeError(
            f"--{name} needs Cake's {name!r} add-on, which this installation does not register (installed add-ons: "
            f"{', '.join(entrypoints.names(ENTRY_POINT_GROUP)) or 'none'}). Reinstall with `pip install -U jupyter-cake`, or drop --{name}."
        )
    addon: Addon = found.load()()
    return addon


def addons_for(target: Target) -> list[Addon]:
    return [get_addon(name) for name in target.addons]


def node_plan(target: Target) -> NodePlan:
    """The add-ons' plans for ``target``, merged in flag order."""
    plans = [addon.node_plan(target) for addon in addons_for(target)]
    return NodePlan(
        services=tuple(s for plan in plans for s in plan.services),
        batch=BatchLines(
            lines=tuple(line for plan in plans for line in plan.batch.lines),
            nanny_step="".join(plan.batch.nanny_step for plan in plans),
        ),
    )


def node_files() -> dict[str, bytes]:
    """The node-side files of every installed add-on (archive path -> bytes): one nanny archive serves
    every session of a Cake version, whichever add-ons it turns on."""
    files: dict[str, bytes] = {}
    for name in entrypoints.names(ENTRY_POINT_GROUP):
        files.update(get_addon(name).node_files())
    return files

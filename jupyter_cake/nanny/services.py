"""Services the nanny runs beside the kernel for an add-on (a Ray head, say), known only by this protocol.

A backend passes ``--service NAME MODULE SPEC`` (built by ``jupyter_cake.addons.NodeService``); the
nanny imports MODULE from where it was shipped and calls ``MODULE.start(session_dir, spec, python)``
before it spawns the kernel, so the kernel inherits whatever the service put into ``os.environ``
(RAY_ADDRESS...). Then the nanny

- answers the control request ``service`` (``{"name": NAME, "details": bool}``) with ``status()``;
- counts ``last_busy`` as activity, so idle release never stops a service that is working;
- imports each of the service's ``kernel_hooks`` modules in the kernel (``CAKE_KERNEL_HOOKS``), which
  call their ``install(shell)``;
- calls ``stop()`` when the session ends; a service's own ``process_group`` is recorded with the nanny's
  (groups.py), so a backend stops it even when the nanny died first.

Standard library only, like the rest of the nanny.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("cake.nanny")

KERNEL_HOOKS_ENV = "CAKE_KERNEL_HOOKS"  # comma-separated modules the kernel launcher installs


class Service(Protocol):
    last_busy: float  # epoch seconds of the service's last activity
    kernel_hooks: tuple[str, ...]

    @property
    def process_group(self) -> int | None:
        """The service's own process group, if it made one (stopped with the session: groups.py)."""

    def status(self, details: bool = False) -> dict[str, Any]: ...

    def stop(self) -> None: ...


def start_services(specs: list[list[str]] | None, session_dir: Path, python: str) -> dict[str, Service]:
    """Start every ``[name, module, spec]`` and publish their kernel hooks for the kernel to come."""
    services: dict[str, Service] = {}
    for name, module, spec in specs or []:
        services[name] = importlib.import_module(module).start(session_dir, spec, python)
        log.info("service %s started (%s)", name, module)
    hooks = [hook for service in services.values() for hook in service.kernel_hooks]
    if hooks:
        os.environ[KERNEL_HOOKS_ENV] = ",".join(hooks)
    return services


def install_kernel_hooks(shell: Any) -> None:
    """In the kernel launcher: install the hooks the session's services asked for (and take the
    variable out of the environment, so the user's own subprocesses don't inherit it)."""
    for module in filter(None, os.environ.pop(KERNEL_HOOKS_ENV, "").split(",")):
        importlib.import_module(module).install(shell)

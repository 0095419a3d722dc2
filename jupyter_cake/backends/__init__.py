"""Backend registry: entry points of group ``jupyter_cake.backends``, loaded on first use."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from jupyter_cake import entrypoints
from jupyter_cake.errors import BackendUnavailable

if TYPE_CHECKING:
    from jupyter_cake.backends.base import Backend

ENTRY_POINT_GROUP = "jupyter_cake.backends"

# Cake's own backends whose client library is an optional extra: what to install when it is missing.
_EXTRAS = {
    "kubernetes": ("the Kubernetes backend", "jupyter-cake[k8s]"),
    "sky": ("the SkyPilot backend", "jupyter-cake[sky]"),
}


def available_backends() -> list[str]:
    return entrypoints.names(ENTRY_POINT_GROUP)


@cache
def get_backend(name: str) -> Backend:
    found = entrypoints.find(ENTRY_POINT_GROUP, name)
    if found is None:
        have = ", ".join(available_backends()) or "none"
        if name in _EXTRAS:  # an install whose entry points are incomplete (e.g. a stale editable install)
            what, extra = _EXTRAS[name]
            raise BackendUnavailable(
                f"This target needs {what}, which this installation does not register "
                f"(installed backends: {have}). Reinstall with `pip install -U '{extra}'`, or use the 'local' target."
            )
        raise BackendUnavailable(
            f"No backend named {name!r} is installed (installed backends: {have}). "
            f"Install the package that provides it, or pick another target."
        )
    try:
        backend_cls = found.load()
    except ImportError as exc:
        extra = _EXTRAS.get(name, ("", "jupyter-cake"))[1]
        raise BackendUnavailable(
            f"The {name!r} backend could not be imported ({exc}). Install its extra: `pip install '{extra}'`."
        ) from exc
    backend: Backend = backend_cls()
    return backend

"""Moving variables between the notebook's namespace and a session (``--push`` / ``--pull`` of a
``%%cake`` cell, and ``%cake push`` / ``%cake pull``): cloudpickle frames out, values back in.
"""

from __future__ import annotations

from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.manager import Handle


def push(shell: Any, handle: Handle, names: list[str]) -> None:
    from jupyter_cake import engine
    from jupyter_cake.nanny.kernel import dumps_frames

    handle.ensure_alive()
    ns = shell.user_ns
    missing = [n for n in names if n not in ns]
    if missing:
        raise CakeError(f"--push: {', '.join(map(repr, missing))} is not defined in this notebook.")
    frames: dict[str, list[Any]] = {}
    for name in names:
        try:
            frames[name] = dumps_frames(ns[name])
        except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's to fix
            raise CakeError(
                f"--push: {name!r} ({type(ns[name]).__name__}) cannot be pickled: {exc}. "
                "Push something picklable, or create it in a %%cake cell."
            ) from None
    engine.run(handle.remote.push(frames))


def pull(shell: Any, handle: Handle, names: list[str]) -> None:
    from jupyter_cake import engine

    handle.ensure_alive()
    try:
        values = engine.run(handle.remote.pull(names))
    except CakeError as exc:
        raise CakeError(f"--pull: {exc}. The cell itself ran; nothing was pulled.") from None
    shell.user_ns.update(values)

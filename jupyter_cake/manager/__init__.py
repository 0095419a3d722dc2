"""The session engine every front door uses: start, find, re-attach, run and stop sessions.

Magics, the CLI, the server extension and the IDE bridge all go through ``Cake`` (DESIGN seam 1). It
owns the store rows; the backends own allocations; ``RemoteSession`` speaks the protocols. ``Cake`` is
cut along its seams into three parts that share its state (``state.py``):

- ``starting``  use / start / re-attach (``connect``): allocation, nanny, channel, add-ons ready
- ``ending``    a session that ended (its reason, its runs settled), ``refresh`` and ``down``
- ``lookups``   sessions and runs by reference, a run's journal, ``attach``
- ``handle``    ``Handle``, one connected session: liveness, runs, interrupt, restart
"""

from __future__ import annotations

from jupyter_cake.manager.ending import Ending
from jupyter_cake.manager.handle import LIVENESS_TIMEOUT_S, START_TIMEOUT_S, Handle
from jupyter_cake.manager.lookups import Lookups
from jupyter_cake.manager.starting import REATTACH_TIMEOUT_S, Starting, default_owner, preflight
from jupyter_cake.manager.state import CONNECTION_FILE
from jupyter_cake.store import Store

__all__ = ["CONNECTION_FILE", "LIVENESS_TIMEOUT_S", "REATTACH_TIMEOUT_S", "START_TIMEOUT_S", "Cake", "Handle",
           "default_owner", "preflight"]  # fmt: skip


class Cake(Starting, Ending, Lookups):
    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self._handles: dict[str, Handle] = {}

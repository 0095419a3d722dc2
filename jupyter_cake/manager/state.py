"""What the three parts of ``Cake`` (starting, ending, lookups) share: the store and the open handles,
and the calls each part makes into another (implemented there; declared here so each part type-checks
on its own)."""

from __future__ import annotations

from pathlib import Path

from jupyter_cake.backends.base import Allocation
from jupyter_cake.errors import SessionGone
from jupyter_cake.manager.handle import Handle
from jupyter_cake.store import SessionRow, Store

CONNECTION_FILE = "connection.json"  # NannyInfo incl. the session key: mode 0600, never in the store


class CakeState:
    store: Store
    _handles: dict[str, Handle]

    def connect(self, row: SessionRow) -> Handle | None:  # starting.py
        raise NotImplementedError

    def reap_dead_start(self, row: SessionRow, strict: bool = False) -> str | None:  # starting.py
        raise NotImplementedError

    def mark_stopped(self, row: SessionRow, reason: str | None = None, release: bool = True) -> None:  # ending.py
        raise NotImplementedError

    def gone(self, row: SessionRow) -> SessionGone:  # ending.py
        raise NotImplementedError

    def down(self, row: SessionRow, reason: str = "stopped by the user (cake down)") -> None:  # ending.py
        raise NotImplementedError

    @staticmethod
    def _allocation(row: SessionRow) -> Allocation:
        return Allocation(row.backend, Path(row.session_dir), row.allocation_data)

"""Finding sessions and runs by a user's reference, and reading or following a run's journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_cake import engine
from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.manager.handle import Handle
from jupyter_cake.manager.state import CakeState
from jupyter_cake.nanny.journal import read_entries
from jupyter_cake.session import Sink
from jupyter_cake.store import RunRow, SessionRow


class Lookups(CakeState):
    def find_session(self, ref: str) -> SessionRow:
        rows = self.store.find_session(ref)
        live = [r for r in rows if r.state in ("starting", "running")]
        rows = live or rows
        if not rows:
            raise CakeError(f"No session matches {ref!r}. `%cake status` (or `cake status`) lists sessions.")
        if len({r.id for r in rows}) > 1 and not any(r.id == ref or r.name == ref for r in rows[:1]):
            ids = ", ".join(r.id for r in rows[:5])
            raise CakeError(f"{ref!r} matches several sessions ({ids}); give more of the id.")
        return rows[0]

    def find_run(self, ref: str) -> RunRow:
        rows = self.store.find_runs(ref.strip())
        if not rows:
            raise CakeError(f"No run matches {ref!r}. `%cake runs` (or `cake runs`) lists runs.")
        if len(rows) > 1 and rows[0].id != ref:
            raise CakeError(f"{ref!r} matches several runs ({', '.join(r.id for r in rows[:5])}); give more of the id.")
        return rows[0]

    def journal(self, run: RunRow) -> list[dict[str, Any]]:
        """A run's journaled outputs, from the live nanny or, once it has stopped, from its files."""
        row = self.store.session(run.session_id)
        if row is None:
            return []
        handle = self.connect(row) if row.state in ("starting", "running") else None
        if handle is not None:
            try:
                entries: list[dict[str, Any]] = handle.nanny("journal", run_id=run.id)["entries"]
                return entries
            except SessionGone:
                pass
        return read_entries(Path(row.session_dir) / "journal", run.id)

    def attach(self, run: RunRow, sink: Sink) -> tuple[Handle | None, Any]:
        """Replay + follow a run. Returns (handle, future of Outcome) or (None, None) when only the
        stored journal is left (the session has ended): the caller replays that instead."""
        row = self.store.session(run.session_id)
        handle = self.connect(row) if row is not None and row.state in ("starting", "running") else None
        if handle is None:
            return None, None
        return handle, engine.submit(handle.remote.attach(run.id, sink))

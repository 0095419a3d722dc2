"""Ending sessions: recording why one stopped, settling its runs, and stopping it on request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jupyter_cake.backends import get_backend
from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.manager.handle import LIVENESS_TIMEOUT_S
from jupyter_cake.manager.recovery import note_reachable, note_unreachable
from jupyter_cake.manager.state import CakeState
from jupyter_cake.nanny.journal import read_runs
from jupyter_cake.store import FINAL_RUN_STATES, SessionRow
from jupyter_cake.targets.envmask import retype_hint


class Ending(CakeState):
    def mark_stopped(self, row: SessionRow, reason: str | None = None, release: bool = True) -> None:
        """Record that a session ended, with the nanny's or the backend's reason when there is one."""
        handle = self._handles.pop(row.id, None)
        if handle is not None:  # also when another process recorded the end first: these sockets are dead
            handle.close()
        stored = self.store.session(row.id)
        if reason is None and stored is not None and stored.state in ("stopped", "failed"):
            return  # already recorded, with the better-informed reason
        if reason is None:
            try:
                reason = get_backend(row.backend).ended_reason(self._allocation(stored or row))
            except Exception:  # noqa: BLE001 - a reason is nice to have; recording the end is not optional
                reason = None
        self.store.update_session(row.id, state="stopped", reason=reason or "the session is no longer running")
        self._close_runs(row)
        if release:
            try:  # whatever is left of it (a job in COMPLETING, an SSH master) goes too
                get_backend(row.backend).release(self._allocation(stored or row))
            except Exception:  # noqa: BLE001 - best effort: the session is recorded as ended either way
                pass

    def gone(self, row: SessionRow) -> SessionGone:
        """Record that ``row`` ended and build the error that tells the user why and what to do.
        Only for a session the backend (or the user) ended: one that merely doesn't answer is unreachable
        (``Handle`` reconnects; ``refresh`` notes it), and its allocation must not be released."""
        self.mark_stopped(row)
        fresh = self.store.session(row.id) or row
        return SessionGone(
            f"Session {row.id} ({row.name}) has stopped: {fresh.reason}. "
            f"Start a new one with `%cake use {retype_hint(row.target)}`; `%cake runs` keeps the old runs' output."
        )

    def _close_runs(self, row: SessionRow) -> None:
        """Settle runs the store still thinks are running, from the journal index the nanny left."""
        journal = read_runs(Path(row.session_dir) / "journal")
        for run in self.store.runs(session_id=row.id, states=("queued", "running"), limit=10_000):
            record = journal.get(run.id)
            if record and record["state"] in FINAL_RUN_STATES:
                self.store.update_run(run.id, state=record["state"], error=record.get("error"), ended=record.get("ended"))
            else:
                self.store.update_run(run.id, state="lost", ended=time.time())

    def refresh(self, row: SessionRow) -> dict[str, Any] | None:
        """Ask a live session for its state (and settle its detached runs); None if it has ended or
        can't be reached now. A session that doesn't answer is recorded as stopped only when its backend
        says the allocation ended; otherwise it stays running, noted as unreachable (``cake status``)."""
        if row.state not in ("starting", "running"):
            return None
        handle = self.connect(row)
        if handle is None:
            note_unreachable(self.store, row.id)  # connect() already recorded an allocation that ended
            return None
        try:
            ping = handle.nanny("ping")
            runs = handle.nanny("runs")["runs"]
        except SessionGone:
            if get_backend(row.backend).status(self._allocation(row)) == "stopped":
                self.mark_stopped(row)
            else:
                note_unreachable(self.store, row.id)
            return None
        note_reachable(self.store, row.id)
        for run in self.store.runs(session_id=row.id, states=("queued", "running"), limit=10_000):
            record = runs.get(run.id)
            if record and record["state"] in FINAL_RUN_STATES:
                self.store.update_run(run.id, state=record["state"], error=record.get("error"), ended=record.get("ended"))
        return ping

    def down(self, row: SessionRow, reason: str = "stopped by the user (cake down)") -> None:
        row = self.store.session(row.id) or row  # the caller's copy may predate the allocation details
        if self.reap_dead_start(row, strict=True) is not None:
            return  # its start had been killed half-way: what that left is released now
        backend = get_backend(row.backend)
        if row.id not in self._handles and row.state == "running":
            try:
                self.connect(row)  # to ask the nanny itself, below
            except CakeError:
                pass
        handle = self._handles.pop(row.id, None)
        if handle is not None:
            # Ask the nanny first, so its own record says why it stopped; release frees the rest.
            try:
                handle.nanny("shutdown", reason=reason, timeout=LIVENESS_TIMEOUT_S)
            except CakeError:
                pass
            handle.close()
        backend.release(self._allocation(row))
        self.mark_stopped(row, reason=reason, release=False)

"""The session engine every front door uses: start, find, re-attach, run and stop sessions.

Magics, the CLI, the server extension and the IDE bridge all go through ``Cake`` (DESIGN seam 1). It
owns the store rows; the backends own allocations; ``RemoteSession`` speaks the protocols.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_cake import engine
from jupyter_cake.backends import get_backend
from jupyter_cake.backends.base import Allocation, Backend, NannyInfo, Progress, idle_minutes, no_progress
from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.nanny.journal import read_entries, read_runs
from jupyter_cake.session import Outcome, RemoteSession, Sink
from jupyter_cake.store import FINAL_RUN_STATES, RunRow, SessionRow, Store, new_id, private_dir, sessions_root
from jupyter_cake.targets import Target

START_TIMEOUT_S = 120.0
REATTACH_TIMEOUT_S = 10.0
LIVENESS_PING_AFTER_S = 1.0  # a session silent for longer is pinged before a run is sent to it
LIVENESS_TIMEOUT_S = 3.0
CONNECTION_FILE = "connection.json"  # NannyInfo incl. the session key: mode 0600, never in the store


def default_owner() -> str:
    """Sessions are reused per notebook: Jupyter tells a kernel its notebook through JPY_SESSION_NAME."""
    return os.environ.get("JPY_SESSION_NAME", "")


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


@dataclass
class Handle:
    """A connected session, usable from synchronous code."""

    row: SessionRow
    target: Target
    backend: Backend
    allocation: Allocation
    remote: RemoteSession
    cake: Cake
    _probe: Any = None  # concurrent future of a background liveness ping

    @property
    def id(self) -> str:
        return self.row.id

    def ensure_alive(self) -> None:
        """Raise SessionGone (with the nanny's reason) instead of sending work into the void."""
        if time.monotonic() - self.remote.last_seen < LIVENESS_PING_AFTER_S:
            return
        try:
            self.nanny("ping", timeout=LIVENESS_TIMEOUT_S)
        except SessionGone:
            if not self.repaired():
                raise self.cake.gone(self.row) from None

    def probe(self) -> None:
        """Start a liveness ping in the background if the session has been silent for a while.

        A run is sent at once and the ping travels beside it, so a warm cell never waits for it;
        ``check_probe`` turns a failed ping into the SessionGone error while the cell waits."""
        if self._probe is None and time.monotonic() - self.remote.last_seen >= LIVENESS_PING_AFTER_S:
            self._probe = engine.submit(self.remote.nanny("ping", timeout=LIVENESS_TIMEOUT_S))

    def check_probe(self) -> None:
        probe = self._probe
        if probe is None or not probe.done():
            return
        self._probe = None
        if isinstance(probe.exception(), SessionGone) and not self.repaired():
            raise self.cake.gone(self.row)

    def repaired(self) -> bool:
        """After a failed ping: if the channel (e.g. an SSH tunnel) dropped but could be brought back
        and the nanny answers again, the session is fine."""
        if not self.remote.channel.repair():
            return False
        try:
            self.nanny("ping", timeout=LIVENESS_TIMEOUT_S)
        except SessionGone:
            return False
        return True

    def start_run(self, code: str, sink: Sink | None, detach: bool = False, source: str = "") -> tuple[str, Any]:
        """Record and send a run; returns (run id, concurrent future of its Outcome or None)."""
        if detach:
            self.ensure_alive()  # nobody waits on a detached run: check before promising one
        else:
            self.probe()
        run_id = new_id("r-")
        now = time.time()
        future = engine.submit(self.remote.execute(code, run_id, sink, detach=detach))
        # Recorded while the kernel already works on it: the write costs the cell no time.
        self.cake.store.add_run(
            RunRow(id=run_id, session_id=self.id, state="running", created=now, started=now, code=code,
                   source=source, detached=int(detach))
        )  # fmt: skip
        return run_id, future

    def finish_run(self, outcome: Outcome) -> None:
        error = None
        if outcome.error:
            error = f"{outcome.error.get('ename')}: {outcome.error.get('evalue')}"
        state = outcome.status
        if error and error.startswith("KeyboardInterrupt"):
            state = "aborted"
        self.cake.store.update_run(outcome.run_id, state=state, error=error, ended=time.time())

    def interrupt(self) -> None:
        engine.run(self.remote.interrupt(), timeout=5)

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """A fresh kernel in the same allocation (same ports and key); remote state is gone."""
        self.nanny("restart")
        engine.run(self.remote.wait_ready(timeout))

    def nanny(self, op: str, **args: Any) -> dict[str, Any]:
        return engine.run(self.remote.nanny(op, **args))

    def close(self) -> None:
        """Disconnect this process from the session (the session keeps running)."""
        try:
            engine.run(self.remote.close(), timeout=5)
        except Exception:  # noqa: BLE001 - closing sockets of a dead session may fail; nothing to do
            pass


class Cake:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self._handles: dict[str, Handle] = {}

    # -- starting and finding sessions ---------------------------------------------------------------
    def use(
        self,
        target: Target,
        *,
        name: str | None = None,
        owner: str | None = None,
        new: bool = False,
        progress: Progress = no_progress,
        timeout: float | None = None,
    ) -> tuple[Handle, bool]:
        """A live session for ``target``: the existing one with that name (re-attached) unless ``new``.
        Returns (handle, started) where started says whether a new session was launched.
        ``timeout`` bounds the start; None: the backend's own default (a cloud launch takes minutes)."""
        name = name or target.name or target.canonical()
        owner = default_owner() if owner is None else owner
        backend = get_backend(target.backend_name)  # fails early for unavailable infra
        if target.ray and not backend.supports_ray:  # say so before allocating anything
            raise CakeError(
                f"--ray: Ray sessions run on local and slurm/... targets so far, not through the {backend.name} "
                "backend. Drop --ray, or use one of those targets."
            )
        if timeout is None:
            timeout = backend.start_timeout
        if not new:
            row = self.store.live_session(name, owner)
            if row is not None and row.target == target.canonical():
                handle = self.connect(row)
                if handle is not None:
                    return handle, False
            elif row is not None:
                progress(f"session {row.id} ({name}) runs a different target; starting a new one")
        return self._start(target, backend, name, owner, progress, timeout), True

    def _start(
        self, target: Target, backend: Backend, name: str, owner: str, progress: Progress, timeout: float
    ) -> Handle:
        session_id = new_id("s-")
        session_dir = private_dir(sessions_root(self.store) / session_id)
        now = time.time()
        row = SessionRow(
            id=session_id, name=name, owner=owner, target=target.canonical(),
            target_json=json.dumps(target.to_dict()), backend=backend.name, state="starting",
            session_dir=str(session_dir), created=now, updated=now,
            price_per_hour=backend.price_per_hour(target), idle_minutes=idle_minutes(target),
        )  # fmt: skip
        self.store.add_session(row)
        allocation: Allocation | None = None
        try:
            progress(f"starting session {session_id} on {target.describe()}", transient=True)
            allocation = backend.allocate(target, session_dir, progress)
            self.store.update_session(session_id, allocation=json.dumps(allocation.data))
            info = backend.start_nanny(allocation, target, progress, timeout)
            if allocation.data.get("price_per_hour") is not None:  # known only once launched (SkyPilot)
                row.price_per_hour = float(allocation.data["price_per_hour"])
                self.store.update_session(session_id, price_per_hour=row.price_per_hour)
            row.allocation = json.dumps(allocation.data)
            self.store.update_session(session_id, allocation=row.allocation)
            _write_private_json(session_dir / CONNECTION_FILE, info.to_report())
            handle = self._open(row, target, backend, allocation, info, timeout)
            if target.ray:  # the head boots beside the kernel; `use` returns once ray.init() would work
                from jupyter_cake.ray.session import wait_ready

                wait_ready(handle, progress)
        except BaseException as exc:
            # Nothing may be left running behind a failed start (including Ctrl-C during it).
            if allocation is not None:
                backend.release(allocation)
            reason = str(exc) if isinstance(exc, CakeError) else f"{type(exc).__name__}: {exc}"
            self.store.update_session(session_id, state="failed", reason=reason[:2000])
            raise
        self.store.update_session(session_id, state="running")
        handle.row.state = "running"
        return handle

    def _open(
        self, row: SessionRow, target: Target, backend: Backend, allocation: Allocation, info: NannyInfo,
        timeout: float, wait_kernel: bool = True,
    ) -> Handle:  # fmt: skip
        channel = backend.open_channel(allocation, info)
        row.allocation = json.dumps(allocation.data)  # the channel may have recorded its local ports
        self.store.update_session(row.id, allocation=row.allocation)
        remote = RemoteSession(channel, label=f"{row.id} ({row.name})")
        try:
            engine.run(remote.connect(timeout, wait_kernel=wait_kernel))
        except BaseException:
            engine.run(remote.close(), timeout=5)
            raise
        handle = Handle(row, target, backend, allocation, remote, self)
        self._handles[row.id] = handle
        return handle

    def connect(self, row: SessionRow) -> Handle | None:
        """Re-attach to a session started earlier (maybe by another process); None if it has ended."""
        cached = self._handles.get(row.id)
        if cached is not None:
            return cached
        backend = get_backend(row.backend)
        allocation = self._allocation(row)
        info_path = Path(row.session_dir) / CONNECTION_FILE
        status = backend.status(allocation)
        if status == "stopped":
            self.mark_stopped(row)
            return None
        if status != "running" or row.state == "starting" or not info_path.exists():
            return None  # queued, unreachable right now, or still being started by another process
        info = NannyInfo.from_report(json.loads(info_path.read_text()))
        target = Target.from_dict(json.loads(row.target_json))
        try:
            return self._open(row, target, backend, allocation, info, REATTACH_TIMEOUT_S, wait_kernel=False)
        except CakeError:
            # The nanny did not answer: gone for good only if the backend agrees (it may be unreachable).
            if backend.status(allocation) == "stopped":
                self.mark_stopped(row)
            return None

    def mark_stopped(self, row: SessionRow, reason: str | None = None, release: bool = True) -> None:
        """Record that a session ended, with the nanny's or the backend's reason when there is one."""
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
        handle = self._handles.pop(row.id, None)
        if handle is not None:
            handle.close()
        if release:
            try:  # whatever is left of it (a job in COMPLETING, an SSH master) goes too
                get_backend(row.backend).release(self._allocation(stored or row))
            except Exception:  # noqa: BLE001 - best effort: the session is recorded as ended either way
                pass

    @staticmethod
    def _allocation(row: SessionRow) -> Allocation:
        return Allocation(row.backend, Path(row.session_dir), row.allocation_data)

    def gone(self, row: SessionRow) -> SessionGone:
        """Record that ``row`` ended and build the error that tells the user why and what to do."""
        self.mark_stopped(row)
        fresh = self.store.session(row.id) or row
        return SessionGone(
            f"Session {row.id} ({row.name}) has stopped: {fresh.reason}. "
            f"Start a new one with `%cake use {row.target}`; `%cake runs` keeps the old runs' output."
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
        """Ask a live session for its state (and settle its detached runs); None if it has ended."""
        if row.state not in ("starting", "running"):
            return None
        handle = self.connect(row)
        if handle is None:
            return None
        try:
            ping = handle.nanny("ping")
            runs = handle.nanny("runs")["runs"]
        except SessionGone:
            self.mark_stopped(row)
            return None
        for run in self.store.runs(session_id=row.id, states=("queued", "running"), limit=10_000):
            record = runs.get(run.id)
            if record and record["state"] in FINAL_RUN_STATES:
                self.store.update_run(run.id, state=record["state"], error=record.get("error"), ended=record.get("ended"))
        return ping

    def down(self, row: SessionRow, reason: str = "stopped by the user (cake down)") -> None:
        row = self.store.session(row.id) or row  # the caller's copy may predate the allocation details
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

    # -- lookups ------------------------------------------------------------------------------------------
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


"""A connected session, usable from synchronous code: liveness, runs, interrupt, restart.

The Handle belongs to a ``Cake`` (jupyter_cake.manager), which it knows only as an ``Owner``: the store
it records runs in, the call that settles a session that has ended, and stopping it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from jupyter_cake import engine
from jupyter_cake.backends.base import Allocation, Backend
from jupyter_cake.errors import CakeError, SessionGone, SessionUnreachable
from jupyter_cake.manager.recovery import Recovery, note_reachable, note_unreachable
from jupyter_cake.session import Outcome, RemoteSession, Sink
from jupyter_cake.store import RunRow, SessionRow, Store, new_id
from jupyter_cake.targets import Target
from jupyter_cake.targets.envmask import retype_hint

START_TIMEOUT_S = 120.0
LIVENESS_PING_AFTER_S = 1.0  # a session silent for longer is pinged before a run is sent to it
LIVENESS_TIMEOUT_S = 3.0
DISCONNECT_GRACE_S = 0.5  # iopub down for longer (its socket monitor says so): the channel is repaired


class Owner(Protocol):
    """What a Handle (and whoever holds one, e.g. the IDE proxy) may ask of the Cake it belongs to."""

    store: Store

    def gone(self, row: SessionRow) -> SessionGone: ...

    def down(self, row: SessionRow, reason: str = ...) -> None: ...


@dataclass
class Handle:
    """A connected session, usable from synchronous code."""

    row: SessionRow
    target: Target
    backend: Backend
    allocation: Allocation
    remote: RemoteSession
    cake: Owner
    _probe: Any = None  # concurrent future of a background liveness ping
    _recovery: Recovery | None = None  # the channel dropped: getting it back (recovery.py)
    closed: bool = False  # disconnected: its sockets are gone, whoever still holds it gets SessionGone

    @property
    def id(self) -> str:
        return self.row.id

    def ensure_alive(self) -> None:
        """Make sure the session answers before work is sent to it: after a failed ping, wait until the
        channel is back. Raises SessionGone only when the backend says the allocation ended, and
        SessionUnreachable when it can't be reached for too long (the session is kept)."""
        if self._recovery is None:
            if time.monotonic() - self.remote.last_seen < LIVENESS_PING_AFTER_S:
                return
            try:
                self.nanny("ping", timeout=LIVENESS_TIMEOUT_S)
                return
            except SessionGone:
                self._start_recovery()
        recovery = self._recovery
        assert recovery is not None
        try:
            recovery.future.result()
        except KeyboardInterrupt:
            self.stop_waiting_if_reconnecting()
            raise
        self._settle(recovery)

    def probe(self) -> None:
        """Start a liveness ping in the background if the session has been silent for a while.

        A run is sent at once and the ping travels beside it, so a warm cell never waits for it;
        ``check_probe`` turns a failed ping into a reconnect while the cell waits."""
        if self._probe is None and self._recovery is None and time.monotonic() - self.remote.last_seen >= LIVENESS_PING_AFTER_S:
            self._probe = engine.submit(self.remote.nanny("ping", timeout=LIVENESS_TIMEOUT_S))

    def check_probe(self) -> None:
        """Called while a run is followed: a failed ping or a dropped iopub connection starts a reconnect
        (``reconnecting`` then says for how long). Raises SessionGone once the backend says the allocation
        ended, SessionUnreachable when not even the backend answers for too long."""
        recovery = self._recovery
        if recovery is not None:
            if recovery.future.done():
                self._settle(recovery)
            return
        probe = self._probe
        if probe is not None and probe.done():
            self._probe = None
            if not probe.cancelled() and isinstance(probe.exception(), SessionGone):
                self._start_recovery()
            return
        down = self.remote.disconnected_since
        if down is not None and time.monotonic() - down > DISCONNECT_GRACE_S:
            self._start_recovery()

    @property
    def reconnecting(self) -> float | None:
        """Seconds since the channel dropped while Cake reconnects; None when the session answers."""
        recovery = self._recovery
        return None if recovery is None else recovery.seconds

    def stop_waiting_if_reconnecting(self) -> None:
        """On Ctrl-C while the session is unreachable there is nothing to interrupt through: stop waiting
        (SessionUnreachable), the session stays, marked unreachable. Otherwise nothing happens."""
        recovery, self._recovery = self._recovery, None
        if recovery is not None:
            recovery.cancel()
            raise SessionUnreachable(self._unreachable_text("Stopped waiting for it")) from None

    def _start_recovery(self) -> None:
        if self._recovery is not None:
            return
        self._recovery = Recovery(self.repaired, lambda: self.backend.status(self.allocation))
        note_unreachable(self.cake.store, self.id, self._recovery.started_wall)

    def _settle(self, recovery: Recovery) -> None:
        """Act on a finished recovery's verdict: resume, or raise why not."""
        self._recovery = None
        verdict = recovery.future.result()
        if verdict == "reachable":
            note_reachable(self.cake.store, self.id)
            engine.loop().call_soon_threadsafe(self.remote.mark_gap)  # what iopub dropped meanwhile
            return
        if verdict == "stopped":  # the backend's own word: now, and only now, the session is dead
            raise self.cake.gone(self.row)
        raise SessionUnreachable(self._unreachable_text(f"Gave up after {recovery.seconds:.0f} s"))

    def _unreachable_text(self, what: str) -> str:
        return (
            f"Session {self.id} ({self.row.name}) cannot be reached: its channel dropped. {what}; the session "
            f"was NOT stopped (its allocation may still be running, and billing). Once the network is back, "
            f"re-attach with `%cake use {retype_hint(self.row.target)}` (a run that was going on: `%cake attach RUN`, ids "
            f"in `%cake runs`); `%cake down {self.id}` stops it."
        )

    def repaired(self) -> bool:
        """One attempt to bring the channel back: the transport (e.g. an SSH tunnel) re-established
        if it dropped, and the nanny answering again."""
        try:
            if not self.remote.channel.repair():
                return False
        except CakeError:
            raise  # a cause the user must see (e.g. a refused host key), not a link that is still down
        except Exception:  # noqa: BLE001 - a repair that fails is one more failed attempt; the next may work
            return False
        try:
            self.nanny("ping", timeout=LIVENESS_TIMEOUT_S)
        except CakeError:  # no answer yet (or a closed handle: its session was recorded as ended)
            return False
        return True

    def start_run(
        self, code: str, sink: Sink | None, detach: bool = False, source: str = "", allow_stdin: bool = False
    ) -> tuple[str, Any]:
        """Record and send a run; returns (run id, concurrent future of its Outcome or None).
        ``allow_stdin``: the front door can ask its user when the remote code calls input()."""
        self._refuse_if_closed()
        if detach:
            self.ensure_alive()  # nobody waits on a detached run: check before promising one
        else:
            self.probe()
        run_id = new_id("r-")
        now = time.time()
        future = engine.submit(self.remote.execute(code, run_id, sink, detach=detach, allow_stdin=allow_stdin))
        # Recorded while the kernel already works on it: the write costs the cell no time.
        self.cake.store.add_run(
            RunRow(id=run_id, session_id=self.id, state="running", created=now, started=now, code=code,
                   source=source, detached=int(detach))
        )  # fmt: skip
        return run_id, future

    def send_comm(self, msg_type: str, content: dict[str, Any], buffers: Any, sink: Sink, timeout: float) -> Any:
        """Forward a frontend's comm message to the remote kernel (see RemoteSession.send_comm); returns
        a concurrent future, done once the kernel has handled it (or after ``timeout``)."""
        self._refuse_if_closed()
        return engine.submit(self.remote.send_comm(msg_type, content, buffers, sink, timeout))

    def comm_states(self, target_name: str, timeout: float) -> list[tuple[str, Any]]:
        """The remote kernel's open comms of ``target_name`` and their states (RemoteSession.comm_states)."""
        self._refuse_if_closed()
        return engine.run(self.remote.comm_states(target_name, timeout), timeout=timeout * 4)

    def finish_run(self, outcome: Outcome) -> None:
        error = None
        if outcome.error:
            error = f"{outcome.error.get('ename')}: {outcome.error.get('evalue')}"
        state = outcome.status
        if error and error.startswith("KeyboardInterrupt"):
            state = "aborted"
        self.cake.store.update_run(outcome.run_id, state=state, error=error, ended=time.time())

    def interrupt(self) -> None:
        self._refuse_if_closed()
        engine.run(self.remote.interrupt(), timeout=5)

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """A fresh kernel in the same allocation (same ports and key); remote state is gone."""
        self.nanny("restart")
        engine.run(self.remote.wait_ready(timeout))

    def nanny(self, op: str, **args: Any) -> dict[str, Any]:
        self._refuse_if_closed()
        return engine.run(self.remote.nanny(op, **args))

    def _refuse_if_closed(self) -> None:
        """A front door may keep a Handle after its session ended (the magics' current session): say
        again why it ended, instead of using the sockets that went with it."""
        if self.closed:
            raise self.cake.gone(self.row)

    def close(self) -> None:
        """Disconnect this process from the session (the session keeps running)."""
        self.closed = True
        try:
            engine.run(self.remote.close(), timeout=5)
        except Exception:  # noqa: BLE001 - closing sockets of a dead session may fail; nothing to do
            pass

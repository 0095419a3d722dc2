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
from jupyter_cake.errors import SessionGone
from jupyter_cake.session import Outcome, RemoteSession, Sink
from jupyter_cake.store import RunRow, SessionRow, Store, new_id
from jupyter_cake.targets import Target

START_TIMEOUT_S = 120.0
LIVENESS_PING_AFTER_S = 1.0  # a session silent for longer is pinged before a run is sent to it
LIVENESS_TIMEOUT_S = 3.0


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
    closed: bool = False  # disconnected: its sockets are gone, whoever still holds it gets SessionGone

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
        self._refuse_if_closed()
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

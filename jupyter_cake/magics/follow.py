"""Following a run to its end: relay its outputs into the cell, turn Ctrl-C (the notebook's stop
button) and ``--timeout`` into a remote interrupt, and notice a session that ends under the run.
Used by ``%%cake`` cells and ``%cake attach``.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from jupyter_cake import widget
from jupyter_cake.errors import CakeError, RunTimeout
from jupyter_cake.magics.context import StatusLine
from jupyter_cake.manager import Handle
from jupyter_cake.relay import Relay

INTERRUPT_GRACE_S = 5.0  # after an interrupt, how long to wait for the remote cell to stop
POLL_S = 0.05
LIVENESS_CHECK_S = 2.0


class Follower:
    """One wait on one run. Afterwards ``interrupted`` says whether the user pressed stop during it."""

    def __init__(self, header: widget.RunHeader | None = None) -> None:
        self.header = header  # the in-cell run header, ticked while waiting
        self.interrupted = False
        self._outage: StatusLine | None = None  # "reconnecting (N s)", updated in place while unreachable
        self._outage_shown = -1

    def _show_reconnecting(self, handle: Handle) -> None:
        """While the channel is down: one line in the cell counting the seconds, and the header says so;
        once the session answers again, the line says how long it took and the relay goes on."""
        seconds = handle.reconnecting
        if seconds is None:
            if self._outage is not None:
                self._outage(f"session {handle.id} reachable again; the run goes on")
                self._outage, self._outage_shown = None, -1
                self._header_state("running")
            return
        if int(seconds) == self._outage_shown:
            return
        if self._outage is None:
            self._outage = StatusLine()
            self._header_state("reconnecting")
        self._outage_shown = int(seconds)
        self._outage(f"session {handle.id} unreachable: reconnecting ({self._outage_shown} s); it was not stopped, "
                     "Ctrl-C stops waiting", transient=True)  # fmt: skip

    def _header_state(self, state: str) -> None:
        if self.header is not None:
            self.header.state = state
            self.header.tick(force=True)

    def follow(
        self, handle: Handle, future: Any, sink: queue.SimpleQueue[Any], relay: Relay, timeout: float | None,
        run_id: str,
    ) -> Any:  # fmt: skip
        """Relay outputs until the run ends; Ctrl-C (the notebook's stop button) interrupts the remote
        cell and keeps relaying so its traceback and last outputs still arrive."""
        try:
            return self._relay_until_done(handle, future, sink, relay, timeout, run_id)
        except BaseException:
            future.cancel()  # stop waiting on the engine loop too
            raise

    def _relay_until_done(
        self, handle: Handle, future: Any, sink: queue.SimpleQueue[Any], relay: Relay, timeout: float | None,
        run_id: str,
    ) -> Any:  # fmt: skip
        self.interrupted = False
        deadline = time.monotonic() + timeout if timeout else None
        give_up: float | None = None
        timed_out = False
        last_check = time.monotonic()
        finished = object()
        future.add_done_callback(lambda _: sink.put(finished))  # wakes the loop the moment the run ends
        while True:
            try:
                item = sink.get(timeout=POLL_S)
                if item is not finished:
                    relay(item)
                    continue
            except queue.Empty:
                pass
            except KeyboardInterrupt:
                handle.stop_waiting_if_reconnecting()
                if self.interrupted:
                    raise  # a second Ctrl-C: stop waiting
                self.interrupted = True
                handle.interrupt()
                give_up = time.monotonic() + INTERRUPT_GRACE_S
                continue
            if future.done():
                while True:
                    try:
                        item = sink.get_nowait()
                    except queue.Empty:
                        break
                    if item is not finished:
                        relay(item)
                break
            now = time.monotonic()
            if self.header is not None:
                self.header.tick()
            handle.check_probe()  # the channel may drop, the session may end under a running cell
            self._show_reconnecting(handle)
            if now - last_check > LIVENESS_CHECK_S:
                last_check = now
                handle.probe()
            if deadline is not None and now > deadline and not timed_out:
                timed_out = True
                handle.interrupt()
                give_up = now + INTERRUPT_GRACE_S
            if give_up is not None and now > give_up:
                raise CakeError(
                    f"Run {run_id} did not stop within {INTERRUPT_GRACE_S:g} s of the interrupt; it may still be "
                    f"running on session {handle.id}. `%cake down {handle.id}` stops the session."
                )
        outcome = future.result()
        if timed_out:
            handle.finish_run(outcome)
            raise RunTimeout(f"Run {run_id} exceeded --timeout {timeout:g} s and was interrupted; the session is still usable.")
        return outcome

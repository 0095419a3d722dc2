"""Getting a session back after its channel dropped (a network outage, a laptop that slept).

An unreachable session is *unreachable*, not dead: only the backend's own word (the job, Pod or cluster
ended: ``backend.status(allocation) == "stopped"``) or the user (``cake down``) ends an allocation. So a
``Recovery`` retries the channel with backoff until the nanny answers again, asks the backend now and
then whether the allocation still lives, and gives up only when the backend says it ended, or when not
even the backend could be asked for ``UNREACHABLE_LIMIT_S`` (the session then stays, marked unreachable).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from jupyter_cake.store import Store

RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0  # the backoff between attempts to bring the channel back
STATUS_EVERY_S = 5.0  # how often the backend is asked whether the allocation still lives
# How long a cell waits when not even the backend can be asked (the cluster itself is unreachable);
# while the backend says the allocation lives, the cell waits on (Ctrl-C stops waiting).
UNREACHABLE_LIMIT_S = float(os.environ.get("CAKE_UNREACHABLE_LIMIT_S", "300"))
UNREACHABLE = "unreachable"  # how a session's note in the store starts while it can't be reached

Verdict = Literal["reachable", "stopped", "unreachable", "cancelled"]


def is_unreachable_note(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(UNREACHABLE)


def note_unreachable(store: Store, session_id: str, since: float | None = None) -> None:
    """Note on a running session (the store's ``reason`` column, which the views show) that it can't be
    reached right now. Never a state change: it was not stopped, and ``%cake use`` still finds it."""
    row = store.session(session_id)
    if row is not None and row.state == "running" and not is_unreachable_note(row.reason):
        when = time.strftime("%H:%M:%S", time.localtime(since or time.time()))
        store.update_session(session_id, reason=f"{UNREACHABLE} since {when}: its channel dropped; "
                                                 "NOT stopped, Cake reconnects when used")  # fmt: skip


def note_reachable(store: Store, session_id: str) -> None:
    row = store.session(session_id)
    if row is not None and row.state == "running" and is_unreachable_note(row.reason):
        store.update_session(session_id, reason=None)


class Recovery:
    """One outage, worked on in a daemon thread (it runs ssh/kubectl, and must never keep a process
    from exiting). ``future`` resolves to the verdict."""

    def __init__(self, attempt: Callable[[], bool], backend_status: Callable[[], str]) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.future: concurrent.futures.Future[Verdict] = concurrent.futures.Future()
        self._cancelled = threading.Event()
        self._attempt, self._status = attempt, backend_status
        threading.Thread(target=self._run, name="cake-reconnect", daemon=True).start()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def cancel(self) -> None:
        self._cancelled.set()

    def _run(self) -> None:
        try:
            self.future.set_result(self._loop())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            self.future.set_exception(exc)

    def _loop(self) -> Verdict:
        delay, next_status = RETRY_FIRST_S, 0.0
        unknown_since: float | None = None
        while not self._cancelled.is_set():
            if self._attempt():
                return "reachable"
            now = time.monotonic()
            if now >= next_status:
                status = self._ask_backend()
                next_status = time.monotonic() + STATUS_EVERY_S
                if status == "stopped":
                    return "stopped"
                if status in ("running", "pending"):
                    unknown_since = None  # the allocation lives: keep waiting for the channel
                elif now - (unknown_since := unknown_since or now) >= UNREACHABLE_LIMIT_S:
                    return "unreachable"
            self._cancelled.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return "cancelled"

    def _ask_backend(self) -> str:
        try:
            return self._status()
        except Exception:  # noqa: BLE001 - a backend that can't be asked says nothing about the allocation
            return "unknown"

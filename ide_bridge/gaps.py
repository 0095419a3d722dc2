"""Filling the proxy's iopub gaps from the nanny's journal, so an IDE loses no output when the channel drops.

The proxy relays the remote kernel's iopub frames untouched. A SUB socket whose connection breaks (an SSH
master killed, a laptop's network gone) misses everything the kernel publishes until it reconnects, and
ZeroMQ reconnects silently: without this, the cell shows lines 0-3 and 7-11 and says it finished. The
nanny journals every run's outputs on the node, numbered per run, so for each execute in flight:

- while it runs, the proxy counts the journaled messages it forwarded (the journal's ``seq``) and keeps
  their ids;
- when iopub's socket monitor says the connection broke, live messages of the run are held;
- once it is back, the journal is read from the first missing entry on, and those entries go to the
  frontend in order, then the held live ones not delivered yet; reading stops when the journal has
  reached the first held message (nothing before it is missing) or says the run ended;
- a run that ended during the gap gets the idle status (and the execute_reply, if that was lost too)
  the frontend would otherwise wait for forever, from the journal's record of how it ended.

Comm traffic is not journaled: a widget update lost in a gap is not replayed.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_cake.session.wire import JOURNALED_TYPES

FETCH_RETRY_S = 0.1  # the journal has not reached the held messages yet: ask again after this
REPLY_GRACE_S = 1.0  # after the run ended, how long its execute_reply may still come before one is made


@dataclass
class _Run:
    idents: list[bytes]
    parent: dict[str, Any]  # the frontend's execute_request header
    seq: int = 0  # journaled messages of the run delivered to the frontend
    seen: set[str] = field(default_factory=set)  # their msg_ids (live or from the journal)
    held: list[tuple[list[Any], list[Any], dict[str, Any]]] | None = None  # (frames, parts, header) in a gap
    fetch: concurrent.futures.Future[Any] | None = None
    next_fetch: float = 0.0
    replied: bool = False
    ended: dict[str, Any] | None = None  # the journal's run record, once it says the run ended
    ended_at: float = 0.0
    execution_count: int | None = None
    error: dict[str, Any] | None = None


class Gaps:
    """The executes in flight and their gaps. ``forward(frames)`` sends raw iopub frames on to the
    frontend; ``send(channel, msg_type, content, parent, metadata, buffers, idents)`` writes a message."""

    def __init__(self, fetch: Callable[[str, int], dict[str, Any]], workers: concurrent.futures.Executor,
                 forward: Callable[[list[Any]], None], send: Callable[..., None]) -> None:  # fmt: skip
        self._fetch, self._workers, self._forward, self._send = fetch, workers, forward, send
        self.runs: dict[str, _Run] = {}
        self.open = False  # iopub's connection is broken now

    def started(self, idents: list[bytes], header: dict[str, Any]) -> None:
        self.runs[header["msg_id"]] = _Run(idents, header)

    def replied(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.replied = True

    def iopub(self, frames: list[Any], parts: list[Any]) -> bool:
        """A live iopub message: True to forward it now, False when it is held (or already delivered)."""
        run_id = json.loads(parts[1].bytes).get("msg_id", "")
        run = self.runs.get(run_id)
        if run is None:
            return True
        header = json.loads(parts[0].bytes)
        if run.held is not None:
            run.held.append((frames, parts, header))
            return False
        return self._live(run_id, run, header, parts)

    def _live(self, run_id: str, run: _Run, header: dict[str, Any], parts: list[Any]) -> bool:
        if header["msg_id"] in run.seen:
            return False
        run.seen.add(header["msg_id"])
        if header["msg_type"] in JOURNALED_TYPES:
            run.seq += 1
        if header["msg_type"] == "status" and json.loads(parts[3].bytes).get("execution_state") == "idle":
            self.runs.pop(run_id, None)
        return True

    def disconnected(self) -> None:
        self.open = True
        for run in self.runs.values():
            if run.held is None:
                run.held = []

    def connected(self) -> None:
        self.open = False
        for run in self.runs.values():
            run.next_fetch = 0.0

    @property
    def busy(self) -> bool:
        """Work is waiting (a fetch, a made-up reply): the proxy's loop should come back soon."""
        return any(run.held is not None or run.ended is not None for run in self.runs.values())

    def settle(self) -> None:
        """Called from the proxy's loop: read the journal for the runs with a gap, deliver what came."""
        now = time.monotonic()
        for run_id, run in list(self.runs.items()):
            if run.ended is not None:
                if run.replied or now - run.ended_at > REPLY_GRACE_S:
                    self._finish(run_id, run)
                continue
            if run.held is None or self.open:
                continue
            if run.fetch is None:
                if now >= run.next_fetch:
                    run.fetch = self._workers.submit(self._fetch, run_id, run.seq)
                continue
            if not run.fetch.done():
                continue
            fetched, run.fetch = run.fetch, None
            try:
                journal = fetched.result()
            except Exception:  # noqa: BLE001 - the channel is flaky still: ask again
                run.next_fetch = now + FETCH_RETRY_S
                continue
            self._deliver_journal(run, journal)
            record = journal.get("run") or {}
            if record.get("state", "running") != "running":
                run.ended, run.ended_at = record, now
                self._release(run_id, run)
            elif self._caught_up(run):
                self._release(run_id, run)
            else:
                run.next_fetch = now + FETCH_RETRY_S

    def _deliver_journal(self, run: _Run, journal: dict[str, Any]) -> None:
        for entry in journal.get("entries") or []:
            run.seq += 1
            if entry["msg_type"] == "execute_input":
                run.execution_count = entry["content"].get("execution_count")
            if entry["msg_type"] == "error":
                run.error = entry["content"]
            if entry["msg_id"] in run.seen:
                continue
            run.seen.add(entry["msg_id"])
            buffers = [base64.b64decode(b) for b in entry.get("buffers") or []]
            self._send("iopub", entry["msg_type"], entry["content"], run.parent, entry.get("metadata") or {}, buffers)

    @staticmethod
    def _caught_up(run: _Run) -> bool:
        first = next((h for _, _, h in run.held or () if h["msg_type"] in JOURNALED_TYPES), None)
        return first is not None and first["msg_id"] in run.seen

    def _release(self, run_id: str, run: _Run) -> None:
        held, run.held = run.held or [], None
        for frames, parts, header in held:
            if self._live(run_id, run, header, parts):
                self._forward(frames)

    def _finish(self, run_id: str, run: _Run) -> None:
        """The run ended while iopub was down: what the frontend waits for, if it was lost with the gap."""
        self.runs.pop(run_id, None)
        record = run.ended or {}
        if not run.replied:
            status = "ok" if record.get("state") == "ok" else "error"
            content: dict[str, Any] = {"status": status, "execution_count": run.execution_count,
                                       "user_expressions": {}, "payload": []}  # fmt: skip
            if status == "error":
                error = run.error or {}
                content.update(ename=error.get("ename", "Error"), evalue=error.get("evalue", record.get("error") or ""),
                               traceback=error.get("traceback", []))  # fmt: skip
            self._send("shell", "execute_reply", content, run.parent, {}, [], run.idents)
        self._send("iopub", "status", {"execution_state": "idle"}, run.parent, {}, [])

"""Server-side watcher behind the panel's websocket: one per server, shared by every client.

While at least one client is connected it reads the store once a second (two indexed SQLite queries)
and pushes only the rows that changed; every ``PING_EVERY_S`` it also asks each live session's nanny
for its state (idle clock, busy) — passive requests that do not reset the idle timer — which also
notices sessions that died and settles their runs. Live output of a run a client subscribed to is read
from the nanny's journal incrementally (``since``), twice a second, once per run however many clients
watch it; late subscribers get the buffered tail. It talks to nannies only, never to kernels (see
``api.NannyLink``): a kernel busy with a cell does not answer until the cell ends.

All blocking work runs on one dedicated thread (``cake-panel``) with its own ``Cake``: its cached
connections are never shared between threads, and the server's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from jupyter_cake.store import LIVE_SESSION_STATES

POLL_S = 1.0
FOLLOW_POLL_S = 0.5  # while a client follows a running run's output
PING_EVERY_S = 5.0
RUNS_SHOWN = 50
TAIL_CHARS = 64_000

log = logging.getLogger("jupyter_cake.server")

Client = Callable[[dict[str, Any]], None]


class Monitor:
    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cake-panel")
        self._cake: Any = None
        self.clients: dict[Client, set[str]] = {}  # client -> run ids it follows
        self.sessions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.pings: dict[str, tuple[dict[str, Any], float]] = {}
        self.tails: dict[str, str] = {}  # run id -> output so far (bounded)
        self.following: dict[str, int] = {}  # running run id -> journal entries read so far
        self.links: dict[str, Any] = {}  # session id -> api.NannyLink
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_ping = 0.0
        self._wake = asyncio.Event()

    # -- the reader thread's Cake ----------------------------------------------------------------------
    @property
    def cake(self) -> Any:
        if self._cake is None:
            from jupyter_cake.manager import Cake

            self._cake = Cake()
        return self._cake

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- clients ---------------------------------------------------------------------------------------
    async def add(self, client: Client) -> None:
        self._loop = asyncio.get_running_loop()
        self.clients[client] = set()
        if self._task is None or self._task.done():
            self.sessions, self.runs = {}, {}
            await self.call(self._read, True)  # fresh state for the first client
            self._task = asyncio.create_task(self._run())
        client({"type": "snapshot", "sessions": list(self.sessions.values()), "runs": list(self.runs.values())})

    def remove(self, client: Client) -> None:
        self.clients.pop(client, None)

    def poke(self) -> None:
        """Something changed (an action): read the store now, not at the next tick."""
        self._wake.set()

    async def subscribe(self, client: Client, run_id: str) -> None:
        if client not in self.clients:
            return
        self.clients[client].add(run_id)
        if run_id in self.tails:
            client({"type": "output", "run": run_id, "text": self.tails[run_id], "replace": True})
        if run_id not in self.following:
            await self.call(self._follow, run_id)
            self.poke()

    def unsubscribe(self, client: Client, run_id: str) -> None:
        if client in self.clients:
            self.clients[client].discard(run_id)

    # -- the loop -------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while self.clients:
            try:
                await asyncio.wait_for(self._wake.wait(), FOLLOW_POLL_S if self.following else POLL_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self.clients:
                break
            ping = time.monotonic() - self._last_ping >= PING_EVERY_S
            try:
                if self.following:
                    await self.call(self._read_outputs)
                changes = await self.call(self._read, ping)
            except Exception:  # noqa: BLE001 - a locked or missing store now must not end the watcher
                log.exception("cake: reading the store for the panel failed")
                continue
            for message in changes:
                self._broadcast(message)
        self._task = None

    def _broadcast(self, message: dict[str, Any], run_id: str | None = None) -> None:
        for client, runs in list(self.clients.items()):
            if run_id is None or run_id in runs:
                try:
                    client(message)
                except Exception:  # noqa: BLE001 - a closed socket: its handler removes it
                    pass

    # -- on the reader thread ---------------------------------------------------------------------------
    def _read(self, ping: bool) -> list[dict[str, Any]]:
        from jupyter_cake.server import api

        cake = self.cake
        if ping:
            self._last_ping = time.monotonic()
        rows = api.list_sessions(cake)
        live_ids = {r.id for r in rows if r.state in LIVE_SESSION_STATES}
        for stale in [i for i in self.links if i not in live_ids]:  # ended: drop our connection
            self.links.pop(stale).close()
        runs = {r["id"]: r for r in api.list_runs(cake, None, [], RUNS_SHOWN, 0)}
        # A run that started or ended changes its session's busy/idle state: ask now, not at the next ping.
        stirred = {r["session_id"] for i, r in runs.items() if (self.runs.get(i) or {}).get("state") != r["state"]}
        changes: list[dict[str, Any]] = []
        sessions: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.state == "running" and (ping or row.id not in self.pings or row.id in stirred):
                self.ping(row)
                row = cake.store.session(row.id) or row
            ping_answer, at = self.pings.get(row.id, (None, None))
            data = api.session_json(row, ping_answer if row.state in LIVE_SESSION_STATES else None, at)
            sessions[row.id] = data
            if self.sessions.get(row.id) != data:
                changes.append({"type": "session", "session": data})
        for gone in set(self.sessions) - set(sessions):
            changes.append({"type": "session_removed", "id": gone})
        if stirred:  # the ping may have settled runs: read them again
            runs = {r["id"]: r for r in api.list_runs(cake, None, [], RUNS_SHOWN, 0)}
        for run_id, data in runs.items():
            if self.runs.get(run_id) != data:
                changes.append({"type": "run", "run": data})
        self.sessions, self.runs = sessions, runs
        return changes

    def _link(self, row: Any) -> Any:
        from jupyter_cake.server.api import NannyLink

        link = self.links.get(row.id)
        if link is None:
            link = self.links[row.id] = NannyLink(row)
        return link

    def ping(self, row: Any) -> None:
        """The nanny's idle clock and run records; a session whose allocation is gone is recorded as
        stopped (by the engine, with the nanny's or the backend's reason)."""
        from jupyter_cake.errors import CakeError
        from jupyter_cake.server import api

        try:
            link = self._link(row)
            answer = link.nanny("ping", timeout=3.0)
            api.settle_runs(self.cake, row, link.nanny("runs", timeout=3.0)["runs"])
            self.pings[row.id] = (answer, time.time())
        except CakeError as exc:
            link = self.links.pop(row.id, None)
            if link is not None:
                link.close()
            if api.ended(row):
                self.cake.mark_stopped(row)
            else:
                log.info("cake: session %s does not answer now: %s", row.id, exc)

    def _follow(self, run_id: str) -> None:
        """Start relaying a run's output (journal so far, then as it grows) to its subscribers."""
        from jupyter_cake.server import api
        from jupyter_cake.server.api import output_text

        cake = self.cake
        run = cake.store.run(run_id)
        if run is None or run_id in self.following:
            return
        self.tails[run_id] = ""
        row = cake.store.session(run.session_id)
        if run.state in ("queued", "running") and row is not None and row.state == "running":
            self.following[run_id] = 0
            self._read_outputs()
        else:
            self._push_output(run_id, output_text(api.journal(cake, run)), replace=True)

    def _read_outputs(self) -> None:
        """New journal entries of each followed run (only what was added since the last read)."""
        from jupyter_cake.errors import CakeError
        from jupyter_cake.server.api import output_text

        watched = {r for runs in list(self.clients.values()) for r in list(runs)}  # copies: the loop edits them
        for run_id, since in list(self.following.items()):
            run = self.cake.store.run(run_id)
            row = self.cake.store.session(run.session_id) if run else None
            if run_id not in watched or run is None or row is None or row.state != "running":
                self.following.pop(run_id, None)
                continue
            try:
                reply = self._link(row).nanny("journal", run_id=run_id, since=since, timeout=3.0)
            except CakeError:
                self.following.pop(run_id, None)
                continue
            entries = reply["entries"]
            self.following[run_id] = since + len(entries)
            for entry in entries:
                if entry.get("msg_type") == "clear_output":
                    self._push_output(run_id, "", replace=True)
                else:
                    text = output_text([entry])
                    if text:
                        self._push_output(run_id, text)
            if (reply.get("run") or {}).get("state", "running") != "running":
                self.following.pop(run_id, None)

    def _push_output(self, run_id: str, text: str, replace: bool = False) -> None:
        tail = text if replace else self.tails.get(run_id, "") + text
        self.tails[run_id] = tail[-TAIL_CHARS:]
        message = {"type": "output", "run": run_id, "text": text, "replace": replace}
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._broadcast, message, run_id)



def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, default=str)

"""Runs on a connected session: executing a cell and streaming its outputs to a sink, attaching to a
run by replaying the nanny's journal and then following it live, healing lost iopub from the journal,
interrupting, and the ``Outcome`` that says how a run ended.

Journal entries become the same ``Output`` dicts as live iopub (``_output_from_journal``), so a sink
cannot tell a replayed output from a live one.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_cake.errors import SessionGone
from jupyter_cake.session.connection import Connection
from jupyter_cake.session.wire import Output, Sink, _Route

IOPUB_GRACE_S = 1.0  # how long the idle status may trail the execute_reply before the journal fills in


@dataclass
class Outcome:
    """How a run ended, as the kernel reported it."""

    run_id: str
    status: str  # ok | error | aborted
    error: dict[str, Any] | None = None  # ename / evalue / traceback
    execution_count: int | None = None
    replayed: int = 0  # outputs taken from the journal (attach)


def _output_from_journal(entry: Mapping[str, Any]) -> Output:
    return {
        "msg_id": entry["msg_id"],
        "msg_type": entry["msg_type"],
        "content": entry["content"],
        "metadata": entry.get("metadata") or {},
        "buffers": [base64.b64decode(b) for b in entry.get("buffers") or []],
    }


class Runs(Connection):
    """Execute, attach to and interrupt runs; their outputs reach a sink through ``Wire``'s routes."""

    async def interrupt(self) -> None:
        """Interrupt the running cell. Through the nanny (a message) so it works for any kernel;
        falls back to the kernel's own control channel when the nanny cannot be reached."""
        try:
            await self.nanny("interrupt", timeout=2.0)
        except SessionGone:
            self._send(self.control, "interrupt_request", {})

    def start_run(self, code: str, run_id: str, sink: Sink | None) -> _Route:
        route = _Route(sink=sink, done=asyncio.get_running_loop().create_future())
        self._routes[run_id] = route
        self._reply(run_id)
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        self._send(self.shell, "execute_request", content, msg_id=run_id)
        return route

    async def execute(self, code: str, run_id: str, sink: Sink | None, detach: bool = False) -> Outcome | None:
        """Send ``code``; unless ``detach``, stream its outputs to ``sink`` and return how it ended."""
        route = self.start_run(code, run_id, sink)
        if detach:
            self._routes.pop(run_id, None)
            self._replies.pop(run_id, None)
            return None
        return await self._finish(run_id, route)

    async def _finish(self, run_id: str, route: _Route) -> Outcome:
        try:
            await self._until_idle(run_id, route)
            reply_future = self._replies.get(run_id)
            reply = None
            if reply_future is not None:
                # The reply normally precedes the idle status; a short grace covers reordering.
                try:
                    reply = reply_future.result() if reply_future.done() else await asyncio.wait_for(reply_future, 1.0)
                except asyncio.TimeoutError:
                    reply = None
            content = (reply or {}).get("content", {})
            status = content.get("status") or ("error" if route.error else "ok")
            error = route.error or (content if status == "error" else None)
            return Outcome(run_id, status, error, content.get("execution_count"))
        finally:
            self._routes.pop(run_id, None)
            self._replies.pop(run_id, None)

    async def _until_idle(self, run_id: str, route: _Route) -> None:
        """Wait for the run's idle status on iopub. If the execute_reply arrives and the idle status
        doesn't follow, iopub lost messages (a SUB socket that reconnected after a dropped tunnel
        misses what was published meanwhile): the rest comes from the nanny's journal instead."""
        reply = self._replies.get(run_id)
        while not route.done.done():
            waiting: set[asyncio.Future[Any]] = {route.done} if reply is None or reply.done() else {route.done, reply}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if route.done.done() or reply is None or not reply.done():
                continue
            try:
                await asyncio.wait_for(asyncio.shield(route.done), IOPUB_GRACE_S)
            except asyncio.TimeoutError:
                await self._heal_from_journal(run_id, route)

    async def _heal_from_journal(self, run_id: str, route: _Route) -> None:
        for _ in range(20):  # the nanny journals from its own subscription: give it a moment to catch up
            journal = await self.nanny("journal", run_id=run_id)
            for entry in journal["entries"]:
                self._deliver(route, _output_from_journal(entry))
            if (journal.get("run") or {}).get("state", "running") != "running":
                break
            await asyncio.sleep(0.1)
        if not route.done.done():
            route.done.set_result(None)

    async def attach(self, run_id: str, sink: Sink) -> Outcome:
        """Replay everything ``run_id`` printed so far from the journal, then stream the rest live."""
        route = _Route(sink=None, done=asyncio.get_running_loop().create_future())
        live: list[Output] = []
        route.sink = live.append  # hold live outputs until the replay is through
        self._routes[run_id] = route
        try:
            journal = await self.nanny("journal", run_id=run_id)
            # No await from here to the end of the replay: live outputs can't interleave with it.
            route.sink = sink
            for entry in journal["entries"]:
                self._deliver(route, _output_from_journal(entry))
            replayed = len(route.seen)
            for output in live:  # arrived while the journal was fetched; duplicates are skipped
                self._deliver(route, output)
            run = journal.get("run")
            if run and run.get("state") != "running":
                state = run["state"]
                return Outcome(run_id, "ok" if state == "ok" else "error", route.error, replayed=replayed)
            outcome = await self._finish(run_id, route)
            outcome.replayed = replayed
            return outcome
        finally:
            self._routes.pop(run_id, None)

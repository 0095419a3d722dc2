"""Runs on a connected session: executing a cell and streaming its outputs to a sink, attaching to a
run by replaying the nanny's journal and then following it live, healing lost iopub from the journal,
interrupting, and the ``Outcome`` that says how a run ended; and forwarding a frontend's comm messages
(widgets) to the kernel, whose answers reach a sink the same way.

Journal entries become the same ``Output`` dicts as live iopub (``_output_from_journal``), so a sink
cannot tell a replayed output from a live one.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.nanny.journal import JOURNALED_TYPES
from jupyter_cake.session.connection import Connection
from jupyter_cake.session.wire import Output, Sink, _Route

IOPUB_GRACE_S = 1.0  # how long the idle status may trail the execute_reply before the journal fills in
HEAL_LIMIT_S = 3.0  # after that, how long the journal may take to say the run ended
FILL_TIMEOUT_S = 3.0  # one journal request while filling a gap (the channel may still be flaky)
FILL_POLL_FIRST_S, FILL_POLL_MAX_S = 0.05, 1.0  # waiting for live outputs to resume after a gap


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

    def start_run(self, code: str, run_id: str, sink: Sink | None, allow_stdin: bool = False) -> _Route:
        route = _Route(sink=sink, done=asyncio.get_running_loop().create_future())
        self._routes[run_id] = route
        self._reply(run_id)
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,  # input() asks the sink's user (an input_request output)
            "stop_on_error": False,
        }
        self._send(self.shell, "execute_request", content, msg_id=run_id)
        return route

    async def execute(
        self, code: str, run_id: str, sink: Sink | None, detach: bool = False, allow_stdin: bool = False
    ) -> Outcome | None:
        """Send ``code``; unless ``detach``, stream its outputs to ``sink`` and return how it ended.
        ``allow_stdin``: the remote code may ask for input (a detached run's prompt waits for an attach)."""
        route = self.start_run(code, run_id, sink, allow_stdin)
        if detach:
            self._routes.pop(run_id, None)
            self._replies.pop(run_id, None)
            return None
        return await self._finish(run_id, route)

    async def send_comm(
        self, msg_type: str, content: dict[str, Any], buffers: Sequence[Any], sink: Sink, timeout: float
    ) -> None:
        """Forward a frontend's comm message (a slider moved) to the kernel; until the kernel is idle
        again, or ``timeout``, what its handlers publish (echoed state, prints of observers) goes to
        ``sink``. Comm messages are not journaled: after a drop, what they caused is not replayed."""
        msg_id = uuid.uuid4().hex
        route = _Route(sink=sink, done=asyncio.get_running_loop().create_future(), journaled=False)
        self._routes[msg_id] = route
        try:
            self._send(self.shell, msg_type, content, msg_id=msg_id, buffers=buffers)
            await asyncio.wait_for(asyncio.shield(route.done), timeout)
        except asyncio.TimeoutError:
            pass  # a slow handler: its later messages reach the comm listener instead
        finally:
            self._routes.pop(msg_id, None)

    async def comm_states(self, target_name: str, timeout: float) -> list[tuple[str, Output]]:
        """The comms of ``target_name`` open in the kernel, each with its state as the widget protocol
        gives it on request (``request_state``, answered by an ``update``): for re-creating them in a
        frontend that attached after they were opened. [(comm id, the update message)]."""
        msg_id = self._send(self.shell, "comm_info_request", {"target_name": target_name})
        reply = await asyncio.wait_for(self._reply(msg_id), timeout)
        states: list[tuple[str, Output]] = []
        for comm_id in (reply["content"].get("comms") or {}):
            answers: list[Output] = []
            await self.send_comm("comm_msg", {"comm_id": comm_id, "data": {"method": "request_state"}}, [],
                                 answers.append, timeout)  # fmt: skip
            update = next((a for a in answers if a["msg_type"] == "comm_msg"
                           and (a["content"].get("data") or {}).get("method") == "update"), None)  # fmt: skip
            if update is not None:
                states.append((comm_id, update))
        return states

    async def _finish(self, run_id: str, route: _Route) -> Outcome:
        if not self._iopub_up.is_set():
            self._hold(run_id, route)  # sent while iopub is down: its first outputs may be lost
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
            status = content.get("status") or route.final_state or ("error" if route.error else "ok")
            error = route.error or (content if status == "error" else None)
            return Outcome(run_id, status, error, content.get("execution_count"))
        finally:
            if route.filler is not None:
                route.filler.cancel()
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
        """The reply came, the idle status did not: the journal has the rest and says how the run ended."""
        self._hold(run_id, route)
        try:
            await asyncio.wait_for(asyncio.shield(route.done), HEAL_LIMIT_S)
        except asyncio.TimeoutError:
            self._release(route)  # the journal could not say either: end with what arrived
            if not route.done.done():
                route.done.set_result(None)

    # -- gaps: iopub may have dropped messages, the journal fills them in --------------------------------
    def mark_gap(self) -> None:
        """iopub's connection broke (or a ping failed): every run being followed holds its live outputs
        and fills what it missed from the journal, so each output shows exactly once and in order."""
        for run_id, route in list(self._routes.items()):
            if route.journaled:
                self._hold(run_id, route)

    def _hold(self, run_id: str, route: _Route) -> None:
        if route.held is None:
            route.held = []
        if route.filler is None or route.filler.done():
            route.filler = asyncio.ensure_future(self._fill_gap(run_id, route))

    async def _fill_gap(self, run_id: str, route: _Route) -> None:
        """Deliver, in journal order, every journaled output of the run not delivered yet; then the held
        live outputs not delivered yet. Live delivery resumes once the journal has caught up with the
        first held output (from there on the subscription delivers everything) or the run has ended."""
        poll = FILL_POLL_FIRST_S
        while not route.done.done():
            await self._iopub_up.wait()  # nothing to ask while the channel is down
            since = route.journal_seq
            try:
                journal = await self.nanny("journal", timeout=FILL_TIMEOUT_S, run_id=run_id, since=since)
            except CakeError:  # no answer yet (the channel is coming back): ask again
                await asyncio.sleep(poll)
                continue
            entries = journal["entries"]
            for entry in entries:
                self._deliver(route, _output_from_journal(entry))
            route.journal_seq = max(route.journal_seq, since + len(entries))
            state = (journal.get("run") or {}).get("state", "running")
            if state != "running":
                route.final_state = state
                self._release(route, ended=True)
                return
            if self._caught_up(route):
                self._release(route)
                return
            route.arrived.clear()
            try:
                await asyncio.wait_for(route.arrived.wait(), poll)
            except asyncio.TimeoutError:
                pass
            poll = min(poll * 2, FILL_POLL_MAX_S)

    @staticmethod
    def _caught_up(route: _Route) -> bool:
        """The journal reached the first held output that it journals: nothing before it is missing."""
        first = next((o for o in route.held or () if o["msg_type"] in JOURNALED_TYPES), None)
        return first is not None and first["msg_id"] in route.seen

    def _release(self, route: _Route, ended: bool = False) -> None:
        """Deliver the held live outputs not delivered yet and resume live delivery (no await inside:
        nothing can interleave)."""
        held, route.held = route.held or [], None
        for output in held:
            self._deliver_live(route, output)
        if (ended or route.idle_held) and not route.done.done():
            route.done.set_result(None)
        route.idle_held = False

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
            route.journal_seq = len(journal["entries"])
            replayed = len(route.seen)
            for output in live:  # arrived while the journal was fetched; duplicates are skipped
                self._deliver_live(route, output)
            waiting = self._pending_input.pop(run_id, None)
            if waiting is not None:  # a detached run that asked for input while nobody followed it
                self._deliver_live(route, waiting)
            run = journal.get("run")
            if run and run.get("state") != "running":
                state = run["state"]
                return Outcome(run_id, "ok" if state == "ok" else "error", route.error, replayed=replayed)
            outcome = await self._finish(run_id, route)
            outcome.replayed = replayed
            return outcome
        finally:
            self._routes.pop(run_id, None)

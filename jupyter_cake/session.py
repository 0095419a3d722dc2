"""Async client of one remote session: the kernel (Jupyter protocol) and its nanny (control + journal).

Everything here runs on the engine loop (``jupyter_cake.engine``). Outputs are handed to a *sink*, a
plain callable, as ``Output`` dicts: the same shape whether they arrive live over iopub or are replayed
from the nanny's journal, so the relay cannot tell the difference either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from jupyter_cake.backends.base import Channel
from jupyter_cake.errors import CakeError, SessionGone

# {"msg_id", "msg_type", "content", "metadata", "buffers"}: one output of a run.
Output = dict[str, Any]
Sink = Callable[[Output], None]

NANNY_TIMEOUT_S = 10.0
IOPUB_GRACE_S = 1.0  # how long the idle status may trail the execute_reply before the journal fills in


@dataclass
class Outcome:
    """How a run ended, as the kernel reported it."""

    run_id: str
    status: str  # ok | error | aborted
    error: dict[str, Any] | None = None  # ename / evalue / traceback
    execution_count: int | None = None
    replayed: int = 0  # outputs taken from the journal (attach)


@dataclass
class _Route:
    sink: Sink | None
    done: asyncio.Future[None]
    seen: set[str] = field(default_factory=set)
    error: dict[str, Any] | None = None


def _output_from_journal(entry: Mapping[str, Any]) -> Output:
    return {
        "msg_id": entry["msg_id"],
        "msg_type": entry["msg_type"],
        "content": entry["content"],
        "metadata": entry.get("metadata") or {},
        "buffers": [base64.b64decode(b) for b in entry.get("buffers") or []],
    }


class RemoteSession:
    def __init__(self, channel: Channel, label: str) -> None:
        self.channel = channel
        self.label = label
        self._routes: dict[str, _Route] = {}
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._comms: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._nanny_lock = asyncio.Lock()
        self._iopub_seen = asyncio.Event()
        self.last_seen = time.monotonic()  # last time the kernel or nanny said anything

    # -- connection ---------------------------------------------------------------------------------
    async def connect(self, timeout: float = 30.0, wait_kernel: bool = True) -> None:
        """Open the sockets. ``wait_kernel``: also wait until the kernel answers (a fresh session).
        Re-attaching must not: a kernel busy with a long cell answers nothing until the cell ends,
        so then the nanny (which always answers) vouches for the session instead."""
        from jupyter_client.asynchronous import AsyncKernelClient

        self.client = AsyncKernelClient()
        self.client.load_connection_info(self.channel.connection)  # type: ignore[arg-type]
        self.session = self.client.session
        self.shell = self.client.connect_shell()
        self.control = self.client.connect_control()
        self.iopub = self.client.connect_iopub()
        self._nanny = self._new_nanny_socket()
        self._tasks = [
            asyncio.ensure_future(self._read_iopub()),
            asyncio.ensure_future(self._read_replies(self.shell)),
            asyncio.ensure_future(self._read_replies(self.control)),
        ]
        if wait_kernel:
            await self.wait_ready(timeout)
        else:
            await self.nanny("ping", timeout=timeout)

    def connect_nanny_only(self) -> None:
        """Talk to the nanny alone (ping, runs, journal, interrupt, shutdown), without kernel sockets:
        for observers such as the JupyterLab panel, which look at busy sessions all the time and must
        neither wait for a busy kernel nor subscribe to its (possibly heavy) iopub traffic."""
        from jupyter_client.asynchronous import AsyncKernelClient

        self.client = AsyncKernelClient()
        self.client.load_connection_info(self.channel.connection)  # type: ignore[arg-type]
        self.session = self.client.session
        self._nanny = self._new_nanny_socket()

    def _new_nanny_socket(self) -> Any:
        sock = self.client.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.channel.nanny_url)
        return sock

    async def wait_ready(self, timeout: float) -> None:
        """Ready = the kernel answers kernel_info AND our iopub subscription delivers messages.

        Without the second check the first outputs of the first cell can be lost to ZMQ's slow-joiner
        effect (a SUB socket drops what was published before its subscription reached the PUB)."""
        deadline = time.monotonic() + timeout
        self._iopub_seen.clear()  # after a kernel restart, our SUB socket must have reconnected too
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CakeError(
                    f"The kernel of session {self.label} did not answer within {timeout:g} s. "
                    "Check `%cake status` / `cake logs`; the session may have failed to start."
                )
            msg_id = self._send(self.shell, "kernel_info_request", {})
            try:
                await asyncio.wait_for(self._reply(msg_id), min(1.0, remaining))
                await asyncio.wait_for(self._iopub_seen.wait(), min(0.5, max(0.05, remaining)))
                return
            except asyncio.TimeoutError:
                self._replies.pop(msg_id, None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for name in ("shell", "control", "iopub", "_nanny"):
            sock = getattr(self, name, None)  # absent after connect_nanny_only()
            if sock is not None:
                sock.close(linger=0)
        self.channel.close()

    # -- readers --------------------------------------------------------------------------------------
    async def _read_iopub(self) -> None:
        """Route iopub messages to the runs and comm requests waiting for them.

        Parsed by hand rather than with Session.deserialize: on a warm cell this loop handles most of
        the messages, and skipping date parsing and the decoding of messages nobody waits for is a
        measurable share of a 4 ms round trip. The signature is not checked because this SUB socket
        only ever receives what the kernel's own PUB socket publishes (through the channel)."""
        delimiter = b"<IDS|MSG>"
        while True:
            frames = await self.iopub.recv_multipart(copy=False)  # type: ignore[misc]
            self._iopub_seen.set()
            self.last_seen = time.monotonic()
            start = next(i for i, f in enumerate(frames) if f.bytes == delimiter) + 2  # skip the signature
            header = json.loads(frames[start].bytes)
            parent = json.loads(frames[start + 1].bytes)
            msg_type = header["msg_type"]
            if msg_type == "comm_msg":
                content = json.loads(frames[start + 3].bytes)
                waiter = self._comms.pop(content.get("comm_id", ""), None)
                if waiter and not waiter.done():
                    buffers = [memoryview(f) for f in frames[start + 4 :]]  # zero-copy, writable
                    waiter.set_result({"content": content, "buffers": buffers})
                continue
            route = self._routes.get(parent.get("msg_id", ""))
            if route is None:
                continue
            content = json.loads(frames[start + 3].bytes)
            if msg_type == "status":
                if content.get("execution_state") == "idle" and not route.done.done():
                    route.done.set_result(None)
                continue
            output: Output = {
                "msg_id": header["msg_id"],
                "msg_type": msg_type,
                "content": content,
                "metadata": json.loads(frames[start + 2].bytes or b"{}"),
                "buffers": [memoryview(f) for f in frames[start + 4 :]],
            }
            self._deliver(route, output)

    @staticmethod
    def _deliver(route: _Route, output: Output) -> None:
        if output["msg_id"] in route.seen:
            return  # already replayed from the journal
        route.seen.add(output["msg_id"])
        if output["msg_type"] == "error":
            route.error = output["content"]
        if route.sink is not None:
            route.sink(output)

    async def _read_replies(self, sock: Any) -> None:
        while True:
            msg = await self._recv(sock)
            waiter = self._replies.pop((msg.get("parent_header") or {}).get("msg_id", ""), None)
            if waiter and not waiter.done():
                waiter.set_result(msg)

    async def _recv(self, sock: Any) -> dict[str, Any]:
        frames = await sock.recv_multipart()
        _, frames = self.session.feed_identities(frames)
        msg: dict[str, Any] = self.session.deserialize(frames, content=True)
        self.last_seen = time.monotonic()
        return msg

    def _send(
        self,
        sock: Any,  # a zmq.asyncio socket (jupyter_client's stubs call it a plain one)
        msg_type: str,
        content: dict[str, Any],
        msg_id: str | None = None,
        buffers: Sequence[Any] | None = None,
    ) -> str:
        msg = self.session.msg(msg_type, content)
        if msg_id:
            msg["header"]["msg_id"] = msg_id
            msg["msg_id"] = msg_id
        self.session.send(sock, msg, buffers=list(buffers) if buffers else None)
        return str(msg["header"]["msg_id"])

    def _reply(self, msg_id: str) -> asyncio.Future[dict[str, Any]]:
        future = self._replies.get(msg_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._replies[msg_id] = future
        return future

    # -- nanny ----------------------------------------------------------------------------------------
    async def nanny(self, op: str, timeout: float = NANNY_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        async with self._nanny_lock:
            msg_id = self._send(self._nanny, "cake_request", {"op": op, **args})
            try:
                while True:
                    reply = await asyncio.wait_for(self._recv(self._nanny), timeout)
                    if reply["parent_header"].get("msg_id") == msg_id:
                        break
            except asyncio.TimeoutError:
                # A DEALER whose reply never came may deliver it later, out of turn: start afresh.
                self._nanny.close(linger=0)
                self._nanny = self._new_nanny_socket()
                raise SessionGone(
                    f"Session {self.label} does not answer (no reply in {timeout:g} s): it may have stopped "
                    "(idle autostop, `cake down`, or its allocation ended). `%cake status` shows what is known."
                ) from None
        content: dict[str, Any] = reply["content"]
        if not content.get("ok"):
            raise CakeError(f"Session {self.label}: {content.get('error')}")
        return content

    async def interrupt(self) -> None:
        """Interrupt the running cell. Through the nanny (a message) so it works for any kernel;
        falls back to the kernel's own control channel when the nanny cannot be reached."""
        try:
            await self.nanny("interrupt", timeout=2.0)
        except SessionGone:
            self._send(self.control, "interrupt_request", {})

    # -- execution ------------------------------------------------------------------------------------
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

    # -- variables --------------------------------------------------------------------------------------
    async def _vars_request(self, data: dict[str, Any], buffers: Sequence[Any], timeout: float | None) -> dict[str, Any]:
        from jupyter_cake.nanny.kernel import VARS_COMM_TARGET

        comm_id = uuid.uuid4().hex
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._comms[comm_id] = waiter
        self._send(
            self.shell,
            "comm_open",
            {"comm_id": comm_id, "target_name": VARS_COMM_TARGET, "data": data},
            buffers=buffers,
        )
        try:
            reply = await asyncio.wait_for(waiter, timeout)
        finally:
            self._comms.pop(comm_id, None)
        result: dict[str, Any] = reply["content"]["data"]
        if not result.get("ok"):
            raise CakeError(f"Session {self.label}: {result.get('error')}")
        result["buffers"] = reply.get("buffers") or []
        return result

    async def push(self, frames_by_name: Mapping[str, list[Any]], timeout: float | None = None) -> None:
        """Set variables in the remote namespace; values come pickled by ``dumps_frames``."""
        names = list(frames_by_name)
        buffers = [frame for name in names for frame in frames_by_name[name]]
        counts = [len(frames_by_name[name]) for name in names]
        await self._vars_request({"op": "push", "names": names, "counts": counts}, buffers, timeout)

    async def pull(self, names: Sequence[str], timeout: float | None = None) -> dict[str, object]:
        from jupyter_cake.nanny.kernel import loads_frames

        reply = await self._vars_request({"op": "pull", "names": list(names)}, (), timeout)
        values: dict[str, object] = {}
        offset = 0
        for name, count in zip(reply["names"], reply["counts"]):
            values[name] = loads_frames(reply["buffers"][offset : offset + count])
            offset += count
        return values

"""The message plumbing under a remote session: signing and sending requests, and the reader loops that
route what comes back (replies, run outputs, comm answers) to whoever waits for it.

It lives apart from the connection's lifecycle (``connection.py``) because both halves of a session's
work, runs and variable transfer, meet here and only here: the iopub reader hands comm answers to
``transfer.py`` and everything else to ``runs.py`` through the routing tables this class holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from jupyter_cake.backends.base import Channel
from jupyter_cake.nanny.journal import JOURNALED_TYPES

if TYPE_CHECKING:  # jupyter_client is imported when a session connects, not with jupyter_cake
    from jupyter_client.asynchronous import AsyncKernelClient

# {"msg_id", "msg_type", "content", "metadata", "buffers"}: one output of a run. An input_request (the
# remote code called input(), getpass or pdb) also has "answer": a callable, safe from any thread, that
# sends the user's reply back.
Output = dict[str, Any]
Sink = Callable[[Output], None]
COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})  # widgets, progress bars: mirrored locally


@dataclass
class _Route:
    sink: Sink | None
    done: asyncio.Future[None]
    seen: set[str] = field(default_factory=set)  # msg_ids delivered: live, or from the journal
    error: dict[str, Any] | None = None
    # Journal entries before this one are known to be delivered (the journal numbers a run's messages
    # 0, 1, 2...): where a fetch after a gap starts, instead of from the run's first line.
    journal_seq: int = 0
    # While iopub may have dropped messages: live outputs wait here until the journal filled the gap.
    held: list[Output] | None = None
    idle_held: bool = False  # the idle status came while outputs were held: the run ends after the fill
    final_state: str | None = None  # how the journal says the run ended, when its reply was lost
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a held output came
    filler: asyncio.Task[None] | None = None
    journaled: bool = True  # a run the nanny journals (not a comm message forwarded to the kernel)


class Wire:
    """Sockets, reader loops and routing tables; ``Connection`` opens the sockets and starts the readers."""

    # Opened by Connection.connect() / connect_nanny_only(); declared here because the readers use them.
    client: AsyncKernelClient
    session: Any  # a jupyter_client Session (a traitlets Instance, untyped in its stubs)
    shell: zmq.Socket[Any]
    control: zmq.Socket[Any]
    iopub: zmq.Socket[Any]
    stdin: zmq.Socket[Any]

    def __init__(self, channel: Channel, label: str) -> None:
        self.channel = channel
        self.label = label
        self._routes: dict[str, _Route] = {}
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._comms: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._own_comms: set[str] = set()  # comms of Cake's own requests (transfer.py): never mirrored
        # Comm messages outside any followed run (a widget updated by a thread after its cell ended).
        self.comm_listener: Sink | None = None
        # input_requests of runs nobody follows right now (detached): answered when one is attached.
        self._pending_input: dict[str, Output] = {}
        self._iopub_seen = asyncio.Event()
        self._iopub_up = asyncio.Event()  # iopub's connection stands (its socket monitor says so)
        self._iopub_up.set()
        self.disconnected_since: float | None = None  # when iopub's connection broke, while it is down
        self.last_seen = time.monotonic()  # last time the kernel or nanny said anything

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
            if msg_type in COMM_TYPES:
                self._on_comm(msg_type, header, parent, frames[start + 2 :])
                continue
            route = self._routes.get(parent.get("msg_id", ""))
            if route is None:
                continue
            content = json.loads(frames[start + 3].bytes)
            if msg_type == "status":
                if content.get("execution_state") == "idle":
                    if route.held is not None:
                        route.idle_held = True  # the run ends once the journal has filled the gap
                    elif not route.done.done():
                        route.done.set_result(None)
                continue
            output: Output = {
                "msg_id": header["msg_id"],
                "msg_type": msg_type,
                "content": content,
                "metadata": json.loads(frames[start + 2].bytes or b"{}"),
                "buffers": [memoryview(f) for f in frames[start + 4 :]],
            }
            self._route_output(route, output)

    def _on_comm(self, msg_type: str, header: dict[str, Any], parent: dict[str, Any], frames: list[Any]) -> None:
        """A comm message from the kernel: the answer to a variable transfer, or a message of a widget
        (or any comm the user's code opened), for the run it belongs to or else the comm listener."""
        content = json.loads(frames[1].bytes)
        comm_id = content.get("comm_id", "")
        buffers = [memoryview(f) for f in frames[2:]]  # zero-copy, writable
        if msg_type == "comm_msg":
            waiter = self._comms.pop(comm_id, None)
            if waiter and not waiter.done():
                waiter.set_result({"content": content, "buffers": buffers})
                return
        if comm_id in self._own_comms:
            if msg_type == "comm_close":
                self._own_comms.discard(comm_id)
            return
        output: Output = {"msg_id": header["msg_id"], "msg_type": msg_type, "content": content,
                          "metadata": json.loads(frames[0].bytes or b"{}"), "buffers": buffers}  # fmt: skip
        route = self._routes.get(parent.get("msg_id", ""))
        if route is not None:
            self._route_output(route, output)
        elif self.comm_listener is not None:
            self.comm_listener(output)

    def _route_output(self, route: _Route, output: Output) -> None:
        if route.held is not None:
            route.held.append(output)
            route.arrived.set()
        else:
            self._deliver_live(route, output)

    async def _read_stdin(self) -> None:
        """input_requests of the kernel (input(), getpass, pdb), to the run that asked, with a way to answer."""
        loop = asyncio.get_running_loop()
        while True:
            msg = await self._recv(self.stdin)
            if msg["msg_type"] != "input_request":
                continue
            request = msg["header"]

            def answer(value: str, request: dict[str, Any] = request) -> None:
                loop.call_soon_threadsafe(self._answer_input, request, value)

            output: Output = {"msg_id": request["msg_id"], "msg_type": "input_request", "content": msg["content"],
                              "metadata": {}, "buffers": [], "answer": answer}  # fmt: skip
            run_id = (msg.get("parent_header") or {}).get("msg_id", "")
            route = self._routes.get(run_id)
            if route is None:
                self._pending_input[run_id] = output
            else:
                self._route_output(route, output)

    def _answer_input(self, request: dict[str, Any], value: str) -> None:
        self.session.send(self.stdin, self.session.msg("input_reply", {"value": value}, parent=request))

    def _deliver_live(self, route: _Route, output: Output) -> None:
        """A live output: delivered unless the journal already gave it; counted as the journal does."""
        if self._deliver(route, output) and output["msg_type"] in JOURNALED_TYPES:
            route.journal_seq += 1

    @staticmethod
    def _deliver(route: _Route, output: Output) -> bool:
        if output["msg_id"] in route.seen:
            return False  # already delivered (live, or replayed from the journal)
        route.seen.add(output["msg_id"])
        if output["msg_type"] == "error":
            route.error = output["content"]
        if route.sink is not None:
            route.sink(output)
        return True

    async def _watch_iopub(self, monitor: Any) -> None:
        """Follow iopub's connection through its ZMQ socket monitor. A PUB drops what it publishes while
        a subscriber is disconnected, so a disconnect means the runs being followed may miss outputs:
        they hold live outputs until the journal has filled the gap (``mark_gap``). Costs nothing per
        message: the monitor speaks only when the connection changes."""
        from zmq.utils.monitor import parse_monitor_message

        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._iopub_up.clear()
                self.disconnected_since = self.disconnected_since or time.monotonic()
                self.mark_gap()
            elif event == zmq.EVENT_CONNECTED:
                self._iopub_up.set()
                self.disconnected_since = None

    def mark_gap(self) -> None:
        """iopub may have missed messages: fill every followed run's gap from the journal (runs.py)."""
        raise NotImplementedError

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

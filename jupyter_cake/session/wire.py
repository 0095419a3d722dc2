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

# {"msg_id", "msg_type", "content", "metadata", "buffers"}: one output of a run.
Output = dict[str, Any]
Sink = Callable[[Output], None]


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


class Wire:
    """Sockets, reader loops and routing tables; ``Connection`` opens the sockets and starts the readers."""

    # Opened by Connection.connect() / connect_nanny_only(); declared here because the readers use them.
    client: AsyncKernelClient
    session: Any  # a jupyter_client Session (a traitlets Instance, untyped in its stubs)
    shell: zmq.Socket[Any]
    control: zmq.Socket[Any]
    iopub: zmq.Socket[Any]

    def __init__(self, channel: Channel, label: str) -> None:
        self.channel = channel
        self.label = label
        self._routes: dict[str, _Route] = {}
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._comms: dict[str, asyncio.Future[dict[str, Any]]] = {}
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
            if route.held is not None:
                route.held.append(output)
                route.arrived.set()
            else:
                self._deliver_live(route, output)

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

"""Starting and ending a session's connection: opening the kernel and nanny sockets, waiting until the
kernel is ready, closing, and the nanny's control requests (which are also how liveness is checked).

Runs and variable transfer (``runs.py``, ``transfer.py``) build on this; it knows nothing of either.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import zmq

from jupyter_cake.backends.base import Channel
from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.nanny import curve
from jupyter_cake.session.wire import Wire

NANNY_TIMEOUT_S = 10.0


def secure_client(sock: Any, connection: dict[str, Any]) -> None:
    """Before ``sock`` connects to one of a session's sockets (kernel or nanny): make it a CurveZMQ client
    of the session's key, if the session has one. jupyter_client's own sockets do this by themselves."""
    curve.connect(sock, connection)


class Connection(Wire):
    """The lifecycle of a session's sockets, and requests to its nanny."""

    def __init__(self, channel: Channel, label: str) -> None:
        super().__init__(channel, label)
        self._tasks: list[asyncio.Task[None]] = []
        self._nanny_lock = asyncio.Lock()
        self._monitor: Any = None  # iopub's socket monitor (wire.py's _watch_iopub reads it)

    async def connect(self, timeout: float = 30.0, wait_kernel: bool = True) -> None:
        """Open the sockets. ``wait_kernel``: also wait until the kernel answers (a fresh session).
        Re-attaching must not: a kernel busy with a long cell answers nothing until the cell ends,
        so then the nanny (which always answers) vouches for the session instead."""
        self._open_client()
        # The kernel sends a run's input_request to the stdin socket with the routing id of the shell
        # socket that sent the run: the two must share it.
        identity = self.session.bsession
        self.shell = self.client.connect_shell(identity=identity)
        self.stdin = self.client.connect_stdin(identity=identity)
        self.control = self.client.connect_control()
        self.iopub = self.client.connect_iopub()
        self._nanny = self._new_nanny_socket()
        self._monitor = self.iopub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._tasks = [
            asyncio.ensure_future(self._read_iopub()),
            asyncio.ensure_future(self._watch_iopub(self._monitor)),
            asyncio.ensure_future(self._read_replies(self.shell)),
            asyncio.ensure_future(self._read_replies(self.control)),
            asyncio.ensure_future(self._read_stdin()),
        ]
        if wait_kernel:
            await self.wait_ready(timeout)
        else:
            await self.nanny("ping", timeout=timeout)

    def connect_nanny_only(self) -> None:
        """Talk to the nanny alone (ping, runs, journal, interrupt, shutdown), without kernel sockets:
        for observers such as the JupyterLab panel, which look at busy sessions all the time and must
        neither wait for a busy kernel nor subscribe to its (possibly heavy) iopub traffic."""
        self._open_client()
        self._nanny = self._new_nanny_socket()

    def _open_client(self) -> None:
        """The client and its signing session, from the channel's connection info (no sockets yet)."""
        from jupyter_client.asynchronous import AsyncKernelClient

        self.client = AsyncKernelClient()
        self.client.load_connection_info(self.channel.connection)  # type: ignore[arg-type]
        self.session = self.client.session

    def _new_nanny_socket(self) -> Any:
        sock = self.client.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        secure_client(sock, self.channel.connection)
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
        if self._monitor is not None:
            self.iopub.disable_monitor()
            self._monitor.close(linger=0)
        for name in ("shell", "stdin", "control", "iopub", "_nanny"):
            sock = getattr(self, name, None)  # absent after connect_nanny_only()
            if sock is not None:
                sock.close(linger=0)
        self.channel.close()

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

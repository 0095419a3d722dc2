"""The remote kernel's comms, mirrored in the notebook's own kernel: remote ipywidgets and tqdm bars render
and stay interactive, as if the code ran here.

A frontend only talks to the local kernel, so every comm the remote code opens (any target: ipywidgets'
``jupyter.widget``, a library's own) gets a local twin with the same comm id, target, data, metadata and
buffers; the widget views the remote cell displays name that id, so the frontend finds their models.
What the remote kernel sends on a comm is sent on its twin; what the frontend sends to a twin (a slider
moved) is forwarded to the remote kernel, and what the remote handlers publish in answer (echoed state,
prints of ``observe`` callbacks) is relayed while the local kernel handles the frontend's message, as a
local comm handler's outputs would be. A comm closed on either side closes on the other.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from jupyter_cake.manager import Handle
from jupyter_cake.relay import Relay
from jupyter_cake.session import Output

# How long the local kernel waits for the remote handlers of one frontend comm message. Longer ones go
# on remotely; their later messages still reach the twins (through the session's comm listener).
FORWARD_TIMEOUT_S = 30.0
POLL_S = 0.05
RESTORE_TIMEOUT_S = 10.0
WIDGET_TARGET = "jupyter.widget"
# The widget protocol version ipywidgets 8 opens its comms with; a model's state request does not say it.
WIDGET_PROTOCOL = "2.1.0"


class CommTwins:
    """The local twins of one remote session's comms."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self._twins: dict[str, Any] = {}
        self._lock = threading.Lock()  # runs' messages arrive on the main thread, the rest on the engine's
        handle.remote.comm_listener = self
        self.restored = False

    def restore(self) -> None:
        """Twins for the widgets already alive remotely: this kernel attached after they were made (it was
        restarted, or another notebook made them), so their views would otherwise find no model. Only
        while no run of this kernel's is going on: the remote kernel answers between cells only."""
        try:
            if self.handle.nanny("ping").get("state") == "busy":
                return  # another run (a detached one, another notebook's) holds the kernel: next cell
            self.restored = True
            states = self.handle.comm_states(WIDGET_TARGET, RESTORE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - widgets are a nicety: never fail the cell for them
            print(f"[cake] could not restore the session's widgets: {exc}")
            return
        for comm_id, update in states:
            data = update["content"]["data"]
            content = {"target_name": WIDGET_TARGET, "data": {"state": data.get("state") or {},
                                                              "buffer_paths": data.get("buffer_paths") or []}}  # fmt: skip
            with self._lock:
                if comm_id not in self._twins:
                    self._twins[comm_id] = self._open_twin(comm_id, content, {"version": WIDGET_PROTOCOL}, update["buffers"])

    def __call__(self, output: Output) -> None:
        kind, content = output["msg_type"], output["content"]
        comm_id = str(content.get("comm_id", ""))
        data, metadata, buffers = content.get("data") or {}, output.get("metadata") or {}, output.get("buffers") or []
        with self._lock:
            if kind == "comm_open":
                if comm_id not in self._twins:  # restored already (restore and a run raced)
                    self._twins[comm_id] = self._open_twin(comm_id, content, metadata, buffers)
                return
            twin = self._twins.get(comm_id) if kind == "comm_msg" else self._twins.pop(comm_id, None)
        if twin is None:
            return  # a comm opened before this kernel attached to the session
        if kind == "comm_msg":
            twin.send(data=_local_capture(data), metadata=metadata, buffers=buffers)
        else:
            twin.close(data=data, metadata=metadata, buffers=buffers)  # close() does not call on_close

    def _open_twin(self, comm_id: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[Any]) -> Any:
        from comm import create_comm

        twin = create_comm(
            comm_id=comm_id, target_name=content.get("target_name", ""), target_module=content.get("target_module"),
            data=content.get("data") or {}, metadata=metadata, buffers=buffers,
        )  # fmt: skip
        twin.on_msg(lambda msg: self._forward("comm_msg", comm_id, msg))
        twin.on_close(lambda msg: self._forget_and_forward(comm_id, msg))
        return twin

    def _forget_and_forward(self, comm_id: str, msg: dict[str, Any]) -> None:
        with self._lock:
            self._twins.pop(comm_id, None)
        self._forward("comm_close", comm_id, msg)

    def _forward(self, kind: str, comm_id: str, msg: dict[str, Any]) -> None:
        """In the local kernel's handler of the frontend's message: send it on, relay the answers."""
        content = {"comm_id": comm_id, "data": (msg.get("content") or {}).get("data") or {}}
        outputs: queue.SimpleQueue[Output] = queue.SimpleQueue()
        relay = Relay(where=f"session {self.handle.id}", on_comm=self)
        try:
            future = self.handle.send_comm(kind, content, msg.get("buffers") or [], outputs.put, FORWARD_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the session ended: the widget is dead, say so once
            print(f"[cake] the widget's session is gone; nothing was sent: {exc}")
            return
        while True:
            try:
                relay(outputs.get(timeout=POLL_S))
                continue
            except queue.Empty:
                pass
            if future.done():
                break
        while not outputs.empty():
            relay(outputs.get_nowait())
        if relay.error is not None:
            print(f"[cake] {relay.error}")  # a remote handler raised: show it as ipykernel would


def _local_capture(data: dict[str, Any]) -> dict[str, Any]:
    """An ipywidgets Output widget captures the outputs of the request whose id its ``msg_id`` names; the
    remote one names the remote run, whose outputs reach the frontend as this kernel's, under this
    kernel's request: name that one instead (the cell's execute_request, or the frontend's comm message)."""
    state = data.get("state") or {}
    if not state.get("msg_id"):
        return data
    from IPython import get_ipython

    shell = get_ipython()
    parent = shell.kernel.get_parent() if shell is not None and hasattr(shell, "kernel") else {}
    local = (parent or {}).get("header", {}).get("msg_id")
    return {**data, "state": {**state, "msg_id": local}} if local else data


def twins_for(registry: dict[str, CommTwins], handle: Handle, idle: bool) -> CommTwins:
    """The twins of ``handle``'s session in this kernel (one set per session, made on first use). ``idle``:
    the remote kernel runs nothing of ours now, so the live widgets can be restored first (once)."""
    twins = registry.get(handle.id)
    if twins is None or twins.handle is not handle:
        twins = registry[handle.id] = CommTwins(handle)
    if idle and not twins.restored:
        twins.restore()
    return twins

"""The kernel proxy: a remote Cake session that answers at the ports of a frontend's connection file.

A Cake kernelspec's argv is (kernelspecs written by earlier versions run ``-m jupyter_cake.ide_bridge.kernel``,
a shim that calls this module's ``main``)::

    python -m ide_bridge.kernel -f {connection_file} --target 'slurm/hpc/gpu --gpus A100:1'
                                [--name NAME] [--on-shutdown down|keep] [--timeout S]

Frontends (VS Code, PyCharm, JupyterLab through jupyter_server, nbclient, jupyter console) write a
connection file, launch the argv and talk ZMQ to those ports; they need no Cake plugin. This process

1. binds the frontend's five ports at once (so nobody else takes them while a session starts, and the
   frontend's first requests simply queue),
2. gets a session through the one engine (``Cake``): a live session of this kernelspec that no other
   proxy is using (re-attach), else a new one; progress and failures go to stderr, which is what VS Code
   shows when a kernel fails to start,
3. relays frames both ways between the frontend and the remote kernel's sockets. Keys differ, so each
   message's HMAC is checked with the sender's key and re-computed with the receiver's. Only the four
   signed frames are read; buffers travel as the same ZMQ frames (zero-copy).

Requests the proxy answers itself instead of forwarding:

- ``interrupt_request``: the nanny interrupts the kernel (``Handle.interrupt``). ipykernel's own handler
  would ``killpg`` its process group, which on a nanny-started kernel includes the nanny.
- ``shutdown_request``: forwarding it would end the kernel and with it the session. ``restart=True``
  asks the nanny for a fresh kernel in the same allocation and keeps the session, so the proxy the
  frontend launches next re-attaches within a second; a plain shutdown releases the session unless
  ``--on-shutdown keep``. SIGTERM, or the frontend process going away, counts as a plain shutdown.

If the session ends under a connected frontend (idle autostop, ``cake down``, a lost allocation), the
proxy does not die: a dead kernel would be auto-restarted by jupyter_server and silently allocate new
GPUs. It stays up and answers every execution with an error that names the reason and says to restart
the kernel, which starts a new session.

Identity routing: the frontend's ROUTER identity frames are forwarded in front of the delimiter, so the
remote ROUTER sees ``[proxy, frontend, <IDS|MSG>, ...]`` and routes replies back through both hops (a
ZMQ queue device does the same). The upstream shell and stdin sockets share one identity because
ipykernel addresses ``input_request`` (stdin) with the identities of the shell request.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import hmac
import json
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from ide_bridge.gaps import Gaps
from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.procs import pid_alive

if TYPE_CHECKING:
    from jupyter_client.session import Session

    from jupyter_cake.manager import Cake, Handle
    from jupyter_cake.targets import Target

DELIM = b"<IDS|MSG>"
CHANNELS = ("shell", "control", "stdin")
LEASE_FILE = "ide-proxy.lease"
LEASE_WAIT_S = 1.5  # a proxy being replaced (IDE restart) may still be exiting
SYNC_TIMEOUT_S = 30.0
# Ping the nanny when the kernel has been silent this long (tunable: tests use less).
LIVENESS_EVERY_S = float(os.environ.get("CAKE_IDE_LIVENESS_S", "5"))
TICK_S = min(1.0, LIVENESS_EVERY_S / 2)
DRAIN = 64  # messages taken from one socket before looking at the others

_INTERCEPTED = (b"interrupt_request", b"shutdown_request")


class Terminated(BaseException):
    """SIGTERM: unwinds anything, including a session start (which then releases what it allocated)."""


def log(text: str) -> None:
    """Progress and errors go to stderr: frontends show a kernel's stderr (VS Code in its output and in
    the "kernel died" message). Never the key or the connection file's content."""
    print(f"[cake] {text}", file=sys.stderr, flush=True)


# -- signing ------------------------------------------------------------------------------------------
class Signer:
    """HMAC of the four signed frames (header, parent, metadata, content), as jupyter_client computes it."""

    def __init__(self, key: bytes, scheme: str = "hmac-sha256") -> None:
        self._proto: hmac.HMAC | None = None
        if key:
            algorithm = scheme.partition("-")[2] if scheme.startswith("hmac-") else ""
            if algorithm not in hashlib.algorithms_available:
                raise CakeError(f"Unsupported signature_scheme {scheme!r} in the connection file (use hmac-sha256).")
            self._proto = hmac.new(key, digestmod=algorithm)

    def sign(self, parts: list[Any]) -> bytes:
        if self._proto is None:
            return b""
        digest = self._proto.copy()
        for part in parts:
            digest.update(part.buffer if isinstance(part, zmq.Frame) else part)
        return digest.hexdigest().encode()

    def verify(self, signature: bytes, parts: list[Any]) -> bool:
        if self._proto is None:
            return True
        return hmac.compare_digest(self.sign(parts), signature)


def _delimiter(frames: list[Any]) -> int:
    for i, frame in enumerate(frames):
        if len(frame) == 9 and frame.bytes == DELIM:
            return i
    return -1


def _drain(src: zmq.Socket[Any]) -> Iterator[tuple[list[Any], int]]:
    """The Jupyter messages waiting on ``src`` (at most DRAIN, so one busy socket can't starve the others),
    each with the index of its delimiter; frames that are no Jupyter message are dropped."""
    for _ in range(DRAIN):
        try:
            frames: list[Any] = src.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        i = _delimiter(frames)
        if i >= 0 and len(frames) >= i + 6:
            yield frames, i


def _url(conn: dict[str, Any], port_key: str) -> str:
    if conn.get("transport", "tcp") == "ipc":
        return f"ipc://{conn['ip']}-{conn[port_key]}"
    return f"tcp://{conn['ip']}:{conn[port_key]}"


def read_connection_file(path: str) -> dict[str, Any]:
    try:
        conn: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CakeError(
            f"Cannot read the connection file {path}: {exc}. The frontend should write it before launching the kernel."
        ) from None
    missing = [k for k in ("ip", *(f"{c}_port" for c in (*CHANNELS, "iopub", "hb"))) if k not in conn]
    if missing:
        raise CakeError(f"The connection file {path} lacks {', '.join(missing)}.")
    return conn


# -- which session ----------------------------------------------------------------------------------
@dataclass
class Lease:
    """An exclusive, advisory claim on a session by one proxy. A flock: the OS drops it when the process
    dies, even by SIGKILL, so a crashed IDE kernel never leaves its session claimed."""

    fd: int

    @classmethod
    def try_acquire(cls, session_dir: Path) -> Lease | None:
        import fcntl

        try:
            fd = os.open(session_dir / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return cls(fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def acquire_session(
    cake: Cake, target: Target, name: str, owner: str, progress: Callable[..., None], timeout: float | None
) -> tuple[Handle, Lease | None, bool]:
    """A session for this kernelspec that no other proxy is using: re-attach to a free live one (after an
    IDE restart it is the one the previous proxy just restarted), else start a new one. A second
    notebook on the same kernelspec gets its own session rather than sharing a kernel unknowingly.
    Returns (handle, lease, started)."""
    canonical = target.canonical()
    deadline = time.monotonic() + LEASE_WAIT_S
    while True:
        busy = False
        # Only 'running' rows: one still 'starting' belongs to a start in progress elsewhere.
        for row in cake.store.sessions(live_only=True):
            if (row.name, row.owner, row.target, row.state) != (name, owner, canonical, "running"):
                continue
            lease = Lease.try_acquire(Path(row.session_dir))
            if lease is None:
                busy = True
                continue
            handle = cake.connect(row)
            if handle is not None:
                return handle, lease, False
            lease.release()
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    handle, _ = cake.use(target, name=name, owner=owner, new=True, progress=progress, timeout=timeout)
    return handle, Lease.try_acquire(Path(handle.row.session_dir)), True


# -- the relay ----------------------------------------------------------------------------------------
@dataclass
class _Pending:
    future: concurrent.futures.Future[Any]
    on_done: Callable[[concurrent.futures.Future[Any]], None]


@dataclass
class ProxyExit:
    how: str  # restart | shutdown | terminated | parent-gone
    reason: str = ""


@dataclass
class Proxy:
    """Frontend-facing sockets (bound at construction) and, once attached, the upstream ones."""

    conn: dict[str, Any]
    ctx: zmq.Context[Any] = field(default_factory=zmq.Context)

    def __post_init__(self) -> None:
        self.front_signer = Signer(str(self.conn.get("key", "")).encode(), self.conn.get("signature_scheme", "hmac-sha256"))
        self.front: dict[str, zmq.Socket[Any]] = {}
        try:
            for channel in CHANNELS:
                self.front[channel] = self._bind(zmq.ROUTER, f"{channel}_port")
            self.front_iopub = self._bind(zmq.XPUB, "iopub_port")
            self.front_iopub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber gets its welcome
            self.hb = self._bind(zmq.ROUTER, "hb_port")
        except zmq.ZMQError as exc:
            self.ctx.destroy(linger=0)
            raise CakeError(f"Cannot listen on the ports of the connection file ({exc}). Is another kernel using them?") from None
        self._hb_thread = threading.Thread(target=self._heartbeat, name="cake-hb", daemon=True)
        self._hb_thread.start()
        self.handle: Handle | None = None
        self.gone = False  # the session ended under a connected frontend (dormant mode)
        # execute_requests sent upstream and not yet answered: msg_id -> (routing identities, header).
        # If the session dies under a running cell, the frontend still gets an error for it.
        self._inflight: dict[str, tuple[list[bytes], dict[str, Any]]] = {}
        self.kernel_info: dict[str, Any] = {}
        self._pending: list[_Pending] = []
        self._workers = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="cake-proxy")
        self._bad_signatures = 0
        self._session: Session | None = None

    def _bind(self, kind: int, port_key: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 1000)  # the last replies (shutdown_reply) still go out at exit
        sock.bind(_url(self.conn, port_key))
        return sock

    def _heartbeat(self) -> None:
        # Echo, as ipykernel's heartbeat does. Local on purpose: remote liveness is watched through the
        # nanny, and a restarting remote kernel must not look like a dead local one.
        control = self.ctx.socket(zmq.PAIR)
        control.connect("inproc://cake-hb-control")
        try:
            zmq.proxy_steerable(self.hb, self.hb, None, control)
        except zmq.ZMQError:
            pass
        finally:
            control.close(linger=0)
            self.hb.close(linger=0)

    @property
    def session(self) -> Session:
        """jupyter_client's Session with the frontend's key: for the few messages the proxy writes itself."""
        if self._session is None:
            from jupyter_client.session import Session

            key = str(self.conn.get("key", "")).encode()
            self._session = Session(key=key, signature_scheme=self.conn.get("signature_scheme", "hmac-sha256"))
        return self._session

    # -- upstream --------------------------------------------------------------------------------------
    def attach(self, handle: Handle) -> None:
        from jupyter_cake.session.connection import secure_client

        remote = handle.remote.channel.connection
        self.handle = handle
        self.remote_signer = Signer(str(remote.get("key", "")).encode(), remote.get("signature_scheme", "hmac-sha256"))
        identity = f"cake-proxy-{uuid.uuid4().hex}".encode()
        self.up: dict[str, zmq.Socket[Any]] = {}
        for channel in CHANNELS:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if channel != "control":
                sock.setsockopt(zmq.ROUTING_ID, identity)  # shell and stdin share it (see module doc)
            secure_client(sock, remote)
            sock.connect(_url(remote, f"{channel}_port"))
            self.up[channel] = sock
        self.up_iopub = self.ctx.socket(zmq.SUB)
        self.up_iopub.setsockopt(zmq.LINGER, 0)
        self.up_iopub.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(self.up_iopub, remote)
        # Its connection breaking means lost output: the monitor says when, and gaps.py fills them in.
        self._iopub_monitor = self.up_iopub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.up_iopub.connect(_url(remote, "iopub_port"))
        self.gaps = Gaps(lambda run_id, since: handle.nanny("journal", run_id=run_id, since=since), self._workers,
                         self._forward_held, self._send_front)  # fmt: skip
        _quiet_engine_iopub(handle)
        self._sync()

    def _sync(self) -> None:
        """Wait until the remote kernel answers us AND our iopub subscription delivers, so the frontend's
        first outputs cannot be lost to ZMQ's slow-joiner effect. Keeps the kernel_info for dormant mode."""
        from jupyter_client.session import Session

        assert self.handle is not None
        remote = self.handle.remote.channel.connection
        session = Session(key=str(remote.get("key", "")).encode(), signature_scheme=remote.get("signature_scheme", "hmac-sha256"))
        poller = zmq.Poller()
        poller.register(self.up["shell"], zmq.POLLIN)
        poller.register(self.up_iopub, zmq.POLLIN)
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        replied = subscribed = False
        next_probe = 0.0
        while not (replied and subscribed):
            now = time.monotonic()
            if now > deadline:
                raise CakeError(f"The remote kernel did not answer within {SYNC_TIMEOUT_S:g} s of connecting.")
            if now >= next_probe:
                session.send(self.up["shell"], "kernel_info_request", {})
                next_probe = now + 0.5
            for sock, _ in poller.poll(100):
                frames = sock.recv_multipart()
                if sock is self.up_iopub:
                    subscribed = True
                    continue
                _, msg_frames = session.feed_identities(frames)
                msg = session.deserialize(msg_frames, content=True)
                if msg["msg_type"] == "kernel_info_reply":
                    replied = True
                    self.kernel_info = msg["content"]

    # -- main loop -------------------------------------------------------------------------------------
    def serve(self, parent_pid: int | None, ppid: int) -> ProxyExit:
        poller = zmq.Poller()
        handlers: dict[zmq.Socket[Any], Callable[[], ProxyExit | None]] = {}
        for channel in CHANNELS:
            front, up = self.front[channel], self.up[channel]
            handlers[front] = self._make_forward_in(front, up, channel)
            handlers[up] = self._make_forward_out(up, front, channel)
        handlers[self.up_iopub] = self._forward_iopub
        handlers[self.front_iopub] = self._on_subscription
        handlers[self._iopub_monitor] = self._on_iopub_event
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        self._upstream_sockets = [*self.up.values(), self.up_iopub]
        self._poller = poller
        self.last_upstream = time.monotonic()
        next_tick = time.monotonic() + TICK_S
        liveness: concurrent.futures.Future[Any] | None = None
        while True:
            timeout = 10 if self._pending or self.gaps.busy else int(TICK_S * 1000)
            for sock, _ in poller.poll(timeout):
                outcome = handlers[sock]()
                if outcome is not None:
                    return outcome
            if self._pending:
                self._settle_pending()
            if self.gaps.runs:
                self.gaps.settle()
            now = time.monotonic()
            if now < next_tick:
                continue
            next_tick = now + TICK_S
            if os.getppid() != ppid or (parent_pid and not pid_alive(parent_pid)):
                return ProxyExit("parent-gone", "the frontend that started this kernel has exited")
            if not self.gone and liveness is None and now - self.last_upstream > LIVENESS_EVERY_S:
                assert self.handle is not None
                liveness = self._workers.submit(self.handle.ensure_alive)
            if liveness is not None and liveness.done():
                error = liveness.exception()
                liveness = None
                self.last_upstream = now
                if isinstance(error, SessionGone):
                    self._go_dormant()

    def _make_forward_in(self, src: zmq.Socket[Any], dst: zmq.Socket[Any], channel: str) -> Callable[[], ProxyExit | None]:
        front_signer = self.front_signer
        track = channel == "shell"

        def forward() -> ProxyExit | None:
            for frames, i in _drain(src):
                parts = frames[i + 2 : i + 6]
                if not front_signer.verify(frames[i + 1].bytes, parts):
                    self._bad_signature(channel)
                    continue
                header = parts[0].bytes
                if self.gone or any(t in header for t in _INTERCEPTED):
                    outcome = self._answer(channel, frames[:i], parts)
                    if outcome is not None:
                        return outcome
                    continue
                if track and b"execute_request" in header:
                    parsed, idents = json.loads(header), [f.bytes for f in frames[:i]]
                    self._inflight[parsed["msg_id"]] = (idents, parsed)
                    self.gaps.started(idents, parsed)
                frames[i + 1] = self.remote_signer.sign(parts)
                dst.send_multipart(frames, copy=False)
            return None

        return forward

    def _make_forward_out(self, src: zmq.Socket[Any], dst: zmq.Socket[Any], channel: str) -> Callable[[], None]:
        track = channel == "shell"
        inflight = self._inflight

        def forward() -> None:
            self.last_upstream = time.monotonic()
            for frames, i in _drain(src):
                if i == 0:
                    continue  # a reply to the proxy's own start-up probe, no frontend to route to
                parts = frames[i + 2 : i + 6]
                if not self.remote_signer.verify(frames[i + 1].bytes, parts):
                    self._bad_signature("the remote kernel")
                    continue
                if track and inflight and b"execute_reply" in parts[0].bytes:
                    run_id = json.loads(parts[1].bytes).get("msg_id", "")
                    inflight.pop(run_id, None)
                    self.gaps.replied(run_id)
                frames[i + 1] = self.front_signer.sign(parts)
                dst.send_multipart(frames, copy=False)

        return forward

    def _forward_iopub(self) -> None:
        self.last_upstream = time.monotonic()
        src, dst = self.up_iopub, self.front_iopub
        for frames, i in _drain(src):
            parts = frames[i + 2 : i + 6]
            header = parts[0].bytes
            if b"iopub_welcome" in header:
                continue  # the remote kernel welcoming the proxy's subscription; frontends get their own
            if not self.remote_signer.verify(frames[i + 1].bytes, parts):
                self._bad_signature("the remote kernel's iopub")
                continue
            if self.gaps.runs and not self.gaps.iopub(frames, parts):
                continue  # held while a gap is filled, or delivered from the journal already
            frames[i + 1] = self.front_signer.sign(parts)
            dst.send_multipart(frames, copy=False)

    def _forward_held(self, frames: list[Any]) -> None:
        """A held iopub message (verified when it arrived), once its gap is filled."""
        i = _delimiter(frames)
        frames[i + 1] = self.front_signer.sign(frames[i + 2 : i + 6])
        self.front_iopub.send_multipart(frames, copy=False)

    def _send_front(self, channel: str, msg_type: str, content: dict[str, Any], parent: dict[str, Any],
                    metadata: dict[str, Any], buffers: list[Any], idents: list[bytes] | None = None) -> None:  # fmt: skip
        """A message the proxy writes to the frontend itself (from the journal, after a gap)."""
        sock = self.front_iopub if channel == "iopub" else self.front[channel]
        ident = idents if channel != "iopub" else [f"kernel.cake.{msg_type}".encode()]
        self.session.send(sock, msg_type, content, parent=parent, metadata=metadata, buffers=buffers or None, ident=ident)

    def _close_iopub_monitor(self) -> None:
        monitor, self._iopub_monitor = getattr(self, "_iopub_monitor", None), None
        if monitor is not None:
            if getattr(self, "_poller", None) is not None:
                self._poller.unregister(monitor)
            self.up_iopub.disable_monitor()
            monitor.close(linger=0)

    def _on_iopub_event(self) -> None:
        from zmq.utils.monitor import parse_monitor_message

        event = parse_monitor_message(self._iopub_monitor.recv_multipart())["event"]
        if event == zmq.EVENT_DISCONNECTED:
            self.gaps.disconnected()
        elif event == zmq.EVENT_CONNECTED:
            self.gaps.connected()

    def _on_subscription(self) -> None:
        """XPUB: a frontend subscribed. Answer like ipykernel 7 does (an ``iopub_welcome``), so clients that
        wait for it know their subscription is live."""
        for _ in range(DRAIN):
            try:
                event = self.front_iopub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] != b"\x01":
                continue
            topic = event[1:]
            try:
                text = topic.decode()
            except UnicodeDecodeError:
                continue
            self.session.send(self.front_iopub, "iopub_welcome", {"subscription": text}, ident=[topic] if topic else None)

    def _bad_signature(self, where: str) -> None:
        self._bad_signatures += 1
        if self._bad_signatures in (1, 10, 100) or self._bad_signatures % 1000 == 0:
            log(f"dropped {self._bad_signatures} message(s) with an invalid signature (latest from {where})")

    # -- requests the proxy answers itself ----------------------------------------------------------------
    def _answer(self, channel: str, idents: list[Any], parts: list[Any]) -> ProxyExit | None:
        header = json.loads(parts[0].bytes)
        content = json.loads(parts[3].bytes)
        msg_type = header.get("msg_type", "")
        parent = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        ident = [f.bytes for f in idents]
        sock = self.front[channel]
        if msg_type == "interrupt_request":
            self._interrupt(sock, parent, ident)
            return None
        if msg_type == "shutdown_request":
            restart = bool(content.get("restart"))
            if restart and not self.gone:
                assert self.handle is not None
                try:
                    # Half of Handle.restart(): the fresh kernel boots while the frontend relaunches this
                    # proxy; the next proxy waits for it to be ready (frontends give a kernel ~5 s to exit).
                    self.handle.nanny("restart")
                except CakeError as exc:
                    log(f"could not restart the remote kernel: {exc}")
            reply = {"status": "ok", "restart": restart}
            self.session.send(sock, "shutdown_reply", reply, parent=parent, ident=ident)
            self.session.send(self.front_iopub, "shutdown_reply", reply, parent=parent)
            return ProxyExit("restart" if restart else "shutdown")
        if self.gone:
            self._answer_dormant(channel, msg_type, parent, ident)
            return None
        # A message that merely mentions those words (say, in its session name): forward it untouched.
        frames = [*idents, DELIM, self.remote_signer.sign(parts), *parts]
        self.up[channel].send_multipart(frames, copy=False)
        return None

    def _interrupt(self, sock: zmq.Socket[Any], parent: dict[str, Any], ident: list[bytes]) -> None:
        if self.gone:
            self.session.send(sock, "interrupt_reply", {"status": "ok"}, parent=parent, ident=ident)
            return
        assert self.handle is not None

        def done(future: concurrent.futures.Future[Any]) -> None:
            error = future.exception()
            content: dict[str, Any] = {"status": "ok"}
            if error is not None:
                log(f"interrupt failed: {error}")
                content = {"status": "error", "ename": type(error).__name__, "evalue": str(error), "traceback": []}
            self.session.send(sock, "interrupt_reply", content, parent=parent, ident=ident)

        # On a worker thread: the nanny's answer takes a round trip, and output keeps flowing meanwhile.
        self._pending.append(_Pending(self._workers.submit(self.handle.interrupt), done))

    def _settle_pending(self) -> None:
        still = []
        for item in self._pending:
            if item.future.done():
                item.on_done(item.future)
            else:
                still.append(item)
        self._pending = still

    def interrupt_from_signal(self) -> None:
        """SIGINT (interrupt_mode "signal" frontends, Ctrl-C in a terminal) interrupts the remote cell."""
        if self.handle is not None and not self.gone:
            self._workers.submit(self.handle.interrupt)

    # -- dormant: the session ended under a connected frontend --------------------------------------------
    def _gone_reason(self) -> str:
        """Read when needed: whoever stopped the session (`cake down`, idle autostop) may record its
        reason a moment after this proxy noticed."""
        assert self.handle is not None
        row = self.handle.cake.store.session(self.handle.id) or self.handle.row
        return f"Session {row.id} ({row.name}) has stopped: {row.reason or 'it no longer answers'}."

    def _go_dormant(self) -> None:
        self.gone = True
        log(self._gone_reason())
        log("This kernel now answers every execution with that error. Restart the kernel to start a new session.")
        self.gaps.runs.clear()
        self._close_iopub_monitor()
        for sock in self._upstream_sockets:
            self._poller.unregister(sock)
            sock.close(linger=0)
        for idents, header in self._inflight.values():  # cells that were running: they end with the error
            parent = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
            self._answer_dormant("shell", "execute_request", parent, idents)
        self._inflight.clear()

    def _answer_dormant(self, channel: str, msg_type: str, parent: dict[str, Any], ident: list[bytes]) -> None:
        sock = self.front[channel]
        reply_type = msg_type.replace("_request", "_reply")
        reason = self._gone_reason()
        error = {
            "status": "error",
            "ename": "SessionGone",
            "evalue": f"{reason} Restart the kernel to start a new Cake session.",
            "traceback": [f"\x1b[0;31mSessionGone\x1b[0m: {reason}", "Restart the kernel to start a new Cake session."],
        }
        content: dict[str, Any]
        if msg_type == "kernel_info_request":
            content = self.kernel_info or {"status": "ok", "protocol_version": "5.3", "implementation": "cake"}
        elif msg_type == "execute_request":
            self.session.send(self.front_iopub, "status", {"execution_state": "busy"}, parent=parent)
            self.session.send(self.front_iopub, "error", {k: error[k] for k in ("ename", "evalue", "traceback")}, parent=parent)
            content = dict(error, execution_count=0, payload=[], user_expressions={})
        elif msg_type == "comm_info_request":
            content = {"status": "ok", "comms": {}}
        elif msg_type == "is_complete_request":
            content = {"status": "unknown"}
        elif msg_type == "complete_request":
            cursor = parent["content"].get("cursor_pos", 0)
            content = {"status": "ok", "matches": [], "cursor_start": cursor, "cursor_end": cursor, "metadata": {}}
        elif msg_type == "inspect_request":
            content = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        elif msg_type == "history_request":
            content = {"status": "ok", "history": []}
        elif not msg_type.endswith("_request"):
            return  # comm messages, input replies: nobody is there to receive them
        else:
            content = error
        self.session.send(sock, reply_type, content, parent=parent, ident=ident)
        if msg_type == "execute_request":
            self.session.send(self.front_iopub, "status", {"execution_state": "idle"}, parent=parent)

    # -- teardown ----------------------------------------------------------------------------------------
    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
        stop = self.ctx.socket(zmq.PAIR)
        stop.bind("inproc://cake-hb-control")
        stop.send(b"TERMINATE")
        self._hb_thread.join(2)
        stop.close(linger=0)
        for sock in [*self.front.values(), self.front_iopub]:
            sock.close()  # LINGER 1 s: the shutdown_reply still reaches the frontend
        self._close_iopub_monitor()
        for sock in getattr(self, "_upstream_sockets", []):
            sock.close(linger=0)
        self.ctx.term()


def _quiet_engine_iopub(handle: Handle) -> None:
    """The engine's own client of this session also subscribes to the kernel's iopub, and would decode
    the header of every message the frontend's cells produce, for nothing: the proxy relays them.
    Unsubscribing it keeps that work off the relay's two cores. Only ``Handle.restart`` relies on it
    (its ready check) and the proxy does not call that."""
    from jupyter_cake import engine

    async def unsubscribe() -> None:
        sock = getattr(handle.remote, "iopub", None)
        if sock is not None:
            sock.setsockopt(zmq.UNSUBSCRIBE, b"")

    engine.run(unsubscribe(), timeout=5)


# -- entry point ------------------------------------------------------------------------------------
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ide_bridge.kernel",
        description="Make a Cake session answer at a Jupyter connection file's ports (a kernelspec's argv).",
    )
    parser.add_argument("-f", "--connection-file", required=True, help="the connection file the frontend wrote")
    parser.add_argument("--target", required=True, help="target line, e.g. 'slurm/hpc/gpu --gpus A100:1'")
    parser.add_argument("--name", default=None, help="session name (default: the target's name)")
    parser.add_argument("--env-file", default=None, help="0600 JSON file of the target's --env values")
    parser.add_argument("--on-shutdown", choices=("down", "keep"), default="down",
                        help="on kernel shutdown: stop the session (down) or leave it for re-attachment (keep)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for a new session to start")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(_parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    from ide_bridge.kernelspecs import env_tokens
    from jupyter_cake.targets import resolve_target

    ppid = os.getppid()  # a change later means the frontend that launched us is gone

    def terminate(*_: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until there is a session to interrupt
    try:
        target = resolve_target([*shlex.split(args.target), *env_tokens(args.env_file, args.name)])
        proxy = Proxy(read_connection_file(args.connection_file))
    except CakeError as exc:
        log(f"cannot start the kernel: {exc}")
        return 2
    except Terminated:
        return 143
    handle = lease = None
    try:
        try:
            handle, lease = _start(proxy, target, args)
        except CakeError as exc:
            log(f"could not start a session on {target.describe()}: {exc}")
            return 1
        signal.signal(signal.SIGINT, lambda *_: proxy.interrupt_from_signal())
        try:
            outcome = proxy.serve(_parent_pid(), ppid)
        except Terminated:
            outcome = ProxyExit("terminated")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the teardown below undisturbed
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _finish(proxy, handle, outcome, args.on_shutdown)
        return 0
    except Terminated:
        return 143
    finally:
        proxy.close()
        if lease is not None:
            lease.release()


def _start(proxy: Proxy, target: Target, args: argparse.Namespace) -> tuple[Handle, Lease | None]:
    from jupyter_cake.manager import Cake
    from jupyter_cake.runner import StderrProgress

    name = args.name or target.name or target.canonical()
    # Sessions of IDE kernels are kept apart from the magics' (same name, different owner), and per
    # notebook where the frontend says which one (jupyter_server sets JPY_SESSION_NAME).
    owner = f"ide:{os.environ.get('JPY_SESSION_NAME', '')}"
    progress = StderrProgress()
    started_at = time.monotonic()
    handle, lease, started = acquire_session(Cake(), target, name, owner, progress, args.timeout or None)
    try:
        proxy.attach(handle)
    except BaseException:
        if started:  # nobody else knows about it yet: don't leave it running
            handle.cake.down(handle.row, reason="the IDE kernel proxy failed to connect")
        raise
    verb = "started" if started else "re-attached to"
    log(f"{verb} session {handle.id} ({name}) on {target.describe()} in {time.monotonic() - started_at:.1f} s")
    return handle, lease


def _parent_pid() -> int | None:
    try:
        return int(os.environ.get("JPY_PARENT_PID", "")) or None
    except ValueError:
        return None


def _finish(proxy: Proxy, handle: Handle, outcome: ProxyExit, policy: str) -> None:
    if outcome.how == "restart" or proxy.gone:  # restarted: the next proxy takes over; gone: nothing to stop
        handle.close()
        return
    if policy == "keep":
        log(f"kernel {outcome.how}; session {handle.id} keeps running (--on-shutdown keep)")
        handle.close()
        return
    why = {
        "shutdown": "kernel shut down by the frontend",
        "terminated": "kernel terminated by the frontend (SIGTERM)",
        "parent-gone": "the frontend that started the kernel exited",
    }[outcome.how]
    try:
        handle.cake.down(handle.row, reason=why)
        log(f"session {handle.id} is down ({why})")
    except CakeError as exc:
        log(f"could not stop session {handle.id}: {exc}. `cake down {handle.id}` stops it.")


if __name__ == "__main__":
    main()

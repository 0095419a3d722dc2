"""The nanny process: start the kernel, report where it listens, journal its output, watch for idleness.

Started by a backend inside the allocation (a local subprocess, a Slurm step, a pod...)::

    python -m jupyter_cake.nanny --session-dir DIR [--response-address HOST:PORT] [--idle-minutes M]

Start-up order is chosen for latency: the kernel process is spawned first, with only the standard
library imported, and the nanny imports pyzmq / jupyter_client while the kernel boots on another core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_cake.nanny import curve, groups
from jupyter_cake.nanny.groups import SESSION_DIR_ENV
from jupyter_cake.nanny.kernel import AWAIT_CONNECTION_ENV
from jupyter_cake.nanny.services import Service, start_services

log = logging.getLogger("cake.nanny")

# Requests that only look at the session don't keep it alive; everything else a client asks does.
PASSIVE_OPS = frozenset({"ping", "runs"})
RESPONSE_TOKEN_ENV = "CAKE_RESPONSE_TOKEN"  # passed in the environment, not argv, so `ps` can't see it


def free_ports(ip: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``ip`` right now (held together so none repeats)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((ip, 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only (it may hold the session key)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jupyter_cake.nanny", description=__doc__)
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--response-address", help="HOST:PORT to send the connection info to")
    parser.add_argument("--idle-minutes", type=float, default=0.0, help="release after this long idle (0: never)")
    parser.add_argument("--ip", default="127.0.0.1", help="interface the kernel and nanny listen on")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the kernel")
    parser.add_argument("--workdir", default=None, help="kernel working directory")
    parser.add_argument("--release-command", default=None, help="JSON argv run on exit to free the allocation")
    parser.add_argument(
        "--service", nargs=3, action="append", metavar=("NAME", "MODULE", "SPEC"),
        help="start MODULE's service beside the kernel, answering control requests as NAME (see services.py)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _kernel_command(python: str, env: dict[str, str]) -> list[str]:
    """How to start the kernel launcher. When the nanny was shipped to a node without Cake installed
    (CAKE_NANNY_ROOT names the unpacked folder), the kernel imports the launcher from that folder
    and then takes it off sys.path and PYTHONPATH, so user code never sees the shipped files."""
    root = env.pop("CAKE_NANNY_ROOT", None)
    if not root:
        return [python, "-m", "jupyter_cake.nanny.kernel"]
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    boot = (
        f"import sys; sys.path.insert(0, {root!r}); import jupyter_cake.nanny.kernel as launcher; "
        "sys.path.remove(sys.path[0]); launcher.main(sys.argv[1:])"
    )
    return [python, "-c", boot]


def spawn_kernel(args: argparse.Namespace, connection_file: Path) -> subprocess.Popen[bytes]:
    """Start the kernel launcher; it imports ipykernel, then waits for ``hand_over`` before it reads
    ``connection_file``, so the nanny can make the session's keys while the kernel boots."""
    # JPY_PARENT_PID: the kernel exits if the nanny dies.
    env = dict(os.environ, JPY_PARENT_PID=str(os.getpid()), **{AWAIT_CONNECTION_ENV: "1"})
    env.pop(RESPONSE_TOKEN_ENV, None)
    command = _kernel_command(args.python, env)
    with open(args.session_dir / "kernel.log", "ab") as kernel_log:
        return subprocess.Popen(
            [*command, "-f", str(connection_file)],
            env=env,
            cwd=args.workdir or None,
            stdin=subprocess.PIPE,
            stdout=kernel_log,
            stderr=subprocess.STDOUT,
        )


def hand_over(kernel: subprocess.Popen[bytes]) -> None:
    """The connection file is written: let the kernel read it (its stdin then ends, as /dev/null would)."""
    assert kernel.stdin is not None
    try:
        kernel.stdin.write(b"\n")
        kernel.stdin.close()
    except OSError:  # the kernel died while booting: the serve loop reports its exit
        pass


class Nanny:
    def __init__(self, args: argparse.Namespace, conn: dict[str, Any], kernel: subprocess.Popen[bytes],
                 plaintext: str | None = None) -> None:  # fmt: skip
        import zmq
        from jupyter_client.session import Session

        from jupyter_cake.nanny.journal import Journal

        self.args = args
        self.conn = conn
        self.kernel = kernel
        self.plaintext = plaintext  # why the session's sockets are not encrypted, if they are not
        self.session_dir: Path = args.session_dir
        self.session = Session(key=conn["key"].encode(), signature_scheme=conn["signature_scheme"])
        self.journal = Journal(self.session_dir)
        self.ctx = zmq.Context()
        self.iopub = self.ctx.socket(zmq.SUB)
        # Subscribe by topic prefix so comm traffic (variables pushed/pulled, possibly gigabytes) is
        # filtered at the kernel's PUB socket and never reaches this process. See ipykernel's topics:
        # "stream.<name>", "display_data", "kernel.<id>.<type>", "execute_result", "error".
        for topic in (b"stream.", b"display_data", b"kernel.", b"execute_result", b"error"):
            self.iopub.setsockopt(zmq.SUBSCRIBE, topic)
        # The kernel binds its ports a moment after this connect; retry often so the journal is
        # subscribed as soon as the kernel can publish (zmq's default retry is every 100 ms).
        self.iopub.setsockopt(zmq.RECONNECT_IVL, 10)
        curve.connect(self.iopub, conn)
        self.iopub.connect(f"tcp://{conn['ip']}:{conn['iopub_port']}")
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        curve.serve(self.control, conn)
        self.port = self.control.bind_to_random_port(f"tcp://{args.ip}")
        self.poller = zmq.Poller()
        self.poller.register(self.iopub, zmq.POLLIN)
        self.poller.register(self.control, zmq.POLLIN)
        self.started = time.time()
        self.last_activity = time.time()
        self.kernel_busy = False
        self.stopping: str | None = None
        self.services: dict[str, Service] = {}  # add-on services beside the kernel (services.py)

    # -- reporting ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "connection": self.conn,
            "nanny_port": self.port,
            "pid": os.getpid(),
            "kernel_pid": self.kernel.pid,
            "host": socket.gethostname(),
            "started": self.started,
            "plaintext": self.plaintext,
        }

    def await_journal_subscription(self, deadline_seconds: float = 300.0) -> None:
        """Return once this nanny's iopub subscription is live, so that the journal cannot miss the
        first output of a run that a client starts right after the kernel answers (ZMQ's slow-joiner
        problem: a PUB socket drops what it publishes before the SUB's subscription arrives).

        Proof of a live subscription is a status message caused by our own kernel_info request; it
        is re-sent until one shows up. Also returns when the kernel exits or the deadline passes, so
        the serve loop reports those as usual."""
        import zmq

        shell = self.ctx.socket(zmq.DEALER)
        shell.setsockopt(zmq.LINGER, 0)
        curve.connect(shell, self.conn)
        shell.connect(f"tcp://{self.conn['ip']}:{self.conn['shell_port']}")
        poller = zmq.Poller()
        poller.register(self.iopub, zmq.POLLIN)
        poller.register(shell, zmq.POLLIN)
        ours: set[str] = set()
        end = time.monotonic() + deadline_seconds
        # One request waits in the DEALER's queue while the kernel boots; another goes out only after
        # a reply came without its status reaching us (the subscription wasn't through yet).
        next_send = 0.0
        try:
            while time.monotonic() < end and self.kernel.poll() is None:
                if time.monotonic() >= next_send:
                    request = self.session.msg("kernel_info_request", {})
                    self.session.send(shell, request)
                    ours.add(request["header"]["msg_id"])
                    next_send = time.monotonic() + 2.0
                for sock, _ in poller.poll(20):
                    if sock is shell:
                        shell.recv_multipart()
                        next_send = min(next_send, time.monotonic() + 0.02)  # the idle status follows
                        continue
                    header, body = self._on_iopub()
                    if header["msg_type"] == "status" and json.loads(body[2]).get("msg_id") in ours:
                        return
            log.warning("kernel did not publish on iopub in time; the journal may miss early output")
        finally:
            shell.close(linger=0)

    def report(self) -> None:
        info = self.info()
        _write_private(self.session_dir / "nanny.json", info)
        self._write_state("running")
        if self.args.response_address:
            host, _, port = self.args.response_address.rpartition(":")
            payload = dict(info, token=os.environ.get(RESPONSE_TOKEN_ENV, ""))
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(json.dumps(payload).encode() + b"\n")

    def _write_state(self, state: str, reason: str | None = None) -> None:
        _write_private(
            self.session_dir / "state.json",
            {"state": state, "reason": reason, "pid": os.getpid(), "time": time.time()},
        )

    # -- main loop ---------------------------------------------------------------------------------
    def idle_seconds(self) -> float:
        return 0.0 if self.kernel_busy else time.time() - self.last_activity

    def serve(self) -> None:
        idle_limit = self.args.idle_minutes * 60
        # The tick bounds how late a SIGTERM (release) or the idle deadline is noticed.
        tick_ms = int(min(200, max(50, idle_limit * 1000 / 20))) if idle_limit else 200
        while self.stopping is None:
            for sock, _ in self.poller.poll(tick_ms):
                if sock is self.iopub:
                    self._on_iopub()
                else:
                    self._on_control()
            if self.kernel.poll() is not None and self.stopping is None:
                self.stopping = f"kernel exited with code {self.kernel.returncode}"
            for service in self.services.values():  # e.g. a Ray cluster running tasks is not idle
                self.last_activity = max(self.last_activity, service.last_busy)
            if self.stopping is None and idle_limit and self.idle_seconds() > idle_limit:
                self.stopping = f"idle for {self.args.idle_minutes:g} minutes"
        self.shutdown(self.stopping)

    def _on_iopub(self) -> tuple[dict[str, Any], list[bytes]]:
        # Frames: topic, delimiter, signature, header, parent, metadata, content, buffers... The
        # signature isn't checked: this SUB socket is connected to our own kernel's PUB socket only,
        # so nothing else can publish into it.
        frames = self.iopub.recv_multipart()
        body = frames[frames.index(b"<IDS|MSG>") + 1 :]
        header = json.loads(body[1])
        if header["msg_type"] == "status":
            self.kernel_busy = json.loads(body[4]).get("execution_state") == "busy"
            self.last_activity = time.time()
        self.journal.record(header, body)
        return header, body

    def _on_control(self) -> None:
        idents, frames = self.session.feed_identities(self.control.recv_multipart())
        try:
            request = self.session.deserialize(frames, content=True)
        except Exception:  # noqa: BLE001 - unsigned or malformed: drop it, never answer strangers
            log.warning("dropped an unsigned or malformed control message")
            return
        op = request["content"].get("op")
        if op not in PASSIVE_OPS:
            self.last_activity = time.time()
        try:
            reply = self._dispatch(op, request["content"])
        except Exception as exc:  # noqa: BLE001 - the client shows it
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.session.send(self.control, "cake_reply", reply, parent=request, ident=idents)

    def _dispatch(self, op: str | None, content: dict[str, Any]) -> dict[str, Any]:
        from jupyter_cake.nanny.journal import read_entries

        if op == "ping":
            return {
                "ok": True,
                "state": "busy" if self.kernel_busy else "idle",
                "idle_seconds": self.idle_seconds(),
                "idle_minutes": self.args.idle_minutes,
                "active_runs": self.journal.active(),
                **self.info(),
                "connection": None,
            }
        if op == "runs":
            return {"ok": True, "runs": {k: vars(v) for k, v in self.journal.runs.items()}}
        if op == "service":
            name = str(content.get("name"))
            service = self.services.get(name)
            if service is None:
                return {"ok": False, "error": f"this session runs no service named {name!r}"}
            return {"ok": True, **service.status(details=bool(content.get("details")))}
        if op == "journal":
            run_id = str(content["run_id"])
            entries = read_entries(self.journal.dir, run_id, int(content.get("since", 0)))
            run = self.journal.runs.get(run_id)
            return {"ok": True, "entries": entries, "run": vars(run) if run else None}
        if op == "interrupt":
            os.kill(self.kernel.pid, signal.SIGINT)
            return {"ok": True}
        if op == "restart":
            # A fresh kernel in the same allocation, at the same ports and key: clients reconnect by
            # simply waiting for kernel_info again. Used by IDE restarts.
            self._stop_kernel()
            self.kernel = spawn_kernel(self.args, self.session_dir / "kernel.json")
            hand_over(self.kernel)
            self.kernel_busy = False
            self.await_journal_subscription()
            return {"ok": True, "kernel_pid": self.kernel.pid}
        if op == "shutdown":
            self.stopping = str(content.get("reason") or "shut down by the user")
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    def _stop_kernel(self) -> None:
        if self.kernel.poll() is None:
            self.kernel.terminate()
            try:
                self.kernel.wait(5)
            except subprocess.TimeoutExpired:
                self.kernel.kill()
                self.kernel.wait()

    def shutdown(self, reason: str) -> None:
        log.info("stopping: %s", reason)
        self._stop_kernel()
        for service in self.services.values():
            service.stop()
        self.journal.close()
        self._write_state("stopped", reason)
        if self.args.release_command:
            subprocess.run(json.loads(self.args.release_command), check=False)
        self.ctx.destroy(linger=0)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s cake-nanny %(levelname)s %(message)s")
    args.session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ[SESSION_DIR_ENV] = str(args.session_dir)  # marks the session's processes (groups.py)
    ports = free_ports(args.ip, 5)
    conn = {
        "ip": args.ip,
        "transport": "tcp",
        "shell_port": ports[0],
        "iopub_port": ports[1],
        "stdin_port": ports[2],
        "control_port": ports[3],
        "hb_port": ports[4],
        "key": secrets.token_hex(32),
        "signature_scheme": "hmac-sha256",
        "kernel_name": "cake",
    }
    connection_file = args.session_dir / "kernel.json"
    # Services start before the kernel: it inherits their environment, and they boot while it does.
    services = start_services(args.service, args.session_dir, args.python)
    # The nanny's group holds the kernel; services may have groups of their own: all end with the session.
    groups.record(args.session_dir, [os.getpgrp(), *(g for s in services.values() if (g := s.process_group) is not None)])
    kernel = spawn_kernel(args, connection_file)
    plaintext = curve.plaintext_reason(args.python)  # while the kernel imports ipykernel
    if plaintext is None:
        conn.update(curve.new_keys())
    else:
        log.warning("the session's sockets are not encrypted: %s", plaintext)
    _write_private(connection_file, conn)
    hand_over(kernel)
    nanny = Nanny(args, conn, kernel, plaintext)
    nanny.services = services
    signal.signal(signal.SIGTERM, lambda *_: setattr(nanny, "stopping", "terminated (SIGTERM)"))
    nanny.await_journal_subscription()
    try:
        nanny.report()
    except OSError as exc:
        nanny.shutdown(f"could not report to {args.response_address}: {exc}")
        sys.exit(f"cake-nanny: could not report to {args.response_address}: {exc}")
    nanny.serve()

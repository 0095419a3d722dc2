"""The channel: local ports forwarded to the session Pod's loopback through the API server.

A small detached process (``python -m jupyter_cake.backends.kubernetes.forward``) per session listens
on 127.0.0.1 (the kernel's 5 ports + the nanny's) and opens a fresh port-forward websocket (TLS to the
API server, then the kubelet) for every TCP connection it accepts. So:
- there is no long-lived tunnel to break: when a forward drops (API server restart, network blip), ZMQ
  reconnects and that new connection gets a new websocket, for as long as the Pod lives;
- every process of this user (notebook, `cake` CLI, Jupyter server) shares it, and it survives a
  restart of the notebook kernel (its own session, like the local backend's nanny);
- if the process itself dies, ``KubernetesChannel.repair`` starts it again on the same ports.
No Service, NodePort or ingress is involved, and no pod port is exposed beyond the Pod's loopback.

It also watches the Pod: when the session ends (idle autostop, `cake down`, OOM, eviction, deletion)
it records why in the session directory (``pod-ended.json``), deletes a finished Pod (so an idle
release leaves nothing behind) and exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_cake.backends.base import Channel

log = logging.getLogger("cake.k8s.forward")
PID_FILE = "forward.pid"
ENDED_FILE = "pod-ended.json"
WATCH_SECONDS = 300  # one watch request; then a fresh list + watch
WATCH_RETRY_S = 2.0
START_TIMEOUT_S = 20.0


# ------------------------------------------------------------------ the forwarder process
def _serve_connection(cluster: Any, namespace: str, pod: str, remote_port: int, conn: socket.socket) -> None:
    from jupyter_cake.backends.kubernetes.wsforward import open_stream, pump

    try:
        ws = open_stream(cluster, namespace, pod, remote_port)
    except Exception as exc:  # noqa: BLE001 - the Pod may be gone: close, the client reconnects or gives up
        log.warning("port-forward to %s:%s failed: %s", pod, remote_port, exc)
        conn.close()
        return
    error = pump(conn, ws)
    if error:
        log.info("port-forward to %s:%s: %s", pod, remote_port, error.strip())


def _listen(cluster: Any, namespace: str, pod: str, server: socket.socket, remote_port: int) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve_connection, args=(cluster, namespace, pod, remote_port, conn), daemon=True).start()


def _watch(core: Any, namespace: str, pod: str, session_dir: Path) -> None:
    """Return once the Pod has ended; record why, and delete it if it has finished.

    A watch (list + watch on this one Pod, by field selector) rather than polling: the API server
    pushes each change, so an ended session is noticed at once and an idle one costs nothing."""
    from kubernetes import watch

    selector = f"metadata.name={pod}"
    while True:
        try:
            listed = core.list_namespaced_pod(namespace, field_selector=selector, _request_timeout=(5, 30))
            if _ended(core, namespace, pod, session_dir, listed.items[0] if listed.items else None):
                return
            stream = watch.Watch().stream(core.list_namespaced_pod, namespace, field_selector=selector,
                                          resource_version=listed.metadata.resource_version,
                                          timeout_seconds=WATCH_SECONDS, _request_timeout=(5, WATCH_SECONDS + 30))  # fmt: skip
            for event in stream:
                obj = None if event["type"] == "DELETED" else event["object"]
                if _ended(core, namespace, pod, session_dir, obj):
                    return
        except Exception as exc:  # noqa: BLE001 - API server unreachable for a moment: keep forwarding
            log.info("watch of pod %s interrupted (%s); retrying", pod, exc)
            time.sleep(WATCH_RETRY_S)


def _ended(core: Any, namespace: str, pod: str, session_dir: Path, obj: Any | None) -> bool:
    from jupyter_cake.backends.kubernetes.waiting import pod_state

    state = pod_state(obj)
    if obj is not None and not (state.phase in ("Succeeded", "Failed") or obj.metadata.deletion_timestamp):
        return False
    record_end(session_dir, state.fatal)
    if obj is not None and state.phase in ("Succeeded", "Failed"):
        try:  # the container has exited (its resources are free); the Pod object goes too
            core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0, _request_timeout=(5, 10))
        except Exception:  # noqa: BLE001 - the next Cake command (release) deletes it
            pass
    return True


def record_end(session_dir: Path, reason: str) -> None:
    path = session_dir / ENDED_FILE
    if not path.exists():
        path.write_text(json.dumps({"reason": reason, "time": time.time()}))


def main(argv: list[str] | None = None) -> None:
    from jupyter_cake.backends.kubernetes.cluster import connect

    parser = argparse.ArgumentParser(prog="python -m jupyter_cake.backends.kubernetes.forward")
    parser.add_argument("--context", default="")
    parser.add_argument("--kubeconfig", default="")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--map", action="append", default=[], help="LOCAL:REMOTE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s cake-forward %(levelname)s %(message)s")
    cluster = connect(args.context, args.kubeconfig, args.namespace)
    import kubernetes.stream  # noqa: F401 - imported now, not on the first connection

    pairs = args.map
    if not pairs:  # spawned early (while the Pod starts): the ports come on stdin once the kernel reported
        pairs = [line.strip() for line in sys.stdin if line.strip()]
    servers = []
    for pair in pairs:
        local, remote = (int(p) for p in pair.split(":"))
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", local))
        server.listen(64)
        servers.append((server, remote))
    for server, remote in servers:
        threading.Thread(target=_listen, args=(cluster, args.namespace, args.pod, server, remote), daemon=True).start()
    (args.session_dir / PID_FILE).write_text(str(os.getpid()))
    print("ready", flush=True)
    sys.stdout = open(os.devnull, "w")  # the parent stops reading after "ready"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _watch(cluster.core, args.namespace, args.pod, args.session_dir)
    log.info("pod %s ended; forwarder exits", args.pod)


# ------------------------------------------------------------------ the local side
def forwarder_pid(session_dir: Path) -> int | None:
    """The PID of this session's live forwarder, if any."""
    try:
        pid = int((session_dir / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"jupyter_cake.backends.kubernetes.forward" not in cmdline:
        return None  # a reused PID
    stat = Path(f"/proc/{pid}/stat").read_text()
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else pid


def spawn_forwarder(data: dict[str, Any], session_dir: Path) -> subprocess.Popen[bytes]:
    """Start a forwarder that waits for its port map on stdin: spawned while the Pod starts, it has
    imported the kubernetes client and loaded the kubeconfig by the time the kernel reports."""
    argv = [sys.executable, "-m", "jupyter_cake.backends.kubernetes.forward", "--namespace", data["namespace"],
            "--pod", data["pod"], "--session-dir", str(session_dir)]  # fmt: skip
    if data.get("context"):
        argv += ["--context", data["context"]]
    if data.get("kubeconfig"):
        argv += ["--kubeconfig", data["kubeconfig"]]
    with open(session_dir / "forward.log", "ab") as logfile:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logfile,
                                start_new_session=True)  # survives the notebook kernel's restart  # fmt: skip


def finish_forwarder(proc: subprocess.Popen[bytes], session_dir: Path, pairs: list[tuple[int, int]]) -> int:
    """Hand ``proc`` its port map and wait until it listens; returns its PID."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("".join(f"{local}:{remote}\n" for local, remote in pairs).encode())
        proc.stdin.close()
    except OSError:
        pass  # it has died: reported below
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        proc.wait()
        tail = (session_dir / "forward.log").read_text(errors="replace").strip().splitlines()[-5:]
        from jupyter_cake.errors import CakeError

        raise CakeError("Could not start the port-forward to the session Pod:\n" + "\n".join(tail))
    _reaper(proc)
    return proc.pid


def start_forwarder(data: dict[str, Any], session_dir: Path, pairs: list[tuple[int, int]]) -> int:
    return finish_forwarder(spawn_forwarder(data, session_dir), session_dir, pairs)


def _reaper(proc: subprocess.Popen[bytes]) -> None:
    """Reap the forwarder when it exits, so it never lingers as a zombie of this process."""
    threading.Thread(target=proc.wait, daemon=True).start()


def stop_forwarder(session_dir: Path) -> None:
    pid = forwarder_pid(session_dir)
    if pid is None:
        return
    for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):  # KILL: a stopped or hung one
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and forwarder_pid(session_dir) is not None:
            time.sleep(0.02)
        if forwarder_pid(session_dir) is None:
            return


class KubernetesChannel(Channel):
    """Local ports served by the session's forwarder process; ``repair`` replaces a dead or hung one."""

    def __init__(self, connection: dict[str, Any], nanny_url: str, data: dict[str, Any], session_dir: Path,
                 pairs: list[tuple[int, int]], pod_alive: Any) -> None:  # fmt: skip
        super().__init__(connection, nanny_url)
        self.data = data
        self.session_dir = session_dir
        self.pairs = pairs
        self.pod_alive = pod_alive

    def establish(self, spawned: subprocess.Popen[bytes] | None = None) -> None:
        if forwarder_pid(self.session_dir) is not None:
            if spawned is not None:
                spawned.kill()
            return
        if spawned is not None and spawned.poll() is None:
            finish_forwarder(spawned, self.session_dir, self.pairs)
        else:
            start_forwarder(self.data, self.session_dir, self.pairs)

    def repair(self) -> bool:
        """After a failed liveness ping while the Pod still runs: the forwarder died, or its streams
        hang (a laptop that slept, a changed network: TCP to the API server never says it broke).
        A fresh forwarder on the same ports drops every old stream, so ZMQ reconnects through new ones."""
        if not self.pod_alive():
            return False  # a gone Pod can't be repaired: the session has ended
        stop_forwarder(self.session_dir)
        try:
            start_forwarder(self.data, self.session_dir, self.pairs)
        except Exception:  # noqa: BLE001 - e.g. the ports were taken meanwhile: the session is unreachable
            return False
        return True


if __name__ == "__main__":
    main()

"""Helpers for the IDE tests (and bench/ide.py): a jupyter_server subprocess and a websocket kernel
client that talks to it the way VS Code's remote-server mode does."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import stop_process

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WsKernel:
    """A kernel reached the way VS Code's remote-server mode reaches it: REST to start, one websocket
    (the JSON protocol), messages matched to requests by parent msg_id."""

    def __init__(self, base: str, token: str, kernel_name: str, kernel_id: str | None = None) -> None:
        import websocket  # websocket-client, a jupyter_server dependency; sets TCP_NODELAY on its side

        self.base, self.token = base, token
        self.kernel_id = kernel_id or self.rest("POST", "/api/kernels", {"name": kernel_name})["id"]
        self.session = uuid.uuid4().hex
        url = f"{base.replace('http', 'ws', 1)}/api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=60)
        self.wait_ready()

    def rest(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 120) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text else None

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "test",
                  "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}  # fmt: skip
        self.ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                 "channel": channel, "buffers": []}))  # fmt: skip
        return msg_id

    def recv(self) -> dict[str, Any]:
        return json.loads(self.ws.recv())  # type: ignore[no-any-return]

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("kernel_info_request", {})
            self.ws.settimeout(1.0)
            try:
                while True:
                    msg = self.recv()
                    if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "kernel_info_reply":
                        self.ws.settimeout(60)
                        return
            except Exception:  # noqa: BLE001 - websocket timeout: ask again
                continue
        raise TimeoutError("the kernel did not answer kernel_info through the server")

    def start(self, code: str) -> str:
        return self.send("execute_request", {"code": code, "silent": False, "store_history": True,
                                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})  # fmt: skip

    def collect(self, msg_id: str, timeout: float = 60) -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
        """(execute_reply content, [(arrival time, iopub message)]) once the reply and idle are in."""
        self.ws.settimeout(timeout)
        reply: dict[str, Any] | None = None
        outputs: list[tuple[float, dict[str, Any]]] = []
        idle = False
        while reply is None or not idle:
            msg = self.recv()
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            elif msg["msg_type"] == "status":
                idle = idle or msg["content"]["execution_state"] == "idle"
            else:
                outputs.append((time.monotonic(), msg))
        return reply, outputs

    def run(self, code: str, timeout: float = 60) -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
        return self.collect(self.start(code), timeout)

    def execute(self, code: str = "pass") -> float:
        """Seconds for one execute, reply and idle included (the latency benchmark)."""
        start = time.perf_counter()
        self.run(code)
        return time.perf_counter() - start

    def close(self, shutdown: bool = True) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        if shutdown:
            with contextlib.suppress(Exception):
                self.rest("DELETE", f"/api/kernels/{self.kernel_id}")


def stream_text(outputs: list[tuple[float, dict[str, Any]]], name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for _, m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == name)


@contextlib.contextmanager
def jupyter_server(env: dict[str, str], root: Path, extension: bool | None = None) -> Iterator[tuple[str, str, Path]]:
    """A real `jupyter server` on a free loopback port; yields (base URL, token, log file).
    ``extension`` None leaves Cake's extension as installed (enabled by its jupyter_server_config.d file)."""
    port, token = free_port(), uuid.uuid4().hex
    argv = [PYTHON, "-m", "jupyter_server", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root"]  # fmt: skip
    if extension is not None:
        argv.append(f"--ServerApp.jpserver_extensions=jupyter_cake.server={extension}")
    log_path = root / f"server-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter server did not start; see {log.name}") from None
                time.sleep(0.2)
        yield base, token, log_path
    finally:
        stop_process(proc, 15)
        log.close()


def cake(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `cake` CLI, as a user runs it."""
    return subprocess.run([PYTHON, "-m", "jupyter_cake.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def nanny_pids(data_dir: Path) -> set[int]:
    """Nanny processes of sessions under this Cake data dir."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[1:4] == ["-m", "jupyter_cake.nanny", "--session-dir"] and argv[4].startswith(str(data_dir)):
            pids.add(int(proc.name))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())

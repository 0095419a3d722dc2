"""A small, real LSP client: JSON-RPC 2.0 over a subprocess's stdio with Content-Length framing."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any


class LspClient:
    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log)  # fmt: skip
        self._inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        self._next_id = 0
        self._responses: dict[int, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.server_requests: list[dict[str, Any]] = []

    # -- wire ---------------------------------------------------------------------------------------
    def _read(self, stream: IO[bytes]) -> None:
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    self._inbox.put(None)
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None, "a message without Content-Length"
            self._inbox.put(json.loads(stream.read(length)))

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            self._responses[message["id"]] = message
        elif "id" in message:  # a request from the server, e.g. window/workDoneProgress/create
            self.server_requests.append(message)
            self._send({"id": message["id"], "result": None})
        else:
            self.notifications.append(message)

    # -- API ----------------------------------------------------------------------------------------
    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    def send_request(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        self._send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    def response(self, request_id: int, timeout: float = 60) -> Any:
        """Wait for the response to ``request_id`` (answering the server's own requests meanwhile)."""
        deadline = time.monotonic() + timeout
        while request_id not in self._responses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no response to request {request_id} within {timeout} s")
            try:
                message = self._inbox.get(timeout=remaining)
            except queue.Empty:
                continue
            if message is None:
                raise RuntimeError(f"the language server exited (code {self.proc.poll()})")
            self._dispatch(message)
        response = self._responses.pop(request_id)
        if "error" in response:
            raise RuntimeError(f"request {request_id} failed: {response['error']}")
        return response.get("result")

    def request(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        return self.response(self.send_request(method, params), timeout)

    def pump(self, seconds: float) -> None:
        """Take in notifications for a while (e.g. logMessage after a response)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = self._inbox.get(timeout=remaining)
            except queue.Empty:
                return
            if message is None:
                return
            self._dispatch(message)

    def close(self) -> None:
        try:
            self.request("shutdown", {}, timeout=10)
            self.notify("exit", {})
            self.proc.wait(10)
        except Exception:  # noqa: BLE001 - a dead server still gets killed below
            self.proc.kill()
            self.proc.wait()
        self._log.close()

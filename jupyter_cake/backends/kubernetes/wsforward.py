"""One port-forward stream to a Pod over the API server's websocket, pumped to a local socket.

The kubernetes client's own ``PortForward`` relays through a socketpair and appends every incoming frame
to a bytes buffer that it then slices (``data = data[sent:]``): quadratic when the Pod sends faster
than the local reader takes, so pulling 100 MB took minutes. Here one thread per connection moves
frames straight between the websocket and the local TCP socket, and the kernel's socket buffers
provide the back-pressure.

Protocol (v4.channel.k8s.io, one port per websocket): binary frames whose first byte is the channel,
0 = data and 1 = error for our port; the server's first frame on each channel carries the port number
(2 bytes, little endian) and no data.
"""

from __future__ import annotations

import select
import socket
from typing import Any

DATA, ERROR = 0, 1
CHUNK = 1024 * 1024


def open_stream(cluster: Any, namespace: str, pod: str, port: int) -> Any:
    """A connected websocket (websocket-client's WebSocket) forwarding to ``port`` in ``pod``.

    Built through the client's generated API method, so every kubeconfig auth (tokens, client
    certificates, exec plugins with refresh) works as for ordinary calls. Raises ApiException."""
    from kubernetes.client.rest import ApiException
    from kubernetes.stream import ws_client
    from kubernetes.stream.stream import _websocket_request

    def connect(configuration: Any, _method: str, url: str, **kwargs: Any) -> Any:
        query = kwargs.get("query_params") or []
        try:
            return ws_client.create_websocket(configuration, ws_client.get_websocket_url(url, query), kwargs.get("headers"))
        except Exception as exc:  # the upgrade was refused (403, 404...) or the server is unreachable
            raise ApiException(status=getattr(exc, "status_code", 0), reason=str(exc)) from None

    core = cluster.fresh_core()  # the client swaps its request method meanwhile: one client per stream
    return _websocket_request(connect, {"_preload_content": False},
                              core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))  # fmt: skip


class Stream:
    """Reads a port-forward websocket frame by frame: the data, minus headers; errors as text."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen = [False, False]
        self.error = ""

    def read(self) -> bytes | None:
        """The next data bytes (b"" for a frame without data), or None once the stream has ended."""
        from websocket import ABNF, WebSocketConnectionClosedException

        try:
            opcode, frame = self.ws.recv_data_frame(True)
        except (WebSocketConnectionClosedException, OSError):
            return None
        if opcode == ABNF.OPCODE_CLOSE:
            return None
        if opcode != ABNF.OPCODE_BINARY or not frame.data:
            return b""
        channel, payload = frame.data[0], frame.data[1:]
        if channel in (DATA, ERROR) and not self.seen[channel]:
            self.seen[channel] = True  # the port-number header
            payload = payload[2:]
            if not payload:
                return b""
        if channel == ERROR:
            self.error += payload.decode(errors="replace")
            return None
        return bytes(payload)

    def pending(self) -> bool:
        """SSL may hold decrypted frames that select() cannot see."""
        sock = self.ws.sock
        return bool(sock is not None and hasattr(sock, "pending") and sock.pending())

    def send(self, data: bytes) -> None:
        from websocket import ABNF

        self.ws.send(bytes((DATA,)) + data, opcode=ABNF.OPCODE_BINARY)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001 - already gone
            pass


def pump(conn: socket.socket, ws: Any) -> str:
    """Copy bytes both ways until either side closes; returns the API server's error text, if any."""
    stream = Stream(ws)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            readable, _, _ = select.select([conn, ws.sock], [], [])
            if conn in readable:
                data = conn.recv(CHUNK)
                if not data:
                    return stream.error
                stream.send(data)
            if ws.sock in readable:
                while True:
                    chunk = stream.read()
                    if chunk is None:
                        return stream.error
                    if chunk:
                        conn.sendall(chunk)
                    if not stream.pending():
                        break
    except OSError:
        return stream.error
    finally:
        stream.close()
        try:
            conn.close()
        except OSError:
            pass


def read_line(ws: Any, timeout: float) -> bytes:
    """Everything the Pod's port sends up to a newline (or the stream's end), for one-line reports."""
    ws.settimeout(timeout)
    stream = Stream(ws)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = stream.read()
            if chunk is None:
                break
            data += chunk
    finally:
        stream.close()
    return data

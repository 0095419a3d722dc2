"""The nanny: its journal holds every output of a run, including what a run prints the instant it starts,
and the session's sockets give nothing to a local user who lacks the session's keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

from jupyter_cake.nanny import curve
from jupyter_cake.nanny.journal import read_entries


def _start_nanny(session_dir: Path) -> tuple[subprocess.Popen[bytes], dict]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(60)
    port = listener.getsockname()[1]
    env = dict(os.environ, CAKE_RESPONSE_TOKEN="t")
    nanny = subprocess.Popen(
        [sys.executable, "-m", "jupyter_cake.nanny", "--session-dir", str(session_dir),
         "--response-address", f"127.0.0.1:{port}"],
        env=env,
    )
    with listener, listener.accept()[0] as conn, conn.makefile() as reader:
        return nanny, json.loads(reader.readline())


def test_first_output_after_the_nanny_reports_is_journaled(tmp_path: Path) -> None:
    # A client may run a cell the moment the nanny reports (here: without even waiting for
    # kernel_info); the journal must already be listening, or `%cake attach` after a notebook
    # restart would replay the run without its first lines.
    for attempt in range(5):
        session_dir = tmp_path / f"s{attempt}"
        nanny, info = _start_nanny(session_dir)
        client = BlockingKernelClient()
        client.load_connection_info(info["connection"])
        client.start_channels()
        try:
            msg_id = client.execute("print('first line', flush=True)")
            reply = client.get_shell_msg(timeout=30)
            assert reply["parent_header"]["msg_id"] == msg_id
            entries: list[dict] = []
            for _ in range(100):  # the nanny writes the journal a moment after the kernel publishes
                entries = read_entries(session_dir / "journal", msg_id)
                if any(e["msg_type"] == "stream" for e in entries):
                    break
                time.sleep(0.05)
            streams = [e["content"]["text"] for e in entries if e["msg_type"] == "stream"]
            assert streams == ["first line\n"], f"attempt {attempt}: journal has {entries}"
        finally:
            client.stop_channels()
            nanny.terminate()
            nanny.wait(30)


def _stranger(kind: int, port: int, server_key: bytes | None = None) -> zmq.Socket:
    """A local user's socket on one of the session's loopback ports: plain, or a Curve client of some
    server key other than the session's (it can't know that one: it lives in the user's 0600 files)."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, public, secret
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def test_a_local_user_without_the_session_keys_reads_no_output(tmp_path: Path) -> None:
    """Issue 19, fault 8: a plain ZeroMQ subscriber on the kernel's iopub port used to receive every
    cell's output. The session's sockets are CurveZMQ servers now: strangers get nothing, the user all."""
    nanny, info = _start_nanny(tmp_path / "s")
    conn = info["connection"]
    assert conn["curve_publickey"] and conn["curve_secretkey"] and info["plaintext"] is None
    wrong_key = zmq.curve_keypair()[0]
    listeners = [_stranger(zmq.SUB, conn["iopub_port"]), _stranger(zmq.SUB, conn["iopub_port"], wrong_key)]
    # Even with the message key (signed requests), the nanny answers nobody outside the Curve handshake.
    nanny_probe = _stranger(zmq.DEALER, info["nanny_port"])
    signer = Session(key=conn["key"].encode(), signature_scheme=conn["signature_scheme"])
    client = BlockingKernelClient()
    client.load_connection_info(conn)
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        try:  # a refused handshake leaves the DEALER without a peer between its retries: don't block then
            nanny_probe.send_multipart(signer.serialize(signer.msg("cake_request", {"op": "ping"})), zmq.NOBLOCK)
        except zmq.Again:
            pass
        time.sleep(0.5)  # the strangers' subscriptions (had they any way in) are through by now
        client.execute("for i in range(20): print('private output', i, flush=True)")
        seen = ""
        deadline = time.monotonic() + 30
        while "private output 19" not in seen and time.monotonic() < deadline:
            msg = client.get_iopub_msg(timeout=30)
            seen += msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        assert "private output 19" in seen  # the user's own client, with the keys, gets it all
        for sock in [*listeners, nanny_probe]:
            assert sock.poll(1000) == 0, f"a socket without the session's Curve key got {sock.recv_multipart()}"
    finally:
        for sock in [*listeners, nanny_probe]:
            sock.close()
        client.stop_channels()
        nanny.terminate()
        nanny.wait(30)


def test_a_kernel_that_cannot_encrypt_is_named_with_the_fix(tmp_path: Path) -> None:
    """An older ipykernel on the target (no CurveZMQ before 7.3): the session runs unencrypted, and the
    reason, which the start shows as a warning, says which version and how to fix it."""
    python = tmp_path / "python"  # stands in for a cluster's interpreter with ipykernel 6.29.5
    python.write_text("#!/bin/sh\necho 6.29.5\n")
    python.chmod(0o755)
    reason = curve.plaintext_reason(str(python))
    assert reason is not None and "ipykernel 6.29.5" in reason and "pip install -U ipykernel" in reason
    assert curve.plaintext_reason(sys.executable) is None  # this environment's ipykernel can

"""The nanny's journal holds every output of a run, including what a run prints the instant it starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from jupyter_client import BlockingKernelClient

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

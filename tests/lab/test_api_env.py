"""The panel's API never shows an `--env` value: a session started through it with a secret (a real
`jupyter lab` server, a real local session), then every read of it searched for the value."""

from __future__ import annotations

import json
import secrets

from lab_util import Lab
from jupyter_cake.store import Store


def test_sessions_started_with_a_secret_never_show_it(lab: Lab) -> None:
    import websocket  # websocket-client, a jupyter_server dependency

    secret = "s3cr3t-" + secrets.token_hex(12)
    status, body = lab.call("POST", "cake/api/sessions", {"target": f"local --env CAKE_TEST_SECRET={secret}", "owner": "env.ipynb"})
    assert status == 201, body
    session_id = body["session"]["id"]
    try:
        assert "CAKE_TEST_SECRET=***" in body["session"]["name"] and "CAKE_TEST_SECRET=***" in body["session"]["target"]
        reads = [body]
        for path in ("cake/api/sessions", f"cake/api/sessions/{session_id}", "cake/api/runs", "cake/api/targets"):
            status, answer = lab.call("GET", path)
            assert status == 200, answer
            reads.append(answer)
        ws = websocket.create_connection(lab.url("cake/api/ws").replace("http", "ws", 1),
                                         header=[f"Authorization: token {lab.token}"], timeout=30)  # fmt: skip
        try:
            reads.append(json.loads(ws.recv()))  # the snapshot the panel draws first
        finally:
            ws.close()
        assert session_id in json.dumps(reads[1])
        for answer in reads:
            assert secret not in json.dumps(answer)
        # The server's own log (requests, errors) neither: the value came in a POST body, never a URL.
        assert secret not in lab.log.read_text(errors="replace")
        row = Store().session(session_id)
        assert row is not None and secret not in row.name + row.target + row.target_json
    finally:
        lab.call("POST", f"cake/api/sessions/{session_id}/stop")

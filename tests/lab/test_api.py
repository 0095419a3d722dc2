"""The side panel's REST + websocket API against a real `jupyter lab` server: auth on every route,
actions that really start, interrupt and stop sessions, live state and output over the websocket."""

from __future__ import annotations

import http.cookiejar
import json
import queue
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from lab_util import Lab

from jupyter_cake.manager import Cake
from jupyter_cake.store import Store

ROUTES = [
    ("GET", "cake/api/health"), ("GET", "cake/api/targets"), ("GET", "cake/api/sessions"),
    ("POST", "cake/api/sessions"), ("GET", "cake/api/sessions/s-00000000"), ("DELETE", "cake/api/sessions/s-00000000"),
    ("POST", "cake/api/sessions/s-00000000/stop"), ("GET", "cake/api/runs"), ("GET", "cake/api/runs/r-00000000"),
    ("GET", "cake/api/runs/r-00000000/output"), ("POST", "cake/api/runs/r-00000000/interrupt"),
    ("POST", "cake/api/runs/r-00000000/cancel"), ("GET", "cake/api/ws"),
]  # fmt: skip


class Socket:
    """The panel's websocket, read from a test."""

    def __init__(self, lab: Lab) -> None:
        import websocket  # websocket-client, a jupyter_server dependency

        url = lab.url("cake/api/ws").replace("http", "ws", 1)
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {lab.token}"], timeout=30)
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def wait(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        """The first message (already received or new) that satisfies ``predicate``."""
        import websocket

        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching message in {timeout} s; got {self.messages[-5:]}")
            self.ws.settimeout(remaining)
            try:
                self.messages.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                continue

    def output(self, run_id: str) -> str:
        text = ""
        for m in self.messages:
            if m["type"] == "output" and m["run"] == run_id:
                text = m["text"] if m["replace"] else text + m["text"]
        return text

    def close(self) -> None:
        self.ws.close()


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_every_route_answers_403_without_a_token(lab: Lab) -> None:
    for method, path in ROUTES:
        status, _ = lab.call(method, path, token=False)
        assert status == 403, f"{method} {path} answered {status} without a token"
    status, body = lab.call("GET", "cake/api/health")
    assert status == 200 and body["ok"] is True


def test_browser_posts_need_the_xsrf_token(lab: Lab) -> None:
    """A cookie-authenticated browser must send X-XSRFToken with POSTs (jupyter_server's XSRF check)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(lab.url(f"lab?token={lab.token}"), timeout=30).read()  # logs in: sets the login + _xsrf cookies
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    assert json.loads(opener.open(lab.url("cake/api/sessions"), timeout=30).read())["sessions"] is not None

    def post(headers: dict[str, str]) -> int:
        request = urllib.request.Request(lab.url("cake/api/sessions"), data=b"{}", method="POST", headers=headers)
        try:
            return opener.open(request, timeout=30).status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({}) == 403  # cookie alone: refused
    assert post({"X-XSRFToken": xsrf}) == 400  # accepted by the XSRF check; 400: no target given


def test_targets_list_local_and_flag_broken_named_targets(lab: Lab, cake_data_dir: Path) -> None:
    config = Path(str(cake_data_dir / "targets.toml"))
    config.write_text('[targets.box]\ninfra = "local"\ncpus = 2\n\n[targets.broken]\ninfra = "nowhere/x"\n')
    try:
        status, body = lab.call("GET", "cake/api/targets")
    finally:
        config.unlink()
    assert status == 200, body
    by_name = {t["name"]: t for t in body["targets"]}
    assert by_name["local"]["ok"] and by_name["box"]["ok"] and "2 CPU" in by_name["box"]["resources"]
    assert not by_name["broken"]["ok"] and by_name["broken"]["note"]
    assert "local" in body["backends"]


def test_start_run_interrupt_and_stop_a_session_through_the_api(lab: Lab) -> None:
    socket = Socket(lab)
    try:
        snapshot = socket.wait(lambda m: m["type"] == "snapshot")
        assert {"sessions", "runs"} <= set(snapshot)

        # Start: a real session (nanny + kernel) on the local target, owned by a notebook path.
        status, body = lab.call("POST", "cake/api/sessions", {"target": "local", "name": "api-test", "owner": "nb.ipynb"})
        assert status == 201, body
        session = body["session"]
        assert session["state"] == "running" and session["where"].startswith("pid ")
        pid = int(session["where"].split()[1])
        assert _pid_alive(pid)
        row = Store().session(session["id"])
        # The owner is what the notebook's kernel sees as JPY_SESSION_NAME, so its `%cake use` re-attaches.
        assert row is not None and row.state == "running" and row.owner == str(lab.root / "nb.ipynb")
        socket.wait(lambda m: m["type"] == "session" and m["session"]["id"] == session["id"])
        # The same target and name again: re-used, not a second session.
        status, again = lab.call("POST", "cake/api/sessions", {"target": "local", "name": "api-test", "owner": "nb.ipynb"})
        assert status == 200 and again["session"]["id"] == session["id"]

        # A run in it (as a notebook's %%cake would send it), followed live over the websocket.
        cake = Cake()
        handle = cake.connect(row)
        assert handle is not None
        outputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        code = "import time\nfor i in range(100):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
        run_id, future = handle.start_run(code, outputs.put, source="nb.ipynb#cell-1")
        run = socket.wait(lambda m: m["type"] == "run" and m["run"]["id"] == run_id)["run"]
        assert run["state"] == "running" and run["notebook"] == "nb.ipynb" and run["cell"] == "cell-1"
        socket.send({"type": "subscribe", "run": run_id})
        socket.wait(lambda m: m["type"] == "output" and m["run"] == run_id and "tick 2" in socket.output(run_id))
        assert socket.output(run_id).startswith("tick 0\ntick 1\n")

        status, listed = lab.call("GET", f"cake/api/runs?session={session['id']}&state=running")
        assert status == 200 and [r["id"] for r in listed["runs"]] == [run_id], (listed, lab.call("GET", "cake/api/runs"))
        assert lab.call("GET", "cake/api/runs?state=bogus")[0] == 400
        assert lab.call("GET", "cake/api/runs/r-nope")[0] == 404

        # Interrupt from the API: the remote cell stops, the session survives.
        status, body = lab.call("POST", f"cake/api/runs/{run_id}/interrupt")
        assert status == 200 and body["interrupted"], body
        outcome = future.result(timeout=20)
        handle.finish_run(outcome)  # what the magic does when its cell ends
        assert outcome.error and outcome.error["ename"] == "KeyboardInterrupt"
        socket.wait(lambda m: m["type"] == "run" and m["run"]["id"] == run_id and m["run"]["state"] == "aborted")
        status, out = lab.call("GET", f"cake/api/runs/{run_id}/output")
        assert status == 200 and "tick 1" in out["text"] and "KeyboardInterrupt" in out["text"]
        assert lab.call("POST", f"cake/api/runs/{run_id}/interrupt")[0] == 400  # not running any more
        handle.close()

        # The idle clock and autostop come from the nanny's ping.
        status, body = lab.call("GET", f"cake/api/sessions/{session['id']}")
        assert status == 200 and body["session"]["ping"]["state"] == "idle"
        assert body["session"]["ping"]["idle_minutes"] == 120

        # Stop: the nanny and its kernel are gone, the store says so, the websocket tells the panel.
        status, body = lab.call("POST", f"cake/api/sessions/{session['id']}/stop")
        assert status == 200 and body["session"]["state"] == "stopped", body
        assert Store().session(session["id"]).state == "stopped"  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(pid)
        socket.wait(lambda m: m["type"] == "session" and m["session"]["id"] == session["id"]
                    and m["session"]["state"] == "stopped")  # fmt: skip
    finally:
        socket.close()
        for live in Store().sessions(live_only=True):  # nothing left running for the next tests
            if live.name == "api-test":
                lab.call("POST", f"cake/api/sessions/{live.id}/stop")


def test_websocket_refuses_unauthenticated_clients(lab: Lab) -> None:
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(lab.url("cake/api/ws").replace("http", "ws", 1), timeout=10)
    assert info.value.status_code == 403


def test_loading_the_extension_and_its_api_imports_no_sky_kubernetes_or_ray(lab: Lab) -> None:
    code = (
        "import sys, socket\n"
        "from jupyter_server.serverapp import ServerApp\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "app = ServerApp()\n"
        "app.initialize(argv=['--allow-root', '--no-browser', f'--port={port}', '--ip=127.0.0.1'])\n"
        "import jupyter_cake.server.handlers, jupyter_cake.server.monitor, jupyter_cake.server.api\n"
        "from jupyter_cake.server import api\n"
        "api.targets()\n"
        "def patterns(router):\n"
        "    for rule in getattr(router, 'rules', []):\n"
        "        regex = getattr(rule.matcher, 'regex', None)\n"
        "        yield regex.pattern if regex else ''\n"
        "        yield from patterns(rule.target)\n"
        "assert any('/cake/api/ws' in p for p in patterns(app.web_app.default_router))\n"
        "print(sorted(m for m in ('sky', 'kubernetes', 'ray') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, env=lab.env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

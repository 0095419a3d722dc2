"""The side panel's API asks jupyter_server's Authorizer (read-only roles, JupyterHub granular scopes) before
every action, on the resource "cake": real `jupyter lab` servers with the custom authorizers of cake_authz.py
(as an admin would configure one), real sessions on the local target. The default authorizer (everything
allowed to the authenticated user) is test_api.py's server."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import nanny_pids
from lab_util import Lab, lab_server
from test_api import ROUTES, Socket

from jupyter_cake.manager import Cake
from jupyter_cake.server import api
from jupyter_cake.store import Store
from jupyter_cake.targets import resolve_target

HERE = Path(__file__).resolve().parent

# The action each route needs (README, "JupyterLab side panel"): what an admin grants per role.
ACTION = {
    ("GET", "cake/api/health"): "read", ("GET", "cake/api/targets"): "read", ("GET", "cake/api/sessions"): "read",
    ("POST", "cake/api/sessions"): "execute", ("GET", "cake/api/sessions/s-00000000"): "read",
    ("DELETE", "cake/api/sessions/s-00000000"): "write", ("POST", "cake/api/sessions/s-00000000/stop"): "write",
    ("GET", "cake/api/runs"): "read", ("GET", "cake/api/runs/r-00000000"): "read",
    ("GET", "cake/api/runs/r-00000000/output"): "read", ("POST", "cake/api/runs/r-00000000/interrupt"): "execute",
    ("POST", "cake/api/runs/r-00000000/cancel"): "execute", ("GET", "cake/api/ws"): "read",
}  # fmt: skip


@dataclass
class AuthzLab:
    """A server with one of cake_authz's authorizers, and the file where that authorizer records its asks."""

    lab: Lab
    asks_file: Path

    def asks(self) -> list[dict[str, Any]]:
        """The Cake asks since the last call (other resources, e.g. the startup probe's "api", left out)."""
        lines = self.asks_file.read_text().splitlines() if self.asks_file.exists() else []
        self.asks_file.write_text("")
        return [ask for ask in map(json.loads, lines) if ask["resource"] == "cake"]


def authz_lab(tmp: Path, authorizer: str) -> Iterator[AuthzLab]:
    asks = tmp / "asks.jsonl"
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    args = [f"--ServerApp.authorizer_class=cake_authz.{authorizer}"]
    with lab_server(tmp, args=args, extra_env={"PYTHONPATH": path, "CAKE_TEST_AUTHZ_LOG": str(asks)}) as lab:
        yield AuthzLab(lab, asks)


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory, cake_data_dir: Path) -> Iterator[AuthzLab]:
    yield from authz_lab(tmp_path_factory.mktemp("lab-refused"), "RefuseCake")


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory, cake_data_dir: Path) -> Iterator[AuthzLab]:
    yield from authz_lab(tmp_path_factory.mktemp("lab-read-only"), "ReadOnlyCake")


def test_every_route_asks_its_action_and_a_refusal_is_a_json_403(refused: AuthzLab) -> None:
    assert set(ACTION) == set(ROUTES), "a new route needs its action here (and in the README)"
    refused.asks()
    for (method, path), action in ACTION.items():
        status, body = refused.lab.call(method, path)
        assert status == 403, f"{method} {path} answered {status}: {body}"
        assert [ask["action"] for ask in refused.asks()] == [action], f"{method} {path}"
        if path != "cake/api/ws":  # a websocket's refusal is the HTTP answer to its upgrade (next test)
            assert body["message"] == f"User is not authorized to {action} on resource: cake.", body
    # Not the whole server: only Cake is refused.
    assert refused.lab.call("GET", "api/status")[0] == 200


def test_a_refused_websocket_is_not_upgraded(refused: AuthzLab) -> None:
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        Socket(refused.lab)
    assert info.value.status_code == 403
    assert [ask["action"] for ask in refused.asks()] == ["read"]


def test_a_refused_start_starts_nothing_and_logs_no_secret(refused: AuthzLab, cake_data_dir: Path) -> None:
    secret = uuid.uuid4().hex
    spec = f"local --env CAKE_AUTHZ_SECRET={secret}"
    resolve_target(shlex.split(spec))  # a valid target: allowed, this request would start a session
    nannies, sessions = nanny_pids(cake_data_dir), {row.id for row in Store().sessions()}
    status, body = refused.lab.call("POST", "cake/api/sessions", {"target": spec, "name": "authz-refused"})
    assert status == 403, body
    assert {row.id for row in Store().sessions()} == sessions
    assert nanny_pids(cake_data_dir) == nannies
    assert secret not in refused.lab.log.read_text()


def test_read_only_sees_and_follows_but_starts_interrupts_and_stops_nothing(
    read_only: AuthzLab, cake_data_dir: Path
) -> None:
    lab = read_only.lab
    # A real session with a running run, started as a notebook's %cake would (not through this server).
    session = api.start_session("local", "authz-read-only", "")["session"]["id"]
    handle = Cake().connect(Store().session(session))  # type: ignore[arg-type]
    try:
        assert handle is not None
        with contextlib.closing(Socket(lab)) as socket:  # read: the websocket connects, pushes the state...
            assert session in {s["id"] for s in socket.wait(lambda m: m["type"] == "snapshot")["sessions"]}
            outputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
            code = "import time\nfor i in range(150):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"
            run_id, future = handle.start_run(code, outputs.put, source="nb.ipynb#cell-1")
            socket.wait(lambda m: m["type"] == "run" and m["run"]["id"] == run_id and m["run"]["state"] == "running")
            socket.send({"type": "subscribe", "run": run_id})  # ... and follows the run's output; the GETs answer
            socket.wait(lambda m: m["type"] == "output" and "tick 1" in socket.output(run_id))
            for path in ("health", "targets", "sessions", f"sessions/{session}", "runs", f"runs/{run_id}",
                         f"runs/{run_id}/output"):  # fmt: skip
                status, body = lab.call("GET", f"cake/api/{path}")
                assert status == 200, (path, body)

            # No execute, no write: refused, and nothing happened.
            nannies = nanny_pids(cake_data_dir)
            assert lab.call("POST", "cake/api/sessions", {"target": "local", "name": "authz-read-only-2"})[0] == 403
            assert lab.call("POST", f"cake/api/runs/{run_id}/interrupt")[0] == 403
            assert lab.call("POST", f"cake/api/runs/{run_id}/cancel")[0] == 403
            assert lab.call("POST", f"cake/api/sessions/{session}/stop")[0] == 403
            assert lab.call("DELETE", f"cake/api/sessions/{session}")[0] == 403
            printed = socket.output(run_id).count("tick")
            socket.wait(lambda m: m["type"] == "output" and socket.output(run_id).count("tick") > printed + 3)
        assert not future.done() and Store().run(run_id).state == "running"  # type: ignore[union-attr]
        assert Store().session(session).state == "running"  # type: ignore[union-attr]
        assert nanny_pids(cake_data_dir) == nannies
        assert "authz-read-only-2" not in {s.name for s in Store().sessions()}

        api.interrupt_run(run_id)  # in-process (the user's own rights): the run ends as an interrupt ends it
        handle.finish_run(future.result(timeout=30))
    finally:
        if handle is not None:
            handle.close()
        api.stop_session(session)

"""Idle release counts Ray activity: a session whose Ray cluster still runs tasks is not idle, and
when it does release itself, its Ray cluster goes with it. (Its own short-idle session: the shared
sessions of the other modules must not time out between tests on a loaded machine.)"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import scenarios
from helpers import Notebook, open_notebook, text

from jupyter_cake.store import Store

NAME = "ray-idle"
IDLE_MINUTES = 0.1  # 6 s; Ray activity is polled every 1.5 s then (a quarter of the limit)
TASK_S = 14


def test_idle_release_waits_for_ray_tasks_then_stops_ray() -> None:
    """Tasks submitted and left running (the cell returned at once) keep the session alive past its
    idle limit; once they finish, the session releases itself and its Ray cluster stops with it."""
    nb = open_notebook()
    try:
        cell = nb.run(f"%cake use local --ray --name {NAME} --idle-minutes {IDLE_MINUTES}", timeout=300)
        assert "Ray" in scenarios.shown(cell)
        _watch_idle_release(nb)
    finally:
        nb.close()


def _watch_idle_release(nb: Notebook) -> None:
    address = scenarios.ray_address_is_set(nb, loopback=True)
    gcs_port = int(address.rsplit(":", 1)[1])
    session_dir = _session_dir()
    nb.run("%%cake\n"
           "import ray, time\n"
           "ray.init()\n"
           "@ray.remote\n"
           "def work(s):\n"
           "    time.sleep(s)\n"
           "    return s\n"
           f"pending = [work.remote({TASK_S}) for _ in range(2)]")  # fmt: skip
    started = time.monotonic()
    time.sleep(IDLE_MINUTES * 60 + 3)  # longer than the idle limit: only Ray's tasks are running
    assert Store().live_session(NAME, "") is not None
    ping = text(nb.run("%cake status"))
    assert NAME in ping and "running" in ping, ping
    deadline = started + TASK_S + IDLE_MINUTES * 60 + 30
    state_file = session_dir / "state.json"
    while '"stopped"' not in state_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    state = state_file.read_text()  # written once the kernel and Ray have stopped
    assert "idle for" in state, state
    assert time.monotonic() - started > TASK_S  # not before the tasks were done
    assert not scenarios.listening(gcs_port, "127.0.0.1"), "Ray still runs after the session's idle release"
    assert not socket_dir_left(session_dir)


def socket_dir_left(session_dir: Path) -> bool:
    """The head's temp dir (sockets, spilled objects) goes with it."""
    return (Path(tempfile.gettempdir()) / f"cake-ray-{session_dir.name}").exists()


def _session_dir() -> Path:
    row = Store().live_session(NAME, "")
    assert row is not None, "the Ray session is not running"
    return Path(row.session_dir)

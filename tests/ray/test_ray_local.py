"""Ray on the `local` target: the same notebook code that runs against a laptop's Ray, end to end.

One Ray session for the module (`%cake use local --ray`), shared by the tests in file order as a
user's notebook would; the last test lets it stop by itself (idle release counts Ray activity).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import scenarios
from helpers import Notebook, open_notebook, text

from jupyter_cake.ray import ports
from jupyter_cake.store import Store

NAME = "ray-local"
IDLE_MINUTES = 0.25  # 15 s: the last test watches the session outlive this while Ray works
TARGET = ["--target", "local", "--name", NAME]


@pytest.fixture(scope="module")
def nb() -> Iterator[Notebook]:
    notebook = open_notebook()
    cell = notebook.run(f"%cake use local --ray --name {NAME} --idle-minutes {IDLE_MINUTES}", timeout=300)
    assert re.search(r"Ray 2\.\d+\.\d+ is up at 127\.0\.0\.1:\d+", scenarios.shown(cell)), scenarios.shown(cell)
    yield notebook
    with contextlib.suppress(Exception):
        notebook.run("%cake down")
    notebook.close()


def _session_dir() -> Path:
    row = Store().live_session(NAME, "")
    assert row is not None, "the module's Ray session is not running"
    return Path(row.session_dir)


def test_cell_tasks_stream_worker_prints_into_the_cell(nb: Notebook) -> None:
    scenarios.tasks_stream_worker_output(nb)


def test_actor_keeps_state_across_cells(nb: Notebook) -> None:
    scenarios.actor_keeps_state(nb)


def test_ray_listens_on_loopback_only_with_token_auth(nb: Notebook) -> None:
    address = scenarios.ray_address_is_set(nb, loopback=True)
    port = int(address.rsplit(":", 1)[1])
    assert scenarios.listening(port, "127.0.0.1")
    try:
        outside = ports.route_address("192.0.2.1")  # this machine's address on its network, if any
    except OSError:
        outside = None
    if outside and not outside.startswith("127."):
        assert not scenarios.listening(port, outside), f"Ray's GCS answers on {outside}:{port}"


def test_ray_command_and_dashboard_through_the_channel(nb: Notebook) -> None:
    scenarios.dashboard_answers(nb, _session_dir() / "ray" / "auth_token")


def test_cake_run_ray_exit_codes(nb: Notebook, tmp_path: Path) -> None:
    scenarios.cake_run_exit_codes(tmp_path, TARGET)


def test_cake_run_ray_ctrl_c_stops_the_job(nb: Notebook, tmp_path: Path) -> None:
    url = scenarios.dashboard_answers(nb, _session_dir() / "ray" / "auth_token")
    token = (_session_dir() / "ray" / "auth_token").read_text().strip()
    scenarios.cake_run_ctrl_c_stops_the_job(tmp_path, TARGET, url, token)


def test_idle_release_waits_for_ray_tasks_then_stops_ray(nb: Notebook) -> None:
    """Tasks submitted and left running (the cell returned at once) keep the session alive past its
    idle limit; once they finish, the session releases itself and its Ray cluster stops with it."""
    address = scenarios.ray_address_is_set(nb, loopback=True)
    gcs_port = int(address.rsplit(":", 1)[1])
    session_dir = _session_dir()
    nb.run("%%cake\n"
           "import time\n"
           "@ray.remote\n"
           "def work(s):\n"
           "    time.sleep(s)\n"
           "    return s\n"
           "pending = [work.remote(20) for _ in range(2)]")  # fmt: skip
    started = time.monotonic()
    time.sleep(IDLE_MINUTES * 60 + 3)  # longer than the idle limit: only Ray's tasks are running
    assert Store().live_session(NAME, "") is not None
    ping = text(nb.run("%cake status"))
    assert NAME in ping and "running" in ping, ping
    deadline = started + 20 + IDLE_MINUTES * 60 + 30
    while scenarios.listening(gcs_port, "127.0.0.1") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not scenarios.listening(gcs_port, "127.0.0.1"), "Ray still runs after the session's idle release"
    state = (session_dir / "state.json").read_text()
    assert "idle for" in state, state
    assert not socket_dir_left(session_dir)


def socket_dir_left(session_dir: Path) -> bool:
    """The head's temp dir (sockets, spilled objects) goes with it."""
    import tempfile

    return (Path(tempfile.gettempdir()) / f"cake-ray-{session_dir.name}").exists()


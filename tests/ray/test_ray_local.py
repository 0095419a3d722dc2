"""Ray on the `local` target: the same notebook code that runs against a laptop's Ray, end to end.

One Ray session for the module (`%cake use local --ray`), shared by the tests in file order as a
user's notebook would. (Idle release with Ray activity: test_ray_idle.py.)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import scenarios
from helpers import Notebook, open_notebook

from jupyter_cake.ray import ports
from jupyter_cake.store import Store

NAME = "ray-local"
TARGET = ["--target", "local", "--name", NAME]


@pytest.fixture(scope="module")
def nb() -> Iterator[Notebook]:
    notebook = open_notebook()
    cell = notebook.run(f"%cake use local --ray --name {NAME}", timeout=300)
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
    url, token = scenarios.dashboard_answers(nb, _session_dir() / "ray" / "auth_token")
    scenarios.cake_run_ctrl_c_stops_the_job(tmp_path, TARGET, url, token)

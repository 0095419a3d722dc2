"""What goes wrong with SkyPilot, for real, and what the user reads: an unreachable or hanging API server,
no enabled infra, resources the infra doesn't have, a launch whose setup fails (and leaves nothing
behind), and planning with SkyPilot's optimizer and a seeded price catalog."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sky_infra import NODE_PYTHON, TARGET, sky_clusters, sky_jobs_in_slurm

from helpers import environment, open_notebook, text
from jupyter_cake.store import Store

pytestmark = pytest.mark.usefixtures("sky_env")


def _cake_clusters() -> list[str]:
    return [name for name in sky_clusters() if name.startswith("cake-")]


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers: a network that drops the replies."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_unreachable_api_server_is_named_with_the_fix(blackhole: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: connection refused
    with environment(SKYPILOT_API_SERVER_ENDPOINT=refused):
        nb = open_notebook()
    try:
        started = time.monotonic()
        error = nb.fails(f"%cake use {TARGET} --name sky-refused")
        assert time.monotonic() - started < 30
        assert "SkyPilot's API server is unreachable" in error and refused in error, error
        assert "sky api start" in error
        row = Store().find_session("sky-refused")[0]
        assert row.state == "failed"
    finally:
        nb.close()
        closed.close()

    # A server that swallows requests: Cake's deadline (--timeout) cancels the call instead of hanging.
    with environment(SKYPILOT_API_SERVER_ENDPOINT=blackhole):
        nb = open_notebook()
    try:
        started = time.monotonic()
        error = nb.fails(f"%cake use {TARGET} --name sky-hang --timeout 4")
        took = time.monotonic() - started
        assert "did not finish within 4 s, so Cake cancelled it" in error, error
        assert took < 4 + 15, took  # the deadline plus the bridge's cancellation grace at most
    finally:
        nb.close()


def test_infra_without_credentials_says_to_run_sky_check() -> None:
    nb = open_notebook()
    try:
        error = nb.fails("%cake use gcp --gpus A100:1 --name sky-gcp")
        assert "SkyPilot has no enabled infra for 'gcp'" in error and "sky check gcp" in error, error
    finally:
        nb.close()


def test_resources_the_infra_lacks_get_skypilots_reason_and_no_cluster() -> None:
    nb = open_notebook()
    try:
        error = nb.fails(f"%cake use {TARGET} --gpus A100:1 --name sky-a100")
        assert "SkyPilot found no way to get these resources on 'slurm/cakecluster/debug'" in error, error
        assert "SkyPilot said:" in error and "A100" in error
    finally:
        nb.close()
    assert _cake_clusters() == []


def test_a_failed_launch_shows_skypilots_log_and_leaves_no_cluster(tmp_path: Path) -> None:
    task = tmp_path / "broken.yaml"
    task.write_text(
        "resources:\n  infra: slurm/cakecluster/debug\n  cpus: 1\n  memory: 2\n"
        "setup: |\n  echo cake-test-broken-setup >&2\n  exit 7\n"
    )
    nb = open_notebook()
    try:
        error = nb.fails(f"%cake use --task {task} --option python={NODE_PYTHON} --name sky-broken", timeout=400)
        assert "its setup failed before the kernel started" in error, error
        assert "cake-test-broken-setup" in error  # SkyPilot's own log of the setup
    finally:
        nb.close()
    assert _cake_clusters() == []
    deadline = time.time() + 20
    while sky_jobs_in_slurm() and time.time() < deadline:
        time.sleep(0.5)
    assert sky_jobs_in_slurm() == []


def test_plan_and_dryrun_show_the_optimizers_choice_and_price() -> None:
    nb = open_notebook()
    try:
        out = text(nb.run("%cake plan hyperbolic --gpus H100:1"))
        assert "1x-H100-28-271" in out and "$1.49/hour" in out, out
        out = text(nb.run("%cake use hyperbolic --gpus H100:2 --dryrun"))
        assert "2x-H100-56-542" in out and "$2.98/hour" in out, out
        out = text(nb.run(f"%cake plan {TARGET} --gpus T4:1"))
        assert "Slurm (cakecluster)" in out and "$0.00/hour" in out, out
    finally:
        nb.close()
    assert _cake_clusters() == []

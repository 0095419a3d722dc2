"""Nothing of Ray outlives a `local` session: the head runs in a process group of its own, which the
nanny's group does not include, so releasing the session must stop it even after the nanny died."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from helpers import cake_cli, open_notebook
from scenarios import ray_heads

from jupyter_cake.store import Store


def test_release_stops_the_ray_head_after_the_nanny_was_killed(cake_data_dir: Path) -> None:
    with open_notebook() as nb:
        before = ray_heads(cake_data_dir)
        nb.run("%cake use local --ray --name ray-release --new", timeout=300)
        row = Store().live_session("ray-release", "")
        assert row is not None
        heads = ray_heads(cake_data_dir) - before
        assert len(heads) == 1, heads
        os.kill(int(row.allocation_data["pid"]), signal.SIGKILL)  # the nanny dies without stopping Ray
        time.sleep(1)
        assert ray_heads(cake_data_dir) & heads, "the head should still run: nobody has released it yet"
        down = cake_cli("down", "ray-release")
        assert down.returncode == 0, down.stderr
        deadline = time.monotonic() + 10
        while ray_heads(cake_data_dir) & heads and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not ray_heads(cake_data_dir) & heads, "the Ray head outlived its released session"

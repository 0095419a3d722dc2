"""Channel outages under a running cell, on the real Kubernetes cluster.

The fault is real: the session's port-forward process (which carries every connection of the session to
the Pod) is killed with SIGKILL, and again each time it comes back while the outage lasts, so every
reconnect attempt fails as it does while the API server can't be reached. Nothing of Cake is mocked.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Notebook, background, open_notebook, text
from k8s_cluster import Cluster

from jupyter_cake.backends.kubernetes.forward import forwarder_pid
from jupyter_cake.store import Store

pytestmark = pytest.mark.timeout(240)

TWELVE_LINES = "%%cake\nimport time\nfor i in range(12):\n    print(f'line {i}', flush=True)\n    time.sleep(0.25)"
EXPECTED = "".join(f"line {i}\n" for i in range(12))


@functools.cache
def _store() -> Store:
    return Store()  # one per module: see tests/slurm/test_slurm_outage.py


@contextlib.contextmanager
def forwarder_down(session_dir: Path, after: float, lasting: float) -> Iterator[None]:
    """While the body runs: ``after`` s from now, kill the session's forwarder and keep killing it as it
    comes back for ``lasting`` s; then let it be."""

    def outage() -> None:
        time.sleep(after)
        end = time.monotonic() + lasting
        while time.monotonic() < end:
            pid = forwarder_pid(session_dir)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.02)

    with background(outage):
        yield


def _session(name: str) -> tuple[str, Path, str]:
    row = _store().live_session(name, "")
    assert row is not None, f"no live session {name}"
    return row.id, Path(row.session_dir), str(row.allocation_data["pod"])


def _started(nb: Notebook, k8s: Cluster, name: str) -> tuple[str, Path, str]:
    """A new session ``name`` in a Pod, warm (one cell run): its id, session directory and Pod."""
    nb.run(f"%cake use {k8s.target} --cpus 0.5 --memory 1 --name {name} --new")
    started = _session(name)
    nb.run("%%cake\nkept = 41")
    return started


def test_a_short_drop_mid_cell_loses_no_output(k8s: Cluster) -> None:
    with open_notebook() as nb:
        _, session_dir, _ = _started(nb, k8s, "k8s-outage-a")
        with forwarder_down(session_dir, 1.0, 1.5):
            cell = nb.run(TWELVE_LINES, timeout=60)
        assert text(cell) == EXPECTED  # every line exactly once, in order
        nb.run("%cake down")


def test_an_eight_second_outage_mid_cell_keeps_the_session(k8s: Cluster) -> None:
    with open_notebook() as nb:
        session_id, session_dir, pod = _started(nb, k8s, "k8s-outage-b")
        with forwarder_down(session_dir, 1.0, 8.0):
            cell = nb.run(TWELVE_LINES, timeout=90)
        assert text(cell) == EXPECTED
        assert any("unreachable: reconnecting" in str(m["content"]) for _, m in nb.client.received)
        assert pod in k8s.pods()
        assert text(nb.run("%%cake\nprint(kept + 1)")) == "42\n"  # the same kernel, its state intact
        row = _store().session(session_id)
        assert row is not None and row.state == "running" and not row.reason
        nb.run("%cake down")

"""Network outages under a running cell, on the real Slurm cluster reached over SSH.

The fault is real: the session's SSH master (which carries every port forward of the session) is killed
with SIGKILL, and while the outage lasts the login node cannot be reached: the test's own ssh_config
sends the host alias to a closed port as long as a "block" file exists (``Match exec``), so every
reconnect attempt fails exactly as it does when a laptop loses its network. Nothing of Cake is mocked.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Notebook, background, cake_cli, environment, kernel_from_spec, open_notebook, text
from slurm_jobs import SSH_CONFIG

from jupyter_cake.ssh import control_path
from jupyter_cake.store import Store

pytestmark = pytest.mark.usefixtures("slurm")

HOST = "cake-outage"
TWELVE_LINES = "%%cake\nimport time\nfor i in range(12):\n    print(f'line {i}', flush=True)\n    time.sleep(0.25)"
EXPECTED = "".join(f"line {i}\n" for i in range(12))


class Outage:
    """The login node as seen through the test's ssh_config: reachable, or (while blocked) not at all."""

    def __init__(self, folder: Path) -> None:
        self.block_file = folder / "blocked"
        self.config = folder / "ssh_config"
        login = SSH_CONFIG.read_text().split("Host ")[1].split("\n", 1)[1]  # cake-login's options
        self.config.write_text(
            f'Match host {HOST} exec "test -e {self.block_file}"\n  Port 1\n'  # first match wins in ssh_config
            f"Host {HOST}\n{login}"
        )

    def start(self, session_id: str) -> None:
        """Block the login node, then kill the session's SSH master: the channel drops at once."""
        self.block_file.touch()
        socket = control_path(f"{session_id}:{HOST}:None")
        check = subprocess.run(["ssh", "-F", str(self.config), "-o", f"ControlPath={socket}", "-O", "check", HOST],
                               capture_output=True, text=True, check=False)  # fmt: skip
        master = re.search(r"pid=(\d+)", check.stderr)
        assert master, f"no SSH master for the session: {check.stderr}"
        os.kill(int(master.group(1)), 9)

    def end(self) -> None:
        self.block_file.unlink(missing_ok=True)

    def during(self, after: float, lasting: float, session_id: str, *checks: tuple[float, Callable[[], object]]) -> Any:
        """In the background, while the body runs: start the outage ``after`` s from now, run each
        (delay, check) while it lasts, end it ``lasting`` s after it started; over when the body is."""

        def outage() -> None:
            time.sleep(after)
            t0 = time.monotonic()
            try:
                self.start(session_id)
                for delay, check in checks:
                    time.sleep(max(0.0, t0 + delay - time.monotonic()))
                    check()
                time.sleep(max(0.0, t0 + lasting - time.monotonic()))
            finally:
                self.end()

        return background(outage)


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, slurm: Path) -> Iterator[Outage]:
    gate = Outage(tmp_path_factory.mktemp("outage"))
    with open(os.environ["CAKE_CONFIG"], "a") as config:
        config.write(f'\n[targets.hpc-outage]\ninfra = "slurm/{HOST}/debug"\npython = "{sys.executable}"\n'
                     f'ssh_config = "{gate.config}"\n')  # fmt: skip
    yield gate
    gate.end()


@functools.cache
def _store() -> Store:
    """One Store for the module: opening one per query re-opens the database file in this process,
    which (POSIX locks are per process) can drop the locks SQLite holds on it through earlier ones."""
    return Store()


def _started(nb: Notebook, name: str) -> tuple[str, str]:
    """A new session ``name`` on the outage target, warm (one cell run), taken down when the notebook
    closes, also if the test failed (its job would hold the test cluster's node): its id and Slurm job,
    as the cell said (`[cake] started session s-... [job N on ...]`)."""
    cell = nb.run(f"%cake use hpc-outage --name {name} --new")
    nb.stack.callback(_down_quietly, nb)
    said = str([o.get("data", {}).get("text/plain", "") for o in cell.outputs])
    found = re.search(r"started session (s-\w+) .*\[job (\d+)", said)
    assert found, said
    nb.run("%%cake\nkept = 41")
    return found.group(1), found.group(2)


def _down_quietly(nb: Notebook) -> None:
    with contextlib.suppress(Exception):  # already down, as most tests leave it
        nb.run("%cake down")


def _job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False).stdout.strip()


def test_a_short_drop_mid_cell_loses_no_output(outage: Outage) -> None:
    with open_notebook() as nb:
        session_id, _ = _started(nb, "outage-a")
        with outage.during(1.0, 1.5, session_id):
            cell = nb.run(TWELVE_LINES, timeout=60)
        assert text(cell) == EXPECTED  # every line exactly once, in order
        assert not [o for o in cell.outputs if o.output_type == "error"]
        nb.run("%cake down")


def test_an_eight_second_outage_mid_cell_keeps_the_session(outage: Outage) -> None:
    seen: dict[str, object] = {}

    def look() -> None:  # while the login node is unreachable
        seen["squeue"] = _job_state(job)
        row = _store().session(session_id)
        seen["store"] = row.state if row else None
        seen["cli"] = cake_cli("status").stdout

    with open_notebook() as nb:
        session_id, job = _started(nb, "outage-b")
        with outage.during(1.0, 8.0, session_id, (4.0, look)):
            cell = nb.run(TWELVE_LINES, timeout=90)
        assert text(cell) == EXPECTED
        # The cell said so while it waited (one line, updated in place; it ends as "reachable again").
        shown = [m["content"].get("data", {}).get("text/plain", "") for _, m in nb.client.received
                 if m["msg_type"] in ("display_data", "update_display_data")]  # fmt: skip
        assert any("unreachable: reconnecting" in line for line in shown), shown
        assert "reachable again" in str([o.get("data", {}) for o in cell.outputs])
        assert seen["squeue"] == "RUNNING" and seen["store"] == "running", seen
        assert "unreachable" in str(seen["cli"]), seen["cli"]
        assert text(nb.run("%%cake\nprint(kept + 1)")) == "42\n"  # the same kernel, its state intact
        row = _store().session(session_id)
        assert row is not None and row.state == "running" and not row.reason
        nb.run("%cake down")
        assert _job_state(job) == ""


def test_scancel_while_unreachable_ends_the_session(outage: Outage) -> None:
    seen: dict[str, tuple[str, str | None]] = {}

    def look_then_scancel() -> None:  # while the login node is unreachable and Cake reconnects
        row = _store().session(session_id)
        seen["store"] = (row.state, row.reason) if row else ("missing", None)
        subprocess.run(["scancel", job], check=False)

    with open_notebook() as nb:
        session_id, job = _started(nb, "outage-c")
        with outage.during(1.0, 6.0, session_id, (4.0, look_then_scancel)):
            nb.fails_with("%%cake\nimport time\ntime.sleep(120)", f"Slurm allocation (job {job}) ended", within=60)
        state, reason = seen["store"]
        assert state == "running" and "unreachable" in str(reason), seen  # unreachable, not (yet) stopped
        assert any("unreachable: reconnecting" in str(m["content"]) for _, m in nb.client.received)
        row = _store().session(session_id)
        assert row is not None and row.state == "stopped", row
        deadline = time.monotonic() + 20
        while _job_state(job) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert _job_state(job) == ""


def test_a_cluster_unreachable_for_too_long_fails_the_cell_but_keeps_the_session(outage: Outage) -> None:
    """Not even the backend can be asked (the login node is unreachable): after the bound the cell fails,
    saying the session was NOT stopped and how to re-attach; once the network is back it goes on."""
    with environment(CAKE_UNREACHABLE_LIMIT_S="2"):
        nb = open_notebook()
    with nb:
        session_id, job = _started(nb, "outage-d")
        with outage.during(1.0, 10.0, session_id):
            nb.fails_with("%%cake\nimport time\ntime.sleep(3)\nprint('done')", "NOT stopped", "%cake use", "%cake attach",
                          within=30)  # fmt: skip
            row = _store().session(session_id)
            assert row is not None and row.state == "running" and "unreachable" in str(row.reason), row
            assert "unreachable" in cake_cli("status").stdout
            assert _job_state(job) == "RUNNING"
        assert text(nb.run("%%cake\nprint(kept + 1)", timeout=60)) == "42\n"  # the network is back: the same kernel
        nb.run("%cake down")


def test_ctrl_c_while_reconnecting_stops_waiting_and_keeps_the_session(outage: Outage) -> None:
    with open_notebook() as nb:
        session_id, job = _started(nb, "outage-e")
        with outage.during(1.0, 8.0, session_id):
            stop = threading.Timer(4.0, nb.interrupt)  # 3 s into the outage: Cake is reconnecting
            stop.start()
            nb.fails_with("%%cake\nimport time\ntime.sleep(3)", "Stopped waiting", "NOT stopped", within=15)
            stop.join()
            row = _store().session(session_id)
            assert row is not None and row.state == "running", row
            assert _job_state(job) == "RUNNING"
        assert text(nb.run("%%cake\nprint(kept + 1)", timeout=60)) == "42\n"
        nb.run("%cake down")


def test_an_ide_kernel_loses_no_output_in_a_drop(outage: Outage, tmp_path: Path) -> None:
    """The same drop under a cell of an IDE kernel (a Cake kernelspec that jupyter_client launches, as
    PyCharm and JupyterLab do): the proxy relays iopub frames itself, so it fills its own gap from the
    journal. Every line arrives exactly once and in order, and the cell ends ok."""
    name = "outage-ide"
    with environment(JUPYTER_DATA_DIR=str(tmp_path / "jupyter")):
        installed = cake_cli("kernel", "install", "hpc-outage", "--name", name)
        assert installed.returncode == 0, installed.stderr
        with kernel_from_spec(name, ready_timeout=180) as kc:
            [row] = [r for r in _store().sessions(live_only=True) if r.name == name]
            streams: list[str] = []
            with outage.during(1.0, 1.5, row.id):
                reply = kc.execute_interactive(TWELVE_LINES.removeprefix("%%cake\n"), timeout=90,
                                               output_hook=lambda m: streams.append(m["content"].get("text", "")))  # fmt: skip
            # Before, the proxy relayed lines 0-3 and 7-11, and the cell never ended.
            assert "".join(streams) == EXPECTED and reply["content"]["status"] == "ok"

"""A session launched through SkyPilot on the local Slurm cluster: what a notebook user sees.

One cluster is launched for the module (each `sky launch` costs ~35 s) and the tests use it in order,
as a user would: the launch itself, cells on the GPU node, a second kernel re-using the cluster, and
`%cake down` removing it.
"""

from __future__ import annotations

import contextlib
import json
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sky_infra import NODE_PYTHON, SLURM_ROOT, forge, sky_clusters, sky_jobs_in_slurm

from helpers import Notebook, open_notebook, text
from jupyter_cake.backends import get_backend
from jupyter_cake.backends.base import Allocation, NannyInfo
from jupyter_cake.backends.sky import PinnedChannel
from jupyter_cake.backends.sky.remote import HostKeyChanged
from jupyter_cake.manager import Cake
from jupyter_cake.manager.state import CONNECTION_FILE
from jupyter_cake.store import Store

pytestmark = pytest.mark.usefixtures("sky_env")

TASK_YAML = """\
resources:
  infra: slurm/cakecluster/debug
  cpus: 1
  memory: 2
envs:
  GREETING: hello from the task file
setup: |
  echo "setup ran on $(hostname)" > ~/cake-setup-marker
workdir: {workdir}
file_mounts:
  ~/cake-mounted.txt: {mounted}
run: echo this run is replaced by the kernel
"""


@dataclass
class Launched:
    nb: Notebook
    cell: Any
    messages: list[dict[str, Any]]
    seconds: float
    cluster: str


def _progress_texts(messages: list[dict[str, Any]]) -> list[str]:
    """Every progress line the user saw, including transient ones later replaced in place."""
    out = []
    for msg in messages:
        data = msg.get("content", {}).get("data", {})
        if msg["header"]["msg_type"] in ("display_data", "update_display_data") and "text/plain" in data:
            out.append(data["text/plain"])
        elif msg["header"]["msg_type"] == "stream":
            out.append(msg["content"]["text"])
    return out


@pytest.fixture(scope="module")
def gpu_target(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's target: a SkyPilot task YAML (resources, envs, setup, workdir, file_mounts) plus a
    GPU and the node's Python on the command line."""
    here = tmp_path_factory.mktemp("sky-task")
    (here / "workdir").mkdir()
    (here / "workdir" / "data.txt").write_text("synced by SkyPilot\n")
    (here / "mounted.txt").write_text("mounted by SkyPilot\n")
    task = here / "task.yaml"
    task.write_text(TASK_YAML.format(workdir=here / "workdir", mounted=here / "mounted.txt"))
    return f"--task {task} --gpus T4:1 --idle-minutes 20 --option python={NODE_PYTHON}"


@pytest.fixture(scope="module")
def launched(gpu_target: str) -> Iterator[Launched]:
    nb = open_notebook()
    try:
        started = time.monotonic()
        cell = nb.run(f"%cake use {gpu_target} --name sky-a", timeout=600)
        seconds = time.monotonic() - started
        row = Store().live_session("sky-a", "")
        assert row is not None
        yield Launched(nb, cell, [m for _, m in nb.client.received], seconds, row.allocation_data["cluster"])
    finally:
        with contextlib.suppress(Exception):  # already down when the last test passed
            nb.run("%cake down", timeout=300)
        nb.close()


def test_launch_streams_skypilots_log_and_records_the_price(launched: Launched) -> None:
    progress = "\n".join(_progress_texts(launched.messages))
    # SkyPilot's own provisioning log reached the cell while the cluster came up.
    assert "sky: " in progress and "Launching on Slurm cakecluster" in progress, progress
    assert "Cluster launched" in progress
    final = text(launched.cell)
    assert "started session" in final and f"SkyPilot cluster {launched.cluster}" in final, final
    assert launched.cluster in sky_clusters()
    row = Store().live_session("sky-a", "")
    assert row is not None and row.backend == "sky"
    assert row.price_per_hour == 0.0  # SkyPilot prices a Slurm cluster at $0; clouds get catalog prices
    # SkyPilot ran only in Cake's bridge process: the notebook's kernel never imported it.
    assert text(launched.nb.run("import sys\nprint('sky' in sys.modules)")) == "False\n"


def test_cells_stream_show_figures_interrupt_and_move_variables(launched: Launched) -> None:
    nb = launched.nb
    # The GPU request reached the node: Slurm's GRES, through SkyPilot, sets CUDA_VISIBLE_DEVICES.
    cell = nb.run("%%cake\nimport os, socket\nprint(os.environ.get('CUDA_VISIBLE_DEVICES'), socket.gethostname())")
    assert text(cell).split()[0] == "0"

    started = time.time()
    nb.run("%%cake\nimport time\nfor i in range(6):\n    print(i, flush=True); time.sleep(0.25)")
    stream_times = [t for t, m in nb.client.received if m["header"]["msg_type"] == "stream"]
    assert stream_times[0] - started < 1.0 and stream_times[-1] - stream_times[0] > 0.9  # streamed, not batched

    cell = nb.run("%%cake\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert any("image/png" in o.get("data", {}) for o in cell.outputs)

    timer = threading.Timer(1.5, nb.interrupt)
    timer.start()
    t0 = time.time()
    assert "KeyboardInterrupt" in nb.fails("%%cake\nimport time\ntime.sleep(60)")
    assert time.time() - t0 < 6
    assert text(nb.run("%%cake\nprint('still alive')")) == "still alive\n"

    nb.run("numbers = list(range(1000))")
    nb.run("%%cake --push numbers --pull total\ntotal = sum(numbers)")
    assert text(nb.run("print(total)")) == "499500\n"


def test_the_task_files_envs_setup_workdir_and_file_mounts_reach_the_kernel(launched: Launched) -> None:
    code = (
        "%%cake\nimport os\nprint(os.environ['GREETING'])\nprint(open('data.txt').read().strip())\n"
        "print(open(os.path.expanduser('~/cake-mounted.txt')).read().strip())\n"
        "print(open(os.path.expanduser('~/cake-setup-marker')).read().split()[0:2])"
    )
    assert text(launched.nb.run(code)).splitlines() == [
        "hello from the task file", "synced by SkyPilot", "mounted by SkyPilot", "['setup', 'ran']",
    ]  # fmt: skip


def test_a_new_kernel_reuses_the_running_cluster(launched: Launched, gpu_target: str) -> None:
    """The kernel ended (here: asked to stop, as after its idle time) but the cluster is still up: the next
    `%cake use` of the same target starts a kernel on that cluster instead of launching a second one."""
    cake = Cake()
    row = Store().live_session("sky-a", "")
    assert row is not None
    handle = cake.connect(row)
    assert handle is not None
    handle.nanny("shutdown", reason="test: the kernel ended")
    handle.close()

    nb = launched.nb
    started = time.monotonic()
    cell = nb.run(f"%cake use {gpu_target} --name sky-a --new", timeout=300)
    took = time.monotonic() - started
    progress = "\n".join(_progress_texts([m for _, m in nb.client.received]))
    assert "re-using SkyPilot cluster" in progress and f"SkyPilot cluster {launched.cluster} re-used in" in progress, progress
    assert "started session" in text(cell)
    assert "Launching on Slurm" not in progress  # no second provisioning ...
    # ... though SkyPilot may hold the new job until its scheduler sees the old one finished (up to ~1 min)
    print(f"re-use took {took:.1f} s (launch: {launched.seconds:.1f} s)")
    assert sky_clusters().count(launched.cluster) == 1 and len([c for c in sky_clusters() if c.startswith("cake-")]) == 1
    assert text(nb.run("%%cake\nprint(6 * 7)")) == "42\n"


def _recorded(known: Path) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:3] for line in known.read_text().splitlines() if line and not line.startswith("#")}


def test_the_head_nodes_host_key_is_pinned_and_a_changed_one_refused(launched: Launched, tmp_path: Path) -> None:
    """SkyPilot records no host key (it connects with checking off), so the session learned the head's on
    first use; an impostor's key afterwards is refused, with what to do, on a repair and a fresh connect."""
    store = Store()
    row = store.live_session("sky-a", "")
    assert row is not None
    known = Path(row.session_dir) / "known_hosts"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    recorded = _recorded(known)
    host_key = (SLURM_ROOT / "ssh" / "host_key.pub").read_text().split()[:2]  # the login node's = the head's sshd
    assert recorded and all(key == host_key for key in recorded.values()), recorded
    # The session that re-used the cluster started from the keys the first one learned.
    first = [r for r in store.sessions() if r.name == "sky-a" and r.id != row.id]
    assert first and _recorded(Path(first[0].session_dir) / "known_hosts") == recorded

    handle = Cake().connect(row)  # another Cake instance, as in a second notebook
    assert handle is not None
    channel = handle.remote.channel
    assert isinstance(channel, PinnedChannel) and channel.ssh is not None
    host = next(iter(recorded))
    original = forge(known, host, tmp_path)
    try:
        channel.ssh.close()  # the link drops (as on a network change): the next use reconnects ...
        with pytest.raises(HostKeyChanged) as refused:
            channel.repair()  # ... and meets the impostor's key: refused, not taken for a dead link
        info = NannyInfo.from_report(json.loads((Path(row.session_dir) / CONNECTION_FILE).read_text()))
        with pytest.raises(HostKeyChanged):
            get_backend("sky").open_channel(Allocation("sky", Path(row.session_dir), row.allocation_data), info)
    finally:
        known.write_text(original)
    said = str(refused.value)
    assert f"{host} (" in said and str(known) in said and "`%cake down`, then start the session again" in said, said
    assert channel.repair()  # the recorded key again: it connects, and the kernel is still there
    assert handle.nanny("ping") is not None
    handle.close()


def test_down_removes_the_skypilot_cluster(launched: Launched) -> None:
    launched.nb.run("%cake down", timeout=300)
    assert launched.cluster not in sky_clusters()
    deadline = time.time() + 20
    while sky_jobs_in_slurm() and time.time() < deadline:
        time.sleep(0.5)
    assert sky_jobs_in_slurm() == []

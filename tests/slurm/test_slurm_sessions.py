"""Sessions on a real Slurm cluster (tests/infra/slurm-up.sh): what a notebook user sees."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import assert_behaves_like_local, cake_cli, open_notebook, text
from slurm_jobs import SSH_CONFIG, squeue_jobs
from jupyter_cake.ssh import control_path
from jupyter_cake.store import Store

pytestmark = pytest.mark.usefixtures("slurm")


def _job_of(name: str) -> str:
    row = Store().live_session(name, "")
    assert row is not None, f"no live session {name}"
    return str(row.allocation_data["job_id"])


def _in_queue(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True)
    return job in out.stdout.split()


def test_gpu_session_over_ssh_behaves_like_local() -> None:
    with open_notebook() as nb:
        nb.run("%cake use hpc --gpus t4:1 --name slurm-a --new")
        job = _job_of("slurm-a")
        cell = nb.run("%%cake\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['SLURM_JOB_ID'])")
        assert text(cell) == f"0 {job}\n"

        started = time.time()
        nb.run("%%cake\nimport sys, time\nfor i in range(8):\n    print(i); print('e', file=sys.stderr); time.sleep(0.2)")
        first = next(t for t, m in nb.client.received if m["header"]["msg_type"] == "stream")
        assert first - started < 1.0

        assert_behaves_like_local(nb, interrupt_slack=2.0)

        status = cake_cli("status")
        line = next(ln for ln in status.stdout.splitlines() if "slurm-a" in ln)
        assert f"job {job} on" in line and "(debug)" in line and "gpu:t4:1" in line
        nb.run("%cake down")
        assert not _in_queue(job)


def test_two_sessions_detach_restart_and_attach() -> None:
    with open_notebook() as nb:  # closed after, like a notebook kernel restart: the sessions stay
        nb.run("%cake use hpc-local --name slurm-b --new")
        cell = nb.run("%%cake --target hpc\nimport os\nprint(os.environ['SLURM_JOB_ID'])")
        other_job = text(cell).strip().splitlines()[-1]
        job = _job_of("slurm-b")
        assert other_job != job and _in_queue(job) and _in_queue(other_job)  # two allocations at once
        cell = nb.run(
            "%%cake --detach\nimport time\nfor i in range(5):\n    print(f'step {i}', flush=True)\n    time.sleep(0.3)\nresult = 'kept'"
        )
        run_id = re.search(r"run (r-[0-9a-f]+) detached", text(cell)).group(1)
    with open_notebook() as nb:
        assert "re-attached" in text(nb.run("%cake use hpc-local --name slurm-b"))
        assert text(nb.run(f"%cake attach {run_id}")) == "".join(f"step {i}\n" for i in range(5))
        assert text(nb.run("%%cake\nprint(result)")) == "kept\n"
        nb.run("%cake down")
        nb.run("%cake down hpc")
        assert not _in_queue(job) and not _in_queue(other_job)


def test_scancel_from_outside_fails_the_running_cell_and_marks_the_session_dead() -> None:
    with open_notebook() as nb:
        nb.run("%cake use hpc-local --name slurm-c --new")
        job = _job_of("slurm-c")
        threading.Timer(1.0, lambda: subprocess.run(["scancel", job])).start()
        nb.fails_with("%%cake\nimport time\ntime.sleep(60)", f"Slurm allocation (job {job}) ended", within=15)
        assert Store().live_session("slurm-c", "") is None


def test_idle_session_cancels_its_own_job() -> None:
    with open_notebook() as nb:
        nb.run("%cake use hpc --name slurm-idle --new --idle-minutes 0.05")
        job = _job_of("slurm-idle")
        deadline = time.time() + 30
        while _in_queue(job) and time.time() < deadline:
            time.sleep(0.5)
        assert not _in_queue(job), "the idle session's job is still in the queue"
        status = cake_cli("status", "--all").stdout
        line = next(ln for ln in status.splitlines() if "slurm-idle" in ln)
        assert "idle for 0.05 minutes" in line


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"slurm/cake-login/nope --option ssh_config={SSH_CONFIG}", ["Slurm refused the job", "partition", "debug"]),
        ("slurm/cakecluster/nope --option python=/x", ["Slurm refused the job", "debug"]),
        ("hpc-local --gpus a100:1 --name bad-gres --new", ["Slurm refused the job", "gpu:t4:1"]),
        ("hpc-unreachable --name unreachable --new", ["cake-unreachable", "Connection refused"]),
        ("hpc-badkey --name badkey --new", ["cake-badkey", "Permission denied", "SSH key"]),
        ("hpc-nopython --name nopython --new", ["/nonexistent/python3", "python"]),
        ("hpc-noipykernel --name noipykernel --new", ["lacks ipykernel", "pip install --user ipykernel cloudpickle"]),
    ],
)
def test_start_failures_are_clear_and_leave_no_job(spec: str, expected: list[str], cake_data_dir: Path) -> None:
    before = squeue_jobs()
    live_before = len(Store().sessions(live_only=True))
    with open_notebook() as nb:
        error = nb.fails_with(f"%cake use {spec}", *expected, within=40)
        assert "Traceback" not in error.split("CakeError")[-1]
    assert squeue_jobs() <= before
    assert len(Store().sessions(live_only=True)) == live_before


def test_a_queued_job_shows_slurms_reason_in_place_and_timeout_cancels_it() -> None:
    blocker = subprocess.run(["sbatch", "--parsable", "-c", "2", "-J", "cake-test-blocker", "-o", "/dev/null", "--wrap", "sleep 120"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    blocker_job = blocker.stdout.strip()
    with contextlib.ExitStack() as cleanup:
        nb = cleanup.enter_context(open_notebook())
        cleanup.callback(subprocess.run, ["scancel", blocker_job])  # at the end, before the notebook closes
        deadline = time.time() + 20
        while "RUNNING" not in subprocess.run(["squeue", "-h", "-j", blocker_job, "-o", "%T"], capture_output=True, text=True).stdout:
            assert time.time() < deadline, "the blocking job never started"
            time.sleep(0.2)
        before = squeue_jobs()
        t0 = time.time()
        error = nb.fails("%cake use hpc-local --name queued --new --timeout 3")
        assert 3 <= time.time() - t0 < 20
        assert re.search(r"still PENDING \((Resources|Priority)\)", error) and "cancelled" in error
        shown = [o for o in nb.nb.cells[-1].outputs if o.output_type == "display_data"]
        assert len(shown) == 1  # one line, updated in place while waiting
        assert re.search(r"PENDING \((Resources|Priority)\), waited [0-9]+ s", shown[0].data["text/plain"])
        assert squeue_jobs() <= before  # the queued job was cancelled


def test_a_dropped_ssh_connection_is_re_established_and_the_session_goes_on() -> None:
    with open_notebook() as nb:
        nb.run("%cake use hpc --name slurm-ssh --new")
        nb.run("%%cake\nstate = 'survives'")
        session = Store().live_session("slurm-ssh", "")
        assert session is not None
        socket_path = control_path(f"{session.id}:cake-login:None")
        check = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-o", f"ControlPath={socket_path}", "-O", "check", "cake-login"],
                               capture_output=True, text=True)  # fmt: skip
        master = re.search(r"pid=(\d+)", check.stderr)
        assert master, check.stderr
        subprocess.run(["kill", master.group(1)])  # the connection drops (as on a network blip)
        time.sleep(1.2)  # silent long enough for the next cell to check the channel
        cell = nb.run("%%cake\nprint(state)", timeout=60)
        assert text(cell) == "survives\n"
        nb.run("%cake down")

"""Sessions outlive the notebook kernel, end themselves when idle, and bad input leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import Notebook, cake_cli, kill_starting, nanny_pids, open_notebook, shared_store, text

from jupyter_cake.procs import pid_alive
from jupyter_cake.store import Store


def test_detach_restart_local_kernel_then_attach_replays_everything() -> None:
    with open_notebook() as first:  # then the notebook kernel goes away, as on a restart
        first.run("%cake use local --name restart-test")
        cell = first.run(
            "%%cake --detach\n"
            "import time\n"
            "for i in range(6):\n"
            "    print(f'line {i}', flush=True)\n"
            "    time.sleep(0.3)\n"
            "model_state = {'epochs': 6}\n"
            "'finished'\n"
        )
        run_id = re.search(r"run (r-[0-9a-f]+) detached", text(cell)).group(1)
        time.sleep(0.6)  # part of the output is produced while nobody is attached

    with open_notebook() as second:
        cell = second.run("%cake use local --name restart-test")
        assert "re-attached" in text(cell)
        cell = second.run(f"%cake attach {run_id}")
        assert text(cell) == "".join(f"line {i}\n" for i in range(6))
        assert [o.data["text/plain"] for o in cell.outputs if o.output_type == "execute_result"] == ["'finished'"]
        cell = second.run("%%cake\nprint(model_state)")
        assert text(cell) == "{'epochs': 6}\n"
        logs = cake_cli("logs", run_id)
        assert logs.returncode == 0 and "line 5" in logs.stdout
        runs = cake_cli("runs")
        assert re.search(rf"{run_id}\s+\S+\s+ok", runs.stdout), runs.stdout
        second.run("%cake down")


def test_idle_session_stops_itself_and_frees_its_allocation(fresh_notebook: Notebook, cake_data_dir: Path) -> None:
    fresh_notebook.run("%cake use local --name idle-test --new --idle-minutes 0.05")  # 3 s
    store = Store()
    row = store.live_session("idle-test", "")
    assert row is not None
    pid = json.loads(row.allocation)["pid"]
    assert pid in nanny_pids(cake_data_dir)
    fresh_notebook.run("%%cake\nx = 1")
    deadline = time.time() + 20
    while pid in nanny_pids(cake_data_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert pid not in nanny_pids(cake_data_dir), "the idle nanny is still running"
    status = cake_cli("status", "--all")
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith(row.id))
    assert "stopped" in line and "idle for 0.05 minutes" in line
    error = fresh_notebook.fails("%%cake\nx")
    assert "SessionGone" in error and "has stopped: idle for 0.05 minutes" in error


def test_bad_input_gives_one_clear_error_and_leaves_nothing_running(fresh_notebook: Notebook, cake_data_dir: Path) -> None:
    before = nanny_pids(cake_data_dir)
    live_before = len(Store().sessions(live_only=True))
    nb = fresh_notebook

    nb.fails_with("%%cake\nprint('hi')", "No Cake session yet", "%cake use local")
    nb.fails_with("%cake use slrum/hpc/gpu", "slrum", "slurm")
    nb.fails_with("%cake use local --gpus H100:x", "H100:x")
    nb.fails_with("%cake use local --image python:3.11", "--image python:3.11 can't be honoured on local", "k8s/<context>")
    # This machine has no SkyPilot (tests/sky has).
    nb.fails_with("%cake use aws/us-east-1 --gpus A100:1", "goes through SkyPilot, which is not installed here", "CAKE_SKY_PYTHON")

    nb.run("%cake use local --name bad-input --new")
    nb.fails_with("%%cake --pull nope\nx = 1", "nope", "not defined in the remote session")

    nb.run("import threading\nlock = threading.Lock()")
    error = nb.fails_with("%%cake --push lock\nprint('RAN' + 'X')", "'lock'", "cannot be pickled")
    assert "RANX" not in error  # the cell never ran

    nb.fails_with("%%cake --push missing_name\npass", "missing_name", "not defined in this notebook")
    nb.fails_with("%%cake --cpus 4\npass", "--cpus 4", "--target")
    nb.fails_with("%cake frobnicate", "Unknown command")
    nb.fails_with("%%cake --timeout 1\nimport time\ntime.sleep(30)", "RunTimeout", "--timeout 1")
    cell = nb.run("%%cake\nprint('usable after timeout')")
    assert text(cell) == "usable after timeout\n"

    # No traceback noise for expected errors: one line naming the cause and the fix.
    error = nb.fails("%cake use local --nodes 2")
    assert "Traceback" not in error.split("CakeError")[-1]

    nb.run("%cake down")
    assert nanny_pids(cake_data_dir) == before
    assert len(Store().sessions(live_only=True)) == live_before


def test_cli_status_runs_logs_down(fresh_notebook: Notebook) -> None:
    fresh_notebook.run("%cake use local --name cli-test --new")
    cell = fresh_notebook.run("%%cake\nprint('from the cli test')")
    assert text(cell) == "from the cli test\n"
    status = cake_cli("status")
    assert status.returncode == 0 and "cli-test" in status.stdout and "running" in status.stdout
    runs = cake_cli("runs")
    run_id = next(ln.split()[0] for ln in runs.stdout.splitlines() if "print('from the cli test')" in ln)
    assert cake_cli("logs", run_id).stdout == "from the cli test\n"
    cell = fresh_notebook.run(
        "%%cake --detach\nimport time\nfor i in range(4):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.3)\n1/0"
    )
    detached = re.search(r"run (r-[0-9a-f]+) detached", text(cell)).group(1)
    follow = cake_cli("logs", "-f", detached)  # follows the live run to its end
    assert follow.stdout.startswith("tick 0\ntick 1\ntick 2\ntick 3\n") and "ZeroDivisionError" in follow.stdout
    assert follow.returncode == 1  # the run failed
    bad = cake_cli("logs", "r-doesnotexist")
    assert bad.returncode == 2 and "No run matches" in bad.stderr
    down = cake_cli("down", "cli-test")
    assert down.returncode == 0 and "is down" in down.stdout
    assert "cli-test" not in cake_cli("status").stdout
    error = fresh_notebook.fails("%%cake\nprint(1)")
    assert "has stopped: stopped by the user (cake down)" in error and "%cake use local" in error


def test_kernel_restart_keeps_the_allocation_and_gives_a_fresh_namespace() -> None:
    """What an IDE's "Restart kernel" does: same nanny and allocation, new kernel, clean state."""
    import queue

    from jupyter_cake.manager import Cake
    from jupyter_cake.targets import parse_target

    cake = Cake()
    handle, _ = cake.use(parse_target("local"), name="restart-kernel", new=True)
    try:
        outputs: queue.SimpleQueue = queue.SimpleQueue()

        def run(code: str) -> tuple[str, str]:
            run_id, future = handle.start_run(code, outputs.put)
            outcome = future.result(30)
            handle.finish_run(outcome)
            text_out = ""
            while not outputs.empty():
                item = outputs.get()
                text_out += item["content"].get("text", "") if item["msg_type"] == "stream" else ""
            return outcome.status, text_out

        assert run("import os\nbefore = 1\nprint(os.getpid())")[0] == "ok"
        nanny_pid = handle.nanny("ping")["pid"]
        old_kernel = handle.nanny("ping")["kernel_pid"]
        handle.restart()
        status, out = run("print('before' in globals(), os.getpid() if 'os' in globals() else 'fresh')")
        assert (status, out) == ("ok", "False fresh\n")
        ping = handle.nanny("ping")
        assert ping["pid"] == nanny_pid and ping["kernel_pid"] != old_kernel
    finally:
        cake.down(handle.row)


def test_another_process_looking_at_a_busy_session_leaves_it_alone(fresh_notebook: Notebook) -> None:
    """A kernel busy with a long cell answers nothing until the cell ends; `cake status` from a terminal
    meanwhile must report it busy, not declare it dead."""
    nb = fresh_notebook
    nb.run("%cake use local --name longcell --new")
    cell = nb.run("%%cake --detach\nimport time\ntime.sleep(6)\nprint('finished')")
    run_id = re.search(r"run (r-[0-9a-f]+) detached", text(cell)).group(1)
    t0 = time.time()
    status = cake_cli("status")
    assert time.time() - t0 < 5
    line = next(ln for ln in status.stdout.splitlines() if "longcell" in ln)
    assert "running" in line and "busy" in line  # the autostop column says the kernel is busy
    runs = cake_cli("runs")
    assert re.search(rf"{run_id}\s+\S+\s+running", runs.stdout)
    assert text(nb.run(f"%cake attach {run_id}")) == "finished\n"
    nb.run("%cake down")


def test_cells_after_the_session_ended_say_so_every_time(fresh_notebook: Notebook) -> None:
    """A session that ended under the notebook (here: idle autostop): the next cell says why, and so does
    every cell after it (the magics keep the ended session as current, never its closed sockets),
    until `%cake use` starts a new one."""
    nb = fresh_notebook
    nb.run("%cake use local --name ended --new --idle-minutes 0.05")
    deadline = time.monotonic() + 60
    while Store().live_session("ended", "") is not None and time.monotonic() < deadline:
        cake_cli("status")  # looks at the session: records that it stopped itself
        time.sleep(0.5)
    for _ in range(3):
        error = nb.fails("%%cake\nprint(1)")
        assert "Session" in error and "has stopped: idle for 0.05 minutes" in error and "%cake use local" in error, error
        assert "TypeError" not in error
    assert "has stopped" in nb.fails("%cake interrupt")
    nb.run("%cake use local --name ended")
    assert text(nb.run("%%cake\nprint('back')")) == "back\n"
    nb.run("%cake down")


def test_down_after_the_nanny_was_killed_stops_what_the_session_started(fresh_notebook: Notebook) -> None:
    """The nanny killed (-9): its kernel ends itself (ipykernel's parent poller), but a process the
    user's code started from the kernel lives on, orphaned. `cake down` must stop it too."""
    nb = fresh_notebook
    nb.run("%cake use local --name nanny-killed --new")
    child = int(text(nb.run("%%cake\nimport subprocess\nprint(subprocess.Popen(['sleep', '600']).pid)")))
    row = Store().live_session("nanny-killed", "")
    assert row is not None
    os.kill(int(row.allocation_data["pid"]), signal.SIGKILL)
    assert cake_cli("down", "nanny-killed").returncode == 0
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child), "a process the session started outlived `cake down`"


def _nanny_running(row: Any) -> bool:
    return bool(nanny_pids(Path(row.session_dir)))


def _nanny_reported(row: Any) -> bool:
    """The nanny wrote nanny.json, then sends its report: the starter has not stored its pid yet, or just has."""
    return (Path(row.session_dir) / "nanny.json").exists()


def _status_line(session_id: str) -> str:
    status = cake_cli("status", "--all")
    return next((ln for ln in status.stdout.splitlines() if ln.startswith(session_id)), f"(no line in {status.stdout!r})")


def test_a_start_killed_as_the_nanny_reported_is_reaped_by_the_next_status(tmp_path: Path) -> None:
    """kill -9 of the starting process (here `cake run`) as its nanny reports: the nanny serves on, holding
    this machine for the idle window, and its pid may never have reached the store. The next `cake status`
    sees that the starter is gone, stops that nanny, and says the start failed."""
    row = kill_starting("killed-start", _nanny_reported, "--target", "local", cwd=tmp_path)
    line = _status_line(row.id)
    assert not nanny_pids(Path(row.session_dir)), "the killed start's nanny still runs after `cake status`"
    assert "failed" in line and "start was interrupted" in line and "pid" in line, line


def test_down_of_a_killed_start_releases_it_and_says_so(tmp_path: Path) -> None:
    """The same kill, then `cake down NAME` at once: it stops that nanny and says the start had been interrupted."""
    row = kill_starting("killed-down", _nanny_reported, "--target", "local", cwd=tmp_path)
    down = cake_cli("down", "killed-down")
    assert not nanny_pids(Path(row.session_dir)), "the killed start's nanny outlived `cake down`"
    assert down.returncode == 0 and "is down: its start was interrupted" in down.stdout, down
    assert "failed" in _status_line(row.id)


def test_status_while_another_process_starts_a_session_leaves_the_start_alone(tmp_path: Path) -> None:
    """A start in progress in a live process (its kernel slowed by a sitecustomize that sleeps) is neither
    reaped nor declared stopped by a `cake status` meanwhile; the start then completes."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(1.5)\n")
    script = tmp_path / "hello.py"
    script.write_text("print('hello')\n")
    argv = [sys.executable, "-m", "jupyter_cake.cli", "run", str(script), "--target", "local", "--name", "slow-start",
            "--new", "--env", f"PYTHONPATH={slow}"]  # fmt: skip
    store = shared_store()  # made before the starter can be creating the database file
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        row = None
        while row is None and time.monotonic() < deadline:
            rows = [r for r in store.find_session("slow-start") if r.state == "starting"]
            row = rows[0] if rows and _nanny_running(rows[0]) else None
            time.sleep(0.02)
        assert row is not None, f"the start never got as far as a nanny: {proc.poll()} {cake_cli('status', '--all').stdout}"
        line = _status_line(row.id)
        assert "starting" in line, line
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0 and "hello" in out, out
        assert "running" in _status_line(row.id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cake_cli("down", "slow-start")


def test_the_next_start_of_the_name_releases_what_a_killed_start_left(tmp_path: Path) -> None:
    """The same kill, then the user simply runs again with the same name: that start releases the old nanny
    first (no second session holds the machine) and starts a fresh session."""
    row = kill_starting("killed-again", _nanny_reported, "--target", "local", cwd=tmp_path)
    again = subprocess.run([sys.executable, "-m", "jupyter_cake.cli", "run", str(tmp_path / "hello.py"), "--target", "local",
                            "--name", "killed-again", "--down"], check=False, capture_output=True, text=True, timeout=90)  # fmt: skip
    assert again.returncode == 0 and "hello" in again.stdout, again
    assert not nanny_pids(Path(row.session_dir)), "the killed start's nanny outlived the next start"
    assert "failed" in _status_line(row.id) and "start was interrupted" in _status_line(row.id)

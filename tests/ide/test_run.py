"""`cake run`: a local script on a session, output streamed here, the script's exit code, Ctrl-C cancels."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ide_util import alive, cake, wait_for

from jupyter_cake.store import Store

SCRIPT = """\
import os, sys, time
print("out 1", flush=True)
time.sleep(0.05)
print("err 1", file=sys.stderr, flush=True)
time.sleep(0.05)
print("out 2", flush=True)
print("argv", sys.argv[1:], "cwd", os.getcwd(), "data", open("data.txt").read())
code = sys.argv[1] if len(sys.argv) > 1 else "0"
if code == "kill":
    import signal
    os.kill(os.getpid(), signal.SIGKILL)
if code == "raise":
    raise ValueError("boom")
sys.exit(int(code))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small project directory. The tests share one session (warm, as for a user running scripts one
    after another); it outlives `cake run` on purpose, so it is stopped at the end."""
    root = tmp_path_factory.mktemp("project")
    (root / "job.py").write_text(SCRIPT)
    (root / "data.txt").write_text("local data")
    (root / "sub").mkdir()
    (root / "slow.py").write_text(
        "import os, time\nopen('child.pid', 'w').write(str(os.getpid()))\n"
        "for i in range(600):\n    print('tick', i, flush=True)\n    time.sleep(0.1)\n"
    )
    yield root
    down = cake("down", "cake-run-test")
    assert down.returncode == 0 and "is down" in down.stdout


def run(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """stdout and stderr in one pipe, as a terminal shows them."""
    return subprocess.run([sys.executable, "-m", "jupyter_cake.cli", "run", *args], cwd=project, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)  # fmt: skip


def test_output_order_arguments_and_exit_codes(project: Path) -> None:
    result = run(project, "job.py", "0", "--flag", "--target", "local", "--name", "cake-run-test")
    lines = [ln for ln in result.stdout.splitlines() if not ln.startswith("[cake]")]
    assert result.returncode == 0, result.stdout
    assert lines == ["out 1", "err 1", "out 2", f"argv ['0', '--flag'] cwd {project} data local data"]

    # Options after the script are Cake's; everything after `--` is the script's.
    assert run(project, "--name", "cake-run-test", "job.py", "--target", "local", "--", "3").returncode == 3
    failed = run(project, "job.py", "raise", "-t", "local", "--name", "cake-run-test")
    assert failed.returncode == 1 and "ValueError: boom" in failed.stdout
    killed = run(project, "job.py", "kill", "-t", "local", "--name", "cake-run-test")
    assert killed.returncode == 137 and "killed by SIGKILL" in killed.stdout

    # Each run is recorded like a cell, and the session stays warm for the next one.
    runs = cake("runs").stdout
    assert re.search(r"error .*# cake run job.py kill\s+CakeScriptExit: 137", runs), runs
    assert len([r for r in Store().sessions(live_only=True) if r.name == "cake-run-test"]) == 1


def test_sync_copy_runs_in_a_copy_of_the_workdir(project: Path) -> None:
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "inside").symlink_to("data.txt")
    (project / "outside").symlink_to("/etc")
    result = run(project, "job.py", "--target", "local", "--name", "cake-run-test", "--sync", "copy")
    assert result.returncode == 0, result.stdout
    cwd = Path(re.search(r"cwd (\S+) data local data", result.stdout).group(1))
    assert cwd != project and (cwd / "job.py").read_text() == SCRIPT
    assert "working directory synced to" in result.stdout
    assert (cwd / "inside").read_text() == "local data"  # links within the project travel as links
    assert not (cwd / "outside").exists() and "not synced: outside -> /etc" in result.stdout
    assert not (cwd / ".git").exists()


def test_ctrl_c_cancels_the_remote_process(project: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_cake.cli", "run", "slow.py", "-t", "local", "--name", "cake-run-test"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    while "tick 2" not in proc.stdout.readline():
        pass
    child = int((project / "child.pid").read_text())
    assert alive(child)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "KeyboardInterrupt" in out  # the script's own traceback: it got SIGINT, like in a terminal
    assert wait_for(lambda: not alive(child), timeout=10)


def test_detach_then_follow_with_cake_logs(project: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "jupyter_cake.cli", "run", "job.py", "5", "--detach", "-t", "local",
                             "--name", "cake-run-test"], cwd=project, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0
    run_id = result.stdout.strip()
    assert re.fullmatch(r"r-[0-9a-f]+", run_id) and f"cake logs -f {run_id}" in result.stderr
    follow = cake("logs", "-f", run_id)
    assert follow.stdout.startswith("out 1\nout 2\n") and follow.stderr == "err 1\n"  # replayed from the journal
    assert "job.py exited with code 5" in follow.stdout and follow.returncode == 1


def test_bad_input_is_explained_before_anything_starts(project: Path, cake_data_dir: Path) -> None:
    live = len(Store().sessions(live_only=True))
    for args, expected in (
        (["job.py"], "Give a target"),
        (["-t", "local"], "Which script?"),
        (["missing.py", "-t", "local"], "missing.py: no such file"),
        (["job.py", "-t", "local", "--sync", "rsync"], "--sync takes one of auto, copy, none"),
        (["job.py", "-t", "local", "--gpus", "H100:x"], "H100:x"),
        (["job.py", "-t", "local", "--sync", "copy", "--workdir", "sub"], "is not inside the working directory"),
    ):
        result = run(project, *args)
        assert result.returncode == 2 and expected in result.stdout, (args, result.stdout)
    assert len(Store().sessions(live_only=True)) == live  # nothing was started

"""What a Ray user does on a Cake session, written once and run on every target (tests/ray/test_*.py).

Everything is real: a notebook kernel (nbclient) with the magics, a Cake session with a Ray head
started by its nanny, Ray tasks and actors, the `cake` CLI in a subprocess, HTTP through the
dashboard's forwarded port. One Ray session per test module (a Ray start costs 8-30 s here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers import Notebook, text

def ray_heads(data_dir: Path) -> set[int]:
    """PIDs of `ray start --head` processes whose session directory is in ``data_dir``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"ray.scripts.scripts" not in argv or b"--head" not in argv:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        token = next((e.split(b"=", 1)[1] for e in environ if e.startswith(b"RAY_AUTH_TOKEN_PATH=")), b"")
        if token.decode(errors="replace").startswith(str(data_dir)):
            pids.add(int(proc.name))
    return pids


TASKS_CELL = """%%cake --ray
import ray
ray.init()

@ray.remote
def hello(i):
    print(f"hello from task {i}")
    return i * i

print("sum of squares", sum(ray.get([hello.remote(i) for i in range(4)])))
"""

ACTOR_CELL = """%%cake
@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        print(f"counter at {self.n}")
        return self.n

counter = Counter.remote()
print("first", ray.get(counter.incr.remote()))
"""

JOB_SCRIPT = """import sys, time
print("job started", flush=True)
if len(sys.argv) > 1 and sys.argv[1].isdigit():
    sys.exit(int(sys.argv[1]))  # exit codes: no need to start a driver for that
import ray
ray.init()

@ray.remote
def square(x):
    print(f"square of {x}")
    return x * x

print("total", sum(ray.get([square.remote(i) for i in range(3)])), flush=True)
if len(sys.argv) > 1 and sys.argv[1] == "sleep":
    print("sleeping", flush=True)
    time.sleep(120)
"""


def shown(cell: Any) -> str:
    """Everything a cell shows as text: streams and (progress) displays, as updated in place."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            parts.append(output.data.get("text/plain", "") + "\n")
    return "".join(parts)


def plain(cell: Any) -> str:
    """The cell's stdout without ANSI colours (Ray colours its "(task pid=...)" prefixes)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text(cell))


def tasks_stream_worker_output(nb: Notebook) -> None:
    cell = nb.run(TASKS_CELL, timeout=240)
    out = plain(cell)
    assert "sum of squares 14" in out, out
    for i in range(4):  # every worker's print, in the cell that ran the tasks (not a later one)
        assert re.search(rf"\(hello pid=\d+(, ip=\S+)?\) hello from task {i}\n", out), out
    cell = nb.run("%%cake\nprint(ray.get([hello.remote(i) for i in (7, 8)]))", timeout=120)
    out = plain(cell)
    assert "[49, 64]" in out and "hello from task 7" in out and "hello from task 8" in out, out


def actor_keeps_state(nb: Notebook) -> None:
    cell = nb.run(ACTOR_CELL, timeout=180)
    assert "first 1" in plain(cell) and "counter at 1" in plain(cell), plain(cell)
    cell = nb.run("%%cake\nprint('second', ray.get(counter.incr.remote()))", timeout=60)
    assert "second 2" in plain(cell) and "counter at 2" in plain(cell), plain(cell)


def ray_address_is_set(nb: Notebook, loopback: bool) -> str:
    cell = nb.run("%%cake\nimport os\nprint(os.environ['RAY_ADDRESS'], os.environ['RAY_AUTH_MODE'])")
    address, mode = text(cell).split()
    assert mode == "token"
    if loopback:
        assert address.startswith("127.0.0.1:")
    return address


def dashboard_answers(nb: Notebook, token_file: Path | None = None) -> tuple[str, str]:
    """`%cake ray` shows resources and a local URL; the URL answers through the channel, and its API
    wants the session's token."""
    out = text(nb.run("%cake ray"))
    assert re.search(r"resources\s+.*CPU", out), out
    url = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+)", out).group(1)
    with urllib.request.urlopen(url + "/", timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read(2000).lower()
    try:
        urllib.request.urlopen(url + "/api/version", timeout=30)
        raise AssertionError("the dashboard API answered without the session's token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    if token_file is None:
        token_file = Path(re.search(r"token in (\S+)", out).group(1))
    token = token_file.read_text().strip()
    request = urllib.request.Request(url + "/api/version", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["ray_version"]
    return url, token


def cake(args: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jupyter_cake.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def cake_run_exit_codes(workdir: Path, target: Sequence[str]) -> None:
    (workdir / "job.py").write_text(JOB_SCRIPT)
    ok = cake(["run", "--ray", "job.py", *target], workdir)
    assert ok.returncode == 0, ok.stderr
    assert "job started" in ok.stdout and "total 5" in ok.stdout, ok.stdout
    assert "square of 2" in ok.stdout, ok.stdout  # the job's worker output streams too
    assert re.search(r"Ray job raysubmit_\w+ submitted", ok.stderr), ok.stderr
    failed = cake(["run", "--ray", "job.py", "7", *target], workdir)
    assert failed.returncode == 7, (failed.stdout, failed.stderr)
    assert "job started" in failed.stdout
    assert "failed with exit code 7" in failed.stderr, failed.stderr


def cake_run_ctrl_c_stops_the_job(workdir: Path, target: Sequence[str], dashboard: str, token: str) -> None:
    (workdir / "job.py").write_text(JOB_SCRIPT)
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_cake.cli", "run", "--ray", "job.py", "sleep", *target],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 240
        while "sleeping" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "sleeping" in seen, seen + proc.stderr.read()
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (seen + rest, err)
    assert took < 30, took
    job = re.search(r"Ray job (raysubmit_\w+) submitted", err).group(1)
    assert f"stopping Ray job {job}" in err, err
    request = urllib.request.Request(f"{dashboard}/api/jobs/{job}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["status"] == "STOPPED"


def listening(port: int, host: str) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def env_without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in os.environ.items() if k not in names}

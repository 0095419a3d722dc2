"""PID 1 of a Cake session Pod (standard library only: shipped into the Pod, never imported locally).

It unpacks nothing itself (the boot snippet in the Pod spec did that) and:
- runs the nanny as a child (which starts the kernel), with the shipped files on PYTHONPATH;
- serves the nanny's report (kernel connection info incl. the session key) on 127.0.0.1:REPORT_PORT
  inside the Pod only. Cake reads it through the API server's port-forward, so the key never appears in
  the Pod spec, its logs or its events, and nothing in the Pod listens on the Pod's network interface;
- forwards SIGTERM (Pod deletion, eviction) to the nanny so it stops the kernel and records why;
- when the nanny exits (idle autostop, `cake down`, kernel death) writes the reason to the container's
  termination message and exits: with restartPolicy Never the container is gone at once, so its CPUs,
  memory and GPUs are free for the autoscaler; Cake then deletes the finished Pod object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

TERMINATION_LOG = "/dev/termination-log"


# The nanny's exit code once the main thread has reaped it (only the main thread waits for children:
# a second waiter could reap the nanny first and leave the main thread waiting forever).
_exit_code: list[int] = []


def _report(session_dir: Path) -> bytes:
    try:
        info = json.loads((session_dir / "nanny.json").read_text())
        return json.dumps({"state": "running", **info}).encode() + b"\n"
    except (OSError, ValueError):
        pass
    if _exit_code:
        return json.dumps({"state": "failed", "error": f"the nanny exited with code {_exit_code[0]}",
                           "log": _tail(session_dir / "kernel.log")}).encode() + b"\n"
    return b'{"state": "starting"}\n'


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _serve_reports(port: int, session_dir: Path) -> None:
    server = socket.create_server(("127.0.0.1", port))

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                try:
                    conn.sendall(_report(session_dir))
                except OSError:
                    pass

    threading.Thread(target=loop, daemon=True).start()


def _wait_reaping(nanny: subprocess.Popen[bytes]) -> int:
    """Wait for the nanny. As PID 1 this process also inherits every orphan of the kernel (processes
    user code started and left): reap them too, so they don't pile up as zombies."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # cannot happen while the nanny lives; be safe anyway
            return nanny.wait()
        if pid == nanny.pid:
            nanny.returncode = os.waitstatus_to_exitcode(status)
            _exit_code.append(nanny.returncode)
            return nanny.returncode


def _follow(path: Path) -> None:
    """Copy the kernel's own log (crashes, C-level output; not cell output) to the container's stdout,
    where `cake logs` reads it through pods/log."""
    while not path.exists():
        time.sleep(0.5)
    with open(path, errors="replace") as log:
        while True:
            line = log.readline()
            if line:
                sys.stdout.write("kernel: " + line)
                sys.stdout.flush()
            else:
                time.sleep(0.5)


def _reason(session_dir: Path, code: int) -> str:
    try:
        reason = json.loads((session_dir / "state.json").read_text()).get("reason")
    except (OSError, ValueError):
        reason = None
    return str(reason) if reason else f"the nanny exited with code {code}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--report-port", type=int, required=True)
    parser.add_argument("--idle-minutes", default="0")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ, CAKE_NANNY_ROOT=args.root)
    env["PYTHONPATH"] = args.root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "jupyter_cake.nanny", "--session-dir", str(args.session_dir),
            "--idle-minutes", args.idle_minutes]
    if args.workdir:
        argv += ["--workdir", args.workdir]
    # The nanny logs to the container's stdout: `cake logs` reads it through pods/log.
    nanny = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    def stop(*_: object) -> None:
        # os.kill, not Popen.send_signal: that polls (reaps) the child, which only _wait_reaping may do
        if not _exit_code:
            os.kill(nanny.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _serve_reports(args.report_port, args.session_dir)
    threading.Thread(target=_follow, args=(args.session_dir / "kernel.log",), daemon=True).start()
    code = _wait_reaping(nanny)
    reason = _reason(args.session_dir, code)
    print(f"cake-pod: session ended: {reason}", flush=True)
    try:
        Path(TERMINATION_LOG).write_text(reason[:4000])
    except OSError:
        pass
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()

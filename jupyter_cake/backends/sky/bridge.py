"""Cake's side of the SkyPilot bridge: run one SkyPilot operation in a separate process, with a deadline.

SkyPilot's SDK is never imported here (DESIGN seam 4: ~2 s, 170 MB and pinned packages that clash
with user code). ``bridge_main.py`` runs with SkyPilot's own Python, found in this order:

1. ``CAKE_SKY_PYTHON`` (environment), or the target option ``sky_python``;
2. this interpreter, when ``sky`` is importable here (checked without importing it);
3. the interpreter of the ``sky`` command on PATH (its shebang), e.g. a pipx or venv install.

Every call has a deadline: when it passes, the bridge gets SIGTERM and cancels its in-flight SkyPilot
requests on the API server (a request can otherwise hang for ever on a network that drops packets);
if it does not exit within a grace period it is killed with its process group.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError

MAIN = Path(__file__).with_name("bridge_main.py")
CANCEL_GRACE_S = 10.0
SKY_PYTHON_ENV = "CAKE_SKY_PYTHON"
INSTALL_HINT = (
    "Install SkyPilot in its own environment and point Cake at it: "
    "`python3 -m venv ~/.cake-sky && ~/.cake-sky/bin/pip install 'skypilot[slurm,kubernetes,aws]'` "
    "(the extras of the infra you use), then `export CAKE_SKY_PYTHON=~/.cake-sky/bin/python` "
    "(or the target option sky_python = \"...\")."
)


class BridgeError(CakeError):
    """A SkyPilot operation failed; ``kind`` says how (see bridge_main.classify)."""

    def __init__(self, message: str, kind: str = "failed", detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail or {}


def sky_python(option: str | None = None) -> str:
    """The interpreter that has SkyPilot installed (see the module docstring for the order)."""
    configured = os.environ.get(SKY_PYTHON_ENV) or option
    if configured:
        path = shutil.which(os.path.expanduser(configured))
        if path is None:
            raise CakeError(f"{SKY_PYTHON_ENV} / sky_python names {configured!r}, which is not an executable. {INSTALL_HINT}")
        return path
    found = importlib.util.find_spec("sky")
    if found is not None and (found.origin or "").endswith("__init__.py"):  # not some folder named sky/
        return sys.executable
    command = shutil.which("sky")
    if command:
        try:
            first = Path(command).read_bytes()[:256].split(b"\n", 1)[0].decode()
        except OSError:
            first = ""
        if first.startswith("#!") and "python" in first:
            return first[2:].strip().split()[0]
    raise CakeError(f"This target goes through SkyPilot, which is not installed here. {INSTALL_HINT}")


def call(
    op: str,
    args: dict[str, Any],
    *,
    timeout: float,
    python: str | None = None,
    on_log: Callable[[str], None] | None = None,
    what: str | None = None,
) -> dict[str, Any]:
    """Run one bridge operation and return its result fields; raise BridgeError on failure or deadline."""
    interpreter = python or sky_python()
    request = json.dumps({"op": op, **args})
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(
                [interpreter, "-u", str(MAIN)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                start_new_session=True,  # its own process group: a timeout kills SkyPilot's children too
            )  # fmt: skip
        except OSError as exc:
            raise CakeError(f"Could not start SkyPilot's Python {interpreter!r}: {exc}. {INSTALL_HINT}") from None
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(request.encode())
        proc.stdin.close()
        timed_out = threading.Event()
        watchdog = threading.Timer(timeout, _expire, (proc, timed_out))
        watchdog.daemon = True
        watchdog.start()
        outcome: dict[str, Any] | None = None
        try:
            for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                kind = event.pop("event", "")
                if kind == "log" and on_log is not None:
                    on_log(str(event.get("text", "")))
                elif kind in ("result", "error"):
                    outcome = {"event": kind, **event}
            proc.wait()
        except BaseException:
            # Ctrl-C in the notebook: the same cancellation as a deadline, then re-raise.
            _expire(proc, timed_out)
            proc.wait()
            raise
        finally:
            watchdog.cancel()
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    label = what or f"SkyPilot {op}"
    if timed_out.is_set():
        raise BridgeError(
            f"{label} did not finish within {timeout:g} s, so Cake cancelled it. SkyPilot's API server may be "
            "unreachable or overloaded (check `sky api info`), or the infra is slow: retry, or give more time "
            "with --timeout.",
            kind="timeout",
        )
    if outcome is None:
        tail = "\n".join(errors.strip().splitlines()[-15:])
        raise BridgeError(f"{label} failed: SkyPilot's process exited with code {proc.returncode}.\n{tail}", kind="crash")
    if outcome["event"] == "error":
        raise BridgeError(str(outcome.get("message", "")), kind=str(outcome.get("kind", "failed")), detail=outcome)
    outcome.pop("event")
    return outcome


def _expire(proc: subprocess.Popen[bytes], flag: threading.Event) -> None:
    """SIGTERM (the bridge cancels its SkyPilot requests), then SIGKILL the group after a grace period."""
    if proc.poll() is not None:
        return
    flag.set()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + CANCEL_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

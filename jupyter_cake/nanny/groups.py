"""Process groups of a session: the nanny's services (a Ray head, say) run in groups of their own, so
stopping the nanny's group does not reach them. The nanny records them in the session directory, so
that whoever releases the session (the nanny itself, or a backend after the nanny died) stops them.

Standard library only (ships with the nanny). Linux ``/proc`` is how members are found; a group is
only signalled while a member still carries this session's ``CAKE_SESSION_DIR``, so a recycled
process-group id of somebody else's is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

GROUPS_FILE = "process-groups.json"
SESSION_DIR_ENV = "CAKE_SESSION_DIR"  # set by the nanny; inherited by the kernel and the services


def _members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group ``pgid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(proc.name))
    return found


def group_alive(pgid: int) -> bool:
    return bool(_members(pgid))


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL what is left after ``grace`` seconds; returns once it is gone (or 2 s
    after the SIGKILL)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.05)
        if not group_alive(pgid):
            return


def record(session_dir: Path, groups: list[int]) -> None:
    (session_dir / GROUPS_FILE).write_text(json.dumps(groups))


def stop_recorded(session_dir: Path, grace: float = 1.0) -> None:
    """Stop the groups the nanny recorded (its own, with the kernel, and its services') that still belong
    to this session: after the nanny died or would not stop, since its own shutdown stops them otherwise."""
    try:
        groups = json.loads((session_dir / GROUPS_FILE).read_text())
    except (OSError, ValueError):
        return
    marker = f"{SESSION_DIR_ENV}={session_dir}".encode() + b"\0"
    for pgid in groups:
        if any(_carries(pid, marker) for pid in _members(int(pgid))):
            stop_group(int(pgid), grace)


def _carries(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False

"""Process helpers shared by the local backend and the IDE kernel proxy."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie (a finished process whose parent,
    e.g. the notebook kernel that started a nanny, has not collected it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), to tell it from a later process
    that got the same pid; None where that is unknown (no such process, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None

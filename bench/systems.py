"""Drivers for the three systems the benchmark compares, all used from the benchmark's own process.

- ``Cake``:        jupyter_cake's magics in a (test) IPython shell: ``%cake use local --new``, ``%%cake``.
- ``Px``:          an ipyparallel cluster with one engine, driven through ``%%px`` in the same shell.
- ``PlainKernel``: a stock ipykernel started by ``jupyter_client.manager.start_new_kernel`` and driven
                   with its ``BlockingKernelClient`` (execute, then read iopub until the kernel is idle).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

IOPUB_TIMEOUT_S = 60.0


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child counts as gone and is reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat.rpartition(")")[2].split()[0] == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def stop_process_group(pid: int, grace_s: float = 5.0) -> bool:
    """SIGTERM ``pid`` (a nanny: it stops its kernel), then SIGKILL its process group. True if it was alive."""
    if not _alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return True


def cake_shell() -> Any:
    """The (test) IPython shell every benchmark drives, with jupyter_cake's magics loaded."""
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "jupyter_cake")
    return ip


class Cake:
    def __init__(self, ip: Any, data_dir: Path | None = None) -> None:
        self.ip = ip
        self.data_dir = data_dir
        # Nanny processes that were still running after `%cake down` said the session was down.
        self.leaked_after_down = 0

    @property
    def magics(self) -> Any:
        return self.ip.magics_manager.registry.get("CakeMagics")

    def use_new(self) -> None:
        self.ip.run_line_magic("cake", "use local --new")

    def cell(self, code: str, line: str = "") -> Any:
        return self.ip.run_cell_magic("cake", line, code)

    def rtt_blocks(self, lines: Mapping[str, str], samples: Callable[[str], list[float]], n: int, block: int) -> None:
        """Timed `%%cake pass` round trips, ``block`` in a row per session and the sessions taking turns
        (`%cake use LINE` between blocks, untimed), so machine drift hits all alike; until each has had
        ``n``. ``lines`` maps a row's label to its session's `%cake use` line; ``samples(label)`` is the
        list the label's seconds go to."""
        done = 0
        while done < n:
            for label, line in lines.items():
                self.ip.run_line_magic("cake", f"use {line}")
                out = samples(label)
                for _ in range(block):
                    t0 = time.perf_counter()
                    self.cell("pass")
                    out.append(time.perf_counter() - t0)
            done += block

    def down(self) -> None:
        """`%cake down` for the current session, then make sure its nanny really stopped.

        Guard against a bug seen up to commit bc535d9 (fixed in e6baeef): `%cake down` of a session
        started in this process read the nanny pid from the in-memory SessionRow, whose ``allocation``
        was never updated after the start (it stayed "{}"), so nothing was signalled and the nanny +
        kernel kept running while the store marked the session stopped. If that ever happens again we
        stop the leftovers ourselves (untimed) and count them; the count is printed under the table."""
        handle = self.magics.current if self.magics is not None else None
        pid = handle.allocation.data.get("pid") if handle is not None else None
        self.ip.run_line_magic("cake", "down")
        if pid and stop_process_group(int(pid)):
            self.leaked_after_down += 1

    def down_all(self) -> None:
        try:
            if self.magics is not None and self.magics.current is not None:
                self.down()
            self.ip.run_line_magic("cake", "down --all")
        finally:
            self.sweep()

    def sweep(self) -> int:
        """Stop every nanny whose session directory lies in our (temporary) data dir; returns how many."""
        if self.data_dir is None:
            return 0
        stopped = 0
        for info in sorted((self.data_dir / "sessions").glob("*/nanny.json")):
            try:
                data = json.loads(info.read_text())
            except (OSError, ValueError):
                continue
            for key in ("pid", "kernel_pid"):
                pid = data.get(key)
                if pid and stop_process_group(int(pid)) and key == "pid":
                    stopped += 1
        return stopped

    @property
    def live(self) -> bool:
        return self.magics is not None and self.magics.current is not None


class Px:
    """One ipyparallel cluster (controller + 1 engine) and a client whose %px magics are active."""

    def __init__(self, ip: Any) -> None:
        import ipyparallel as ipp

        self.ip = ip
        self.cluster = ipp.Cluster(n=1, log_level=logging.WARNING)
        self.rc: Any = None
        self.dv: Any = None

    def start(self) -> None:
        self.rc = self.cluster.start_and_connect_sync()
        self.rc.activate()  # registers %px / %%px on get_ipython(), i.e. self.ip
        self.dv = self.rc[:]

    def cell(self, code: str) -> Any:
        return self.ip.run_cell_magic("px", "", code)

    def push(self, name: str, value: Any) -> None:
        self.dv.push({name: value}, block=True)

    def pull(self, name: str) -> Any:
        return self.dv.pull(name, block=True)

    def forget(self) -> None:
        """Drop cached results in the client and the hub's result DB (untimed housekeeping)."""
        try:
            self.rc.purge_everything()
        except Exception:  # noqa: BLE001 - only housekeeping
            self.rc.purge_local_results("all")

    def stop(self) -> None:
        try:
            if self.rc is not None:
                self.rc.close()
        finally:
            self.cluster.stop_cluster_sync()


class PlainKernel:
    """A stock ipykernel (default 0.2 s stdout batching) driven over the Jupyter protocol."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(startup_timeout=120)

    def execute(self, code: str, on_iopub: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Execute ``code``; return after the kernel reported idle for it and its reply arrived."""
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + IOPUB_TIMEOUT_S
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if on_iopub is not None:
                on_iopub(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        if reply["content"].get("status") != "ok":
            c = reply["content"]
            raise RuntimeError(f"plain kernel: {c.get('ename')}: {c.get('evalue')}")
        return reply

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

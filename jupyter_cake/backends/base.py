"""The backend interface: the seam between the session engine and the places code runs.

A backend turns a Target into a running nanny and gives the engine local endpoints to reach it:

    allocate(target) -> Allocation        hold resources (a subprocess slot, a Slurm job, a pod, a cluster)
    start_nanny(allocation) -> NannyInfo  start the nanny inside it; it reports the kernel's connection info
    open_channel(allocation, info)        local endpoints (tunnels where needed) for the Jupyter protocol
    status / logs / cancel / release      lifecycle
    intent(target, session_dir) -> dict   what will name the allocation, stored before allocate() runs
    price_per_hour(target)                where a catalog knows it

Backends are registered under the entry point group ``jupyter_cake.backends`` so third parties can add
their own; ``jupyter_cake.backends.get_backend`` loads them lazily.
"""

from __future__ import annotations

import abc
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target


class Progress(Protocol):
    """Where a backend reports what it is doing while a session starts. ``transient`` messages
    (e.g. "job 42 PENDING (Resources), 12 s") replace each other in place; others stay."""

    def __call__(self, text: str, transient: bool = False) -> None: ...


def no_progress(text: str, transient: bool = False) -> None:
    """A Progress that discards everything."""

# A session nobody asked to keep stops after this long without execution or client requests, so a
# forgotten notebook never holds a GPU (or this machine's memory) forever. `--idle-minutes` overrides.
DEFAULT_IDLE_MINUTES = 120.0


def idle_minutes(target: Target) -> float:
    return DEFAULT_IDLE_MINUTES if target.idle_minutes is None else target.idle_minutes


@dataclass
class Allocation:
    """What a backend holds for one session; ``data`` is JSON-serialisable and kept in the store."""

    backend: str
    session_dir: Path
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class NannyInfo:
    """What the nanny reported: the kernel's connection info (with the key) and its own control port."""

    connection: dict[str, Any]
    nanny_port: int
    pid: int
    kernel_pid: int
    host: str = ""
    plaintext: str | None = None  # why the session's sockets are not encrypted (nanny/curve.py), if not

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> NannyInfo:
        return cls(
            connection=dict(report["connection"]),
            nanny_port=int(report["nanny_port"]),
            pid=int(report["pid"]),
            kernel_pid=int(report["kernel_pid"]),
            host=str(report.get("host", "")),
            plaintext=report.get("plaintext"),
        )

    def to_report(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "nanny_port": self.nanny_port,
            "pid": self.pid,
            "kernel_pid": self.kernel_pid,
            "host": self.host,
            "plaintext": self.plaintext,
        }


KERNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def forwarded_endpoints(
    info: NannyInfo, data: dict[str, Any], fresh: bool = False
) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """For a channel that forwards the kernel's five ports and the nanny's to this machine's loopback:
    the connection dict to use here and the (local, remote) port pairs, nanny last. The local ports are
    kept in ``data`` so a re-attach binds the same ones (unless ``fresh``: they may be taken by now)."""
    from jupyter_cake.nanny.nanny import free_ports

    remote_ports = [int(info.connection[name]) for name in KERNEL_PORTS] + [info.nanny_port]
    local_ports = data.get("local_ports")
    if fresh or not local_ports:
        local_ports = free_ports("127.0.0.1", len(remote_ports))
    data["local_ports"] = local_ports
    connection = dict(info.connection, ip="127.0.0.1", **dict(zip(KERNEL_PORTS, local_ports)))
    return connection, list(zip(local_ports, remote_ports))


@dataclass
class Channel:
    """Local endpoints: ``connection`` is a Jupyter connection dict whose ip/ports are reachable here."""

    connection: dict[str, Any]
    nanny_url: str

    def close(self) -> None:
        """Tear down tunnels, if the backend opened any."""

    def forward(self, remote_port: int) -> int:
        """A local port that reaches ``remote_port`` on the session's node loopback (e.g. Ray's
        dashboard). The same machine: the port itself; backends with tunnels override this."""
        return remote_port

    def repair(self) -> bool:
        """Make sure the transport stands, re-establishing it if it dropped (e.g. an SSH master and its
        forwards). True if it stands now, so a ping is worth trying; False if it could not be brought
        back (yet). Called again and again, with backoff, while a session can't be reached: it must be
        idempotent and must not raise. A direct connection (this machine's loopback) has nothing to
        repair: True."""
        return True


class Backend(abc.ABC):
    name: ClassVar[str]
    # How long a session start may take when the user gave no --timeout: seconds for a subprocess or
    # a Slurm job, much longer for a cloud launch (SkyPilot overrides it).
    start_timeout: ClassVar[float] = 120.0
    # Whether the nanny this backend starts runs add-on services beside the kernel (NodePlan: the
    # nanny's --service arguments, and batch lines where the backend writes a batch script).
    runs_node_services: ClassVar[bool] = False
    # Whether the session runs in the container image a target names (--image); where it can't, --image
    # is refused rather than silently ignored.
    runs_images: ClassVar[bool] = False

    def intent(self, target: Target, session_dir: Path) -> dict[str, Any]:
        """What will identify this session's allocation, known before ``allocate`` holds anything (a
        Slurm job name and its login node, a Pod's name and cluster). The engine stores it in the
        session row first, so that when the starting process dies half-way (kill -9, a second Ctrl-C,
        a timed-out SSH call whose sbatch went through), ``release`` of an Allocation holding only this
        data still finds what was created and frees it. No side effects. Backends whose ``release``
        finds everything from the session directory alone (local) need none."""
        return {}

    @abc.abstractmethod
    def allocate(self, target: Target, session_dir: Path, progress: Progress) -> Allocation:
        """Hold resources for a session; ``data`` starts from ``intent``. If it raises, it leaves
        nothing held (what it may have created is freed before the error propagates)."""

    @abc.abstractmethod
    def start_nanny(
        self, allocation: Allocation, target: Target, progress: Progress, timeout: float
    ) -> NannyInfo: ...

    @abc.abstractmethod
    def open_channel(self, allocation: Allocation, info: NannyInfo) -> Channel: ...

    @abc.abstractmethod
    def status(self, allocation: Allocation) -> str:
        """One of: pending, running, stopped."""

    @abc.abstractmethod
    def logs(self, allocation: Allocation) -> str: ...

    @abc.abstractmethod
    def release(self, allocation: Allocation) -> None:
        """Free everything the allocation holds; safe to call twice. Also given partial data (only
        ``intent``'s, from a start that was cut short): then it finds what exists by name or session
        directory, and frees that."""

    def cancel(self, allocation: Allocation) -> None:
        """Give up an allocation that is still pending; by default the same as release."""
        self.release(allocation)

    def price_per_hour(self, target: Target) -> float | None:
        return None

    def describe(self, allocation: Allocation) -> str:
        """Where the session runs, for status tables (job id, node, pod...)."""
        return ""

    def ended_reason(self, allocation: Allocation) -> str | None:
        """Why a session is gone, as the nanny recorded it (state.json in the session directory)."""
        try:
            reason = json.loads((allocation.session_dir / "state.json").read_text()).get("reason")
        except (OSError, ValueError):
            return None
        return str(reason) if reason else None


def remote_end_reason(run: Callable[[list[str], float], subprocess.CompletedProcess[Any]], session_remote: str) -> str | None:
    """Why the nanny stopped, from the state.json it left in ``session_remote`` on a cluster, read with
    ``run(argv, timeout)`` (a remote shell); None when it left no reason or the cluster can't be reached."""
    try:
        done = run(["cat", f"{session_remote}/state.json"], 20)
        if done.returncode == 0 and done.stdout.strip():
            reason = json.loads(done.stdout).get("reason")
            return str(reason) if reason else None
    except (CakeError, subprocess.TimeoutExpired, ValueError):
        pass
    return None

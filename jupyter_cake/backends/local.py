"""The embedded default target ``local``: the nanny as a subprocess on this machine.

No cluster and no setup, so it works in Binder, CI and on a laptop. The kernel listens on loopback only.
The nanny runs in its own process group so a restart (or Ctrl-C) of the notebook kernel that started it
leaves the session alive for re-attachment.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from jupyter_cake.addons import node_plan
from jupyter_cake.backends.base import Allocation, Backend, Channel, NannyInfo, Progress, idle_minutes
from jupyter_cake.errors import CakeError
from jupyter_cake.nanny import groups
from jupyter_cake.procs import pid_alive
from jupyter_cake.targets import Target

# Popen objects of nannies this process started, so finished ones are reaped instead of left as zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None  # also reaps it, so a finished nanny is no zombie
    return pid_alive(pid)


def _nanny_of(session_dir: Path) -> int | None:
    """The pid of the nanny running for ``session_dir``, found by its command line: what identifies a
    local allocation whose pid never reached the store (its starting process was killed)."""
    wanted = ["-m", "jupyter_cake.nanny", "--session-dir", str(session_dir)]
    if not Path("/proc").is_dir():
        return None  # not Linux: only a recorded pid finds the nanny
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # it just exited
            continue
        if argv[1:5] == wanted and pid_alive(int(proc.name)):
            return int(proc.name)
    return None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _local_gpu_count() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


class LocalBackend(Backend):
    name = "local"
    runs_node_services = True

    def allocate(self, target: Target, session_dir: Path, progress: Progress) -> Allocation:
        if target.nodes > 1:
            raise CakeError(
                f"The local target runs on this one machine, but --nodes {target.nodes} was asked for. "
                "Drop --nodes, or use a cluster target such as slurm/<cluster>."
            )
        if target.gpus is not None:
            have = _local_gpu_count()
            if have < target.gpus.count:
                raise CakeError(
                    f"--gpus {target.gpus.name or ''}{':' if target.gpus.name else ''}{target.gpus.count} was asked "
                    f"for on the local target, but this machine has {have} GPU(s). Drop --gpus, or pick a GPU target."
                )
        if target.cpus is not None or target.memory is not None:
            progress("note: --cpus and --memory are not enforced on the local target")
        if target.workdir and not Path(target.workdir).expanduser().is_dir():
            raise CakeError(f"--workdir {target.workdir!r} is not a directory on this machine. Create it or fix the path.")
        return Allocation(backend=self.name, session_dir=session_dir)

    def start_nanny(self, allocation: Allocation, target: Target, progress: Progress, timeout: float) -> NannyInfo:
        token = secrets.token_hex(16)
        env = dict(os.environ, **target.env_dict(), CAKE_RESPONSE_TOKEN=token)
        if target.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(target.gpus.count))
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            argv = [
                sys.executable, "-m", "jupyter_cake.nanny",
                "--session-dir", str(allocation.session_dir),
                "--response-address", f"127.0.0.1:{port}",
                "--idle-minutes", str(idle_minutes(target)),
            ]  # fmt: skip
            if target.workdir:
                argv += ["--workdir", str(Path(target.workdir).expanduser())]
            argv += node_plan(target).nanny_args()  # add-on services (e.g. a Ray head) beside the kernel
            log_path = allocation.session_dir / "nanny.log"
            with open(log_path, "ab") as log:
                nanny = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # survive the notebook kernel's restart and its Ctrl-C
                )  # fmt: skip
            _children[nanny.pid] = nanny
            allocation.data["pid"] = nanny.pid
            report = self._await_report(listener, nanny, token, timeout, log_path)
        return NannyInfo.from_report(report)

    @staticmethod
    def _await_report(
        listener: socket.socket, nanny: subprocess.Popen[bytes], token: str, timeout: float, log_path: Path
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        listener.settimeout(0.05)
        while time.monotonic() < deadline:
            if nanny.poll() is not None:
                raise CakeError(
                    f"The session's nanny exited with code {nanny.returncode} before it started the kernel. "
                    f"Its log ({log_path}):\n{_tail(log_path)}"
                )
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            report: dict[str, object] = json.loads(data or b"{}")
            if secrets.compare_digest(str(report.pop("token", "")), token):
                return report
        nanny.kill()
        raise CakeError(
            f"The local kernel did not start within {timeout:g} s. Its log ({log_path}):\n{_tail(log_path)}"
        )

    def open_channel(self, allocation: Allocation, info: NannyInfo) -> Channel:
        # Same machine: the kernel's own loopback ports are the channel.
        return Channel(connection=info.connection, nanny_url=f"tcp://127.0.0.1:{info.nanny_port}")

    def describe(self, allocation: Allocation) -> str:
        pid = allocation.data.get("pid")
        return f"pid {pid} on this machine" if pid else ""

    @staticmethod
    def _pid(allocation: Allocation) -> int | None:
        """The nanny's pid: recorded once it reported, else (a start cut short) found by session directory."""
        pid = allocation.data.get("pid")
        return int(pid) if pid else _nanny_of(allocation.session_dir)

    def status(self, allocation: Allocation) -> str:
        pid = self._pid(allocation)
        return "running" if pid and _pid_alive(pid) else "stopped"

    def logs(self, allocation: Allocation) -> str:
        parts = [_tail(allocation.session_dir / name, 200) for name in ("nanny.log", "kernel.log")]
        return "\n".join(p for p in parts if p)

    def release(self, allocation: Allocation) -> None:
        try:
            self._stop_nanny(allocation)
        finally:  # services in groups of their own (a Ray head) go too, also when the nanny died first
            groups.stop_recorded(allocation.session_dir)

    def _stop_nanny(self, allocation: Allocation) -> None:
        pid = self._pid(allocation)
        if not pid or not _pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)  # the nanny stops its kernel and writes its final state
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.02)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child = _children.pop(pid, None)
        if child is not None:
            child.wait()

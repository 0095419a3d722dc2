"""Direct Slurm backend: ``slurm/<cluster>[/<partition>]``.

``<cluster>`` is an SSH host alias of a login node (from ~/.ssh/config, or the target option
``ssh_config``), or this machine when it is itself a Slurm login node (cluster ``local``/``localhost``,
the option ``login = "local"``, or the name of the local Slurm cluster with ``sbatch`` on PATH).

One sbatch allocation per session; the nanny runs in it as a job step (srun), shipped inside the batch
script, so the node needs only Python with ipykernel and cloudpickle. The kernel listens on the node's
loopback; the Jupyter protocol reaches it through SSH port forwards over one multiplexed connection,
to the login node when the job runs there, else to the compute node with the login node as jump host.
The nanny cancels its own job when idle (SkyPilot cannot autostop Slurm without containers).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_cake.backends.base import Allocation, Backend, Channel, NannyInfo, Progress, forwarded_endpoints, idle_minutes, remote_end_reason
from jupyter_cake.backends.slurm.script import JobSpec, env_upload, job_name, job_spec, nanny_archive, render
from jupyter_cake.errors import CakeError
from jupyter_cake.nanny.nanny import free_ports
from jupyter_cake.ssh import SSHConnection
from jupyter_cake.targets import Target

POLL_S = 0.25
PENDING_TIMEOUT_S = 600.0  # how long `%cake use` waits in the queue unless --timeout says otherwise
RELEASE_WAIT_S = 15.0  # how long release waits for a cancelled job to leave the queue


class Shell:
    """Runs argv on the login node: over SSH, or on this machine when it is the login node."""

    def __init__(self, data: dict[str, Any], session_key: str) -> None:
        self.local = data["login"] == "local"
        self.host = data["login"]
        self.ssh = None if self.local else SSHConnection(self.host, session_key, data.get("ssh_config"))

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60,
            then: Sequence[str] | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        if self.ssh is not None:
            return self.ssh.run(argv, input=input, timeout=timeout, then=then)
        # Like an SSH login: relative paths (the session directory) are relative to the home directory.
        feed: dict[str, Any] = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        home = Path.home()
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout, cwd=home, **feed)
        if then is not None and done.returncode == 0:
            done = subprocess.run(list(then), capture_output=True, timeout=timeout, cwd=home, **feed)
        return done

    def text(self, argv: Sequence[str], timeout: float = 60) -> str:
        done = self.run(argv, timeout=timeout)
        return done.stdout.decode(errors="replace") if done.returncode == 0 else ""


class SlurmChannel(Channel):
    """Local ports forwarded through SSH to the node's loopback; repairable if the master drops."""

    def __init__(self, connection: dict[str, Any], nanny_url: str, ssh: SSHConnection | None,
                 forwards: list[tuple[int, int]]) -> None:  # fmt: skip
        super().__init__(connection, nanny_url)
        self.ssh = ssh
        self.forwards = forwards

    def establish(self, reattach: bool = False) -> None:
        """Start the master if needed and add the forwards. On re-attach to a master that is still up
        (another process of this user opened it) the forwards are already there."""
        if self.ssh is None:
            return
        if reattach and self.ssh.alive():
            return
        self.ssh.start()
        self.ssh.forward(self.forwards)

    def forward(self, remote_port: int) -> int:
        if self.ssh is None:
            return remote_port
        local = free_ports("127.0.0.1", 1)[0]
        self.ssh.forward([(local, remote_port)])
        self.forwards.append((local, remote_port))  # re-established with the others by repair()
        return local

    def repair(self) -> bool:
        """The master and every forward, re-established if they dropped. The forwards are requested
        again also when a master is up: another command (``status``'s squeue) may have started a fresh
        master, without them; OpenSSH answers a forward it already has with success."""
        if self.ssh is None:
            return True
        try:
            if not self.ssh.alive():  # (re)checked: a master killed under us still looks up to start()
                self.ssh.start()
            self.ssh.forward(self.forwards)
        except (CakeError, subprocess.TimeoutExpired, OSError):
            return False
        return True


class SlurmBackend(Backend):
    name = "slurm"
    runs_node_services = True

    # -- where the cluster is ------------------------------------------------------------------
    @staticmethod
    def _login(target: Target) -> dict[str, Any]:
        cluster = target.infra_parts[1]
        options = target.options_dict()
        if options.get("login") == "local" or cluster in ("local", "localhost") or _is_local_cluster(cluster):
            return {"login": "local", "cluster": cluster}
        return {"login": options.get("login", cluster), "cluster": cluster, "ssh_config": options.get("ssh_config")}

    # -- allocation ---------------------------------------------------------------------------------
    def intent(self, target: Target, session_dir: Path) -> dict[str, Any]:
        # The job's name is fixed before sbatch runs: a job Slurm accepted while the starter died (or its
        # SSH call timed out) is found by it, and cancelled.
        session_id = session_dir.name
        return dict(self._login(target), job_name=job_name(session_id), session_remote=JobSpec(session_id).session_dir)

    def allocate(self, target: Target, session_dir: Path, progress: Progress) -> Allocation:
        session_id = session_dir.name
        spec = job_spec(target, session_id, idle_minutes(target))
        archive, archive_hash = nanny_archive()
        script = render(spec, archive, archive_hash).encode()
        data = self.intent(target, session_dir)
        data.update(partition=spec.partition or "", gres=spec.gres or "")
        allocation = Allocation(self.name, session_dir, data)
        shell = Shell(data, session_id)
        where = "this machine" if shell.local else repr(shell.host)
        progress(f"submitting a Slurm job on {where}", transient=True)
        if shell.local and not shutil.which("sbatch"):
            raise CakeError("sbatch is not on PATH here. Name the cluster's login node instead: slurm/<ssh-host>[/<partition>].")
        try:
            upload = env_upload(spec)  # --env values: a 0600 file the script sources, never in the script
            if upload is not None:
                done = shell.run(upload[0], input=upload[1], timeout=60)
                if done.returncode != 0:
                    raise CakeError(f"Could not write the session's environment file on {where}: "
                                    f"{done.stderr.decode(errors='replace').strip()}. Check that the home directory is writable.")  # fmt: skip
            done = shell.run(["mkdir", "-p", spec.session_dir], then=["sbatch", "--parsable"], input=script, timeout=120)
            if done.returncode != 0:
                raise CakeError(self._sbatch_error(done.stderr.decode(errors="replace"), spec.gres, shell))
        except BaseException:
            if shell.ssh is not None:
                shell.ssh.close()  # no allocation to release later: don't leave the connection behind
            raise
        data["job_id"] = done.stdout.decode().strip().split(";")[0]
        (session_dir / "job.sbatch").write_bytes(script)  # what was submitted, for the curious
        return allocation

    @staticmethod
    def _sbatch_error(stderr: str, gres: str | None, shell: Shell) -> str:
        message = " ".join(line.replace("sbatch: error:", "").strip() for line in stderr.strip().splitlines())
        fix = "check the partition, resources and account of the target."
        if "partition" in message.lower():
            partitions = [p.replace("*", " (default)") for p in shell.text(["sinfo", "-h", "-o", "%P"]).split()]
            fix = f"use one of the partitions: {', '.join(partitions) or '(sinfo shows none)'}."
        elif gres and ("node configuration" in message or "gres" in message.lower()):
            offered = sorted(set(shell.text(["sinfo", "-h", "-o", "%G"]).split()) - {"(null)"})
            fix = f"the cluster offers GRES {', '.join(offered) or 'none'}; ask for one of those with --gpus TYPE:N."
        return f"Slurm refused the job: {message}. Fix: {fix}"

    def start_nanny(self, allocation: Allocation, target: Target, progress: Progress, timeout: float) -> NannyInfo:
        data = allocation.data
        shell = Shell(data, allocation.session_dir.name)
        job = data["job_id"]
        started = time.monotonic()
        deadline = started + (timeout or PENDING_TIMEOUT_S)
        state, reason, node = self._queue_state(shell, job)
        while state == "PENDING":
            waited = time.monotonic() - started
            progress(f"Slurm job {job} is PENDING ({reason or 'queued'}), waited {waited:.0f} s", transient=True)
            if time.monotonic() > deadline:
                raise CakeError(
                    f"Slurm job {job} was still PENDING ({reason}) after {waited:.0f} s, so it was cancelled. "
                    "Ask for fewer resources, another partition, or wait longer with --timeout."
                )
            time.sleep(POLL_S)
            state, reason, node = self._queue_state(shell, job)
        if state not in ("RUNNING", "CONFIGURING", "COMPLETING"):
            raise CakeError(self._job_failed(shell, data, state))
        data["node"] = node.split(",")[0]
        data["login_host"] = shell.text(["hostname", "-s"]).strip() if not shell.local else socket.gethostname().split(".")[0]
        progress(f"Slurm job {job} is running on {data['node']}; starting the kernel", transient=True)
        report_path = f"{data['session_remote']}/nanny.json"
        node_shell = self._node_shell(data, allocation.session_dir.name)
        while time.monotonic() < deadline:
            done = node_shell.run(["cat", report_path], timeout=30)
            if done.returncode == 0 and done.stdout.strip():
                return NannyInfo.from_report(json.loads(done.stdout))
            if self._queue_state(shell, job)[0] not in ("RUNNING", "CONFIGURING"):
                raise CakeError(self._job_failed(shell, data, "ended"))
            time.sleep(POLL_S)
        raise CakeError(f"The kernel in Slurm job {job} did not report within {timeout:g} s. {self._job_output(shell, data)}")

    @staticmethod
    def _queue_state(shell: Shell, job: str) -> tuple[str, str, str]:
        """(state, reason, nodes) from squeue; state '' once the job has left the queue."""
        done = shell.run(["squeue", "-h", "-j", job, "-o", "%T|%r|%N"], timeout=30)
        out = done.stdout.decode(errors="replace").strip()
        if done.returncode != 0:
            if b"Invalid job id" in done.stderr:
                return "", "", ""  # Slurm has already forgotten the job
            raise CakeError(f"squeue failed: {done.stderr.decode(errors='replace').strip()}")
        if not out:
            return "", "", ""
        state, reason, nodes = (out.splitlines()[0].split("|") + ["", ""])[:3]
        return state, reason if reason != "None" else "", nodes

    def _job_failed(self, shell: Shell, data: dict[str, Any], state: str) -> str:
        return f"Slurm job {data['job_id']} {state.lower() or 'ended'} before the kernel started. {self._job_output(shell, data)}"

    @staticmethod
    def _job_output(shell: Shell, data: dict[str, Any]) -> str:
        path = f"{data['session_remote']}/slurm-{data['job_id']}.out"
        text = shell.text(["tail", "-n", "20", path]).strip()
        errors = [line.split("cake-error:", 1)[1].strip() for line in text.splitlines() if "cake-error:" in line]
        if errors:
            return errors[-1]
        return f"Job output ({path}):\n{text}" if text else f"The job left no output ({path})."

    @staticmethod
    def _same_host(data: dict[str, Any]) -> bool:
        node = data.get("node", "")
        return node in (data.get("login_host"), "localhost") or (data["login"] == "local" and node == socket.gethostname().split(".")[0])

    def _node_shell(self, data: dict[str, Any], key: str) -> Shell:
        """Commands on the node that runs the nanny: the login shell when it is the same host, else SSH
        to the node with the login node as jump host."""
        if self._same_host(data):
            return Shell(data, key)
        node_data = {"login": data["node"], "ssh_config": data.get("ssh_config")}
        shell = Shell(node_data, key)
        if data["login"] != "local":
            assert shell.ssh is not None
            shell.ssh.jump = data["login"]
        return shell

    # -- channel ------------------------------------------------------------------------------------
    def open_channel(self, allocation: Allocation, info: NannyInfo) -> Channel:
        data = allocation.data
        node_shell = self._node_shell(data, allocation.session_dir.name)
        if node_shell.ssh is None:  # the kernel runs on this very machine: its loopback is ours
            return Channel(connection=info.connection, nanny_url=f"tcp://127.0.0.1:{info.nanny_port}")
        reattach = bool(data.get("local_ports"))
        connection, pairs = forwarded_endpoints(info, data)
        channel = SlurmChannel(connection, f"tcp://127.0.0.1:{pairs[-1][0]}", node_shell.ssh, pairs)
        channel.establish(reattach)
        return channel

    # -- lifecycle ----------------------------------------------------------------------------------
    @staticmethod
    def _find_job(shell: Shell, data: dict[str, Any]) -> str | None:
        """The session's job id: recorded once sbatch answered, else (a start cut short after sbatch
        went through) looked up by the job's name, and then recorded. None: no such job in the queue."""
        if data.get("job_id"):
            return str(data["job_id"])
        if not data.get("job_name"):
            return None  # a row from before job names were recorded
        done = shell.run(["squeue", "-h", "-n", data["job_name"], "-o", "%i"], timeout=30)
        if done.returncode != 0:
            raise CakeError(f"squeue failed: {done.stderr.decode(errors='replace').strip()}")
        jobs = done.stdout.decode(errors="replace").split()
        if jobs:
            data["job_id"] = jobs[0]
        return jobs[0] if jobs else None

    def status(self, allocation: Allocation) -> str:
        if not (allocation.data.get("job_id") or allocation.data.get("job_name")):
            return "stopped"  # nothing was ever submitted under this row's name
        try:
            shell = Shell(allocation.data, allocation.session_dir.name)
            job = self._find_job(shell, allocation.data)
            if not job:
                return "stopped"
            state = self._queue_state(shell, job)[0]
        except (CakeError, subprocess.TimeoutExpired):
            return "unknown"
        return {"PENDING": "pending", "RUNNING": "running", "CONFIGURING": "pending"}.get(state, "stopped")

    def describe(self, allocation: Allocation) -> str:
        data = allocation.data
        parts = [f"job {data.get('job_id', '?')}"]
        if data.get("node"):
            parts.append(f"on {data['node']}")
        if data.get("partition"):
            parts.append(f"({data['partition']})")
        if data.get("gres"):
            parts.append(data["gres"])
        return " ".join(parts)

    def ended_reason(self, allocation: Allocation) -> str | None:
        data = allocation.data
        if not data.get("job_id"):
            return None
        shell = Shell(data, allocation.session_dir.name)
        reason = remote_end_reason(lambda argv, timeout: shell.run(argv, timeout=timeout), data["session_remote"])
        if reason and "SIGTERM" not in reason:
            return f"{reason} (Slurm job {data['job_id']} released)"
        return f"the Slurm allocation (job {data['job_id']}) ended: cancelled, timed out or its node failed"

    def logs(self, allocation: Allocation) -> str:
        data = allocation.data
        remote = data.get("session_remote", "")
        shell = Shell(data, allocation.session_dir.name)
        names = [f"slurm-{data.get('job_id')}.out", "kernel.log"]
        return "\n".join(shell.text(["tail", "-n", "200", f"{remote}/{name}"]) for name in names)

    def release(self, allocation: Allocation) -> None:
        data = allocation.data
        if "login" not in data:
            return  # a start that failed before it knew the cluster: nothing can have been submitted
        shell = Shell(data, allocation.session_dir.name)
        try:
            job = self._find_job(shell, data)
        except (CakeError, subprocess.TimeoutExpired):
            job = None  # unreachable login node: the nanny's idle release still frees the job
        if job:
            try:
                shell.run(["scancel", str(job)], timeout=30)
                # Wait (briefly) until Slurm has really let go, so `squeue` right after shows it gone.
                deadline = time.monotonic() + RELEASE_WAIT_S
                while self._queue_state(shell, str(job))[0] and time.monotonic() < deadline:
                    time.sleep(POLL_S)
            except (CakeError, subprocess.TimeoutExpired):
                pass  # unreachable login node: the nanny's idle release still frees the job
        connections = [shell.ssh]
        if data.get("node"):
            connections.append(self._node_shell(data, allocation.session_dir.name).ssh)
        for ssh in connections:
            if ssh is not None:
                ssh.close()


def _is_local_cluster(name: str) -> bool:
    """True when this machine is a login node of the Slurm cluster called ``name``."""
    if not shutil.which("scontrol"):
        return False
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split("=", 1)[-1].strip() == name for line in out.splitlines() if line.startswith("ClusterName"))

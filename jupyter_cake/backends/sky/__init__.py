"""SkyPilot backend: any infra SkyPilot launches (clouds, ``k8s/<ctx>``, ``slurm/<cluster>/<partition>``).

SkyPilot provisions; Cake keeps the interactive part. ``sky.launch`` brings up a cluster whose job is
the session's nanny (autodown once the nanny has ended and the cluster sat idle); the Jupyter protocol
then travels over SSH with SkyPilot's own key and user, so a warm cell costs milliseconds instead of
the 12-17 s of ``sky exec``; the nodes' host keys are pinned per session (remote.py). SkyPilot's SDK
runs only in the bridge process (bridge.py), never here.

Which targets come here: every cloud and ``ssh/`` pool; ``slurm/`` and ``k8s/`` when the target says
``--via sky`` (or ``via = "sky"`` in targets.toml) or names a SkyPilot task YAML (``--task``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyter_cake.backends.base import Allocation, Backend, Channel, NannyInfo, Progress, forwarded_endpoints, idle_minutes, remote_end_reason
from jupyter_cake.backends.sky import bridge, remote
from jupyter_cake.backends.sky.errors import explain
from jupyter_cake.backends.sky.resources import autostop_minutes, cluster_name, task_spec
from jupyter_cake.backends.slurm import SlurmChannel
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target

CALL_TIMEOUT_S = 90.0  # status / logs / job status: the API server answers these in about a second
LAUNCH_TIMEOUT_S = 1800.0  # clouds can take many minutes; --timeout overrides
DOWN_TIMEOUT_S = 300.0
PLAN_TIMEOUT_S = 180.0
POLL_S = 0.25
JOB_CHECK_S = 5.0  # how often, while waiting for the kernel, SkyPilot is asked whether the job failed
FAILED_JOB_STATES = ("FAILED", "FAILED_SETUP", "FAILED_DRIVER", "CANCELLED", "SUCCEEDED")


class PinnedChannel(SlurmChannel):
    """The Slurm backend's SSH channel, except that a refused host key is raised from ``repair`` (the
    cell shows why) instead of being taken for a dropped link that simply could not be re-opened."""

    def repair(self) -> bool:
        repaired = super().repair()
        if isinstance(self.ssh, remote.PinnedSSH) and self.ssh.refused is not None:
            raise self.ssh.refused
        return repaired


class SkyBackend(Backend):
    name = "sky"
    start_timeout = LAUNCH_TIMEOUT_S
    runs_images = True  # SkyPilot's image_id (docker:IMAGE where the infra takes one)

    @staticmethod
    def _python(target: Target | None = None, data: dict[str, Any] | None = None) -> str:
        option = target.options_dict().get("sky_python") if target is not None else (data or {}).get("sky_python")
        return bridge.sky_python(option)

    def preflight(self, target: Target) -> None:
        """Offline checks for front doors that can't show a progress line later (kernelspec install):
        SkyPilot is installed, and the resources map onto SkyPilot's."""
        self._python(target)
        task_spec(target, target.name or "preflight")
        if target.cloud == "k8s":
            raise CakeError(
                "Kubernetes through SkyPilot is not supported for sessions yet: SkyPilot reaches pods with kubectl, "
                "not SSH, which Cake's channel uses. Use Cake's direct Kubernetes backend: drop --via sky (and --task)."
            )

    # -- allocation: cheap bookkeeping; the launch happens in start_nanny, under the start deadline ------
    def allocate(self, target: Target, session_dir: Path, progress: Progress) -> Allocation:
        session_id = session_dir.name
        options = target.options_dict()
        self.preflight(target)  # fails now, clearly, when SkyPilot is not installed
        python = self._python(target)
        cluster = cluster_name(target, target.name or "")
        spec = task_spec(target, target.name or session_id,
                         run=remote.run_command(session_id, options.get("python", "python3"), idle_minutes(target), target.workdir))  # fmt: skip
        (session_dir / "task.json").write_text(json.dumps(spec))  # what was launched, for the curious
        data = {"cluster": cluster, "sky_python": python, "infra": target.infra, "keep_cluster": False}
        return Allocation(self.name, session_dir, data)

    def start_nanny(self, allocation: Allocation, target: Target, progress: Progress, timeout: float) -> NannyInfo:
        data = allocation.data
        deadline = time.monotonic() + timeout
        spec = json.loads((allocation.session_dir / "task.json").read_text())
        cluster = data["cluster"]
        progress(f"SkyPilot cluster {cluster} on {target.infra}: launching, or re-using it if it is up (log follows)", transient=True)
        started = time.monotonic()
        try:
            result = bridge.call(
                "launch", {"cluster": cluster, "spec": spec, "autostop_minutes": autostop_minutes(idle_minutes(target))},
                timeout=timeout, python=data["sky_python"], what=f"Launching SkyPilot cluster {cluster}",
                on_log=lambda text: progress(f"sky: {text}", transient=True),
            )  # fmt: skip
        except bridge.BridgeError as exc:
            data["keep_cluster"] = True  # the bridge removed what the failed launch made (or it pre-existed)
            raise explain(exc, target, f"launch SkyPilot cluster {cluster} on {target.infra}") from None
        data.update(job_id=result["job_id"], ssh=result["ssh"], price_per_hour=result.get("price_per_hour"),
                    resources=result.get("resources", ""), keep_cluster=False, reused=result.get("reused", False),
                    launch_s=round(time.monotonic() - started, 1))  # fmt: skip
        remote.pin_host_keys(allocation.session_dir, cluster, reused=data["reused"])  # before the first connection
        verb = "re-used" if data["reused"] else "launched"
        progress(f"SkyPilot cluster {cluster} {verb} in {data['launch_s']:.0f} s ({data['resources']}); starting the kernel")
        return self._wait_for_nanny(allocation, deadline)

    def _wait_for_nanny(self, allocation: Allocation, deadline: float) -> NannyInfo:
        data = allocation.data
        ssh_info = data["ssh"]
        remote.write_ssh_config(allocation.session_dir, ssh_info)
        login = remote.PinnedSSH(remote.LOGIN_ALIAS, allocation.session_dir, data["cluster"])
        node = ssh_info.get("slurm_node")
        if node and ssh_info.get("runner") == "SlurmCommandRunner":
            login_host = login.run(["hostname", "-s"], timeout=30).stdout.decode().strip()
            if node not in (login_host, "localhost"):
                login.close()
                remote.write_ssh_config(allocation.session_dir, ssh_info, node=node)
        sub = remote.session_subdir(allocation.session_dir.name)
        # Slurm: the job's HOME is SkyPilot's per-cluster directory on the shared file system.
        data["session_remote"] = f"{ssh_info['sky_dir']}/{sub}" if ssh_info.get("sky_dir") else sub
        head = self._head(allocation)
        report, failed = f"{data['session_remote']}/nanny.json", f"{data['session_remote']}/failed"
        next_job_check = time.monotonic() + JOB_CHECK_S
        while time.monotonic() < deadline:
            done = head.run(["sh", "-c", 'cat "$1" 2>/dev/null || { cat "$2" >&2 2>/dev/null; exit 1; }', "sh", report, failed], timeout=30)  # fmt: skip
            if done.returncode == 0 and done.stdout.strip():
                return NannyInfo.from_report(json.loads(done.stdout))
            if b"cake-error:" in done.stderr:
                raise CakeError(done.stderr.decode(errors="replace").split("cake-error:", 1)[1].strip())
            if time.monotonic() > next_job_check:
                self._check_job(data)
                next_job_check = time.monotonic() + JOB_CHECK_S
            time.sleep(POLL_S)
        raise CakeError(f"The kernel on SkyPilot cluster {data['cluster']} did not report in time. {self._job_log(data)}")

    def _check_job(self, data: dict[str, Any]) -> None:
        """The job failed before the nanny reported (e.g. the task's setup failed): say why."""
        try:
            status = bridge.call("job_status", {"cluster": data["cluster"], "job_id": data["job_id"]},
                                 timeout=CALL_TIMEOUT_S, python=data["sky_python"])["status"]  # fmt: skip
        except bridge.BridgeError:
            return  # a slow answer is not a failure; the deadline still holds
        if status in FAILED_JOB_STATES:
            what = "its setup failed" if status == "FAILED_SETUP" else f"it ended ({status})"
            raise CakeError(f"The session's SkyPilot job {data['job_id']} on {data['cluster']}: {what} before the kernel started. {self._job_log(data)}")

    def _job_log(self, data: dict[str, Any]) -> str:
        try:
            text = bridge.call("logs", {"cluster": data["cluster"], "job_id": data["job_id"], "tail": 30},
                               timeout=CALL_TIMEOUT_S, python=data["sky_python"])["text"]  # fmt: skip
        except bridge.BridgeError as exc:
            return f"(its log could not be read: {exc})"
        return f"Its log (sky logs {data['cluster']} {data['job_id']}):\n{text.strip()}" if text.strip() else ""

    @staticmethod
    def _head(allocation: Allocation) -> remote.PinnedSSH:
        remote.upgrade_ssh_config(allocation.session_dir)
        return remote.PinnedSSH(remote.HOST_ALIAS, allocation.session_dir, allocation.data.get("cluster", "?"))

    # -- channel ------------------------------------------------------------------------------------------
    def open_channel(self, allocation: Allocation, info: NannyInfo) -> Channel:
        data = allocation.data
        reattach = bool(data.get("local_ports"))
        connection, pairs = forwarded_endpoints(info, data)
        channel = PinnedChannel(connection, f"tcp://127.0.0.1:{pairs[-1][0]}", self._head(allocation), pairs)
        channel.establish(reattach)
        return channel

    # -- lifecycle ----------------------------------------------------------------------------------------
    def status(self, allocation: Allocation) -> str:
        data = allocation.data
        if not data.get("job_id"):
            return "stopped" if data.get("keep_cluster") else "pending"
        try:
            state = bridge.call("status", {"cluster": data["cluster"]}, timeout=CALL_TIMEOUT_S,
                                python=data.get("sky_python"))["status"]  # fmt: skip
        except CakeError:
            return "unknown"
        return {"UP": "running", "INIT": "pending"}.get(state or "", "stopped")

    def describe(self, allocation: Allocation) -> str:
        data = allocation.data
        parts = [f"SkyPilot cluster {data.get('cluster', '?')}"]
        if data.get("job_id") is not None:
            parts.append(f"job {data['job_id']}")
        if data.get("resources"):
            parts.append(str(data["resources"]))
        return ", ".join(parts)

    def ended_reason(self, allocation: Allocation) -> str | None:
        data = allocation.data
        if not data.get("session_remote"):
            return None
        reason = remote_end_reason(lambda argv, timeout: self._head(allocation).run(argv, timeout=timeout), data["session_remote"])
        if reason:
            return f"{reason} (SkyPilot cluster {data['cluster']})"
        return f"the SkyPilot cluster {data['cluster']} is gone (autodown after idle, or removed with sky down)"

    def logs(self, allocation: Allocation) -> str:
        data = allocation.data
        parts = [self._job_log(data)] if data.get("job_id") is not None else []
        if data.get("session_remote"):
            try:
                done = self._head(allocation).run(["tail", "-n", "200", f"{data['session_remote']}/kernel.log"], timeout=30)
                parts.append(done.stdout.decode(errors="replace"))
            except (CakeError, subprocess.TimeoutExpired):
                pass
        return "\n".join(parts)

    def release(self, allocation: Allocation) -> None:
        """``%cake down``: the SkyPilot cluster goes (sky down), not only the kernel."""
        data = allocation.data
        if (allocation.session_dir / "ssh_config").exists():
            self._head(allocation).close()
            remote.PinnedSSH(remote.LOGIN_ALIAS, allocation.session_dir, data.get("cluster", "?")).close()
        if data.get("keep_cluster") or data.get("released"):
            return
        try:
            bridge.call("down", {"cluster": data["cluster"]}, timeout=DOWN_TIMEOUT_S, python=data.get("sky_python"),
                        what=f"Removing SkyPilot cluster {data['cluster']}")  # fmt: skip
        except bridge.BridgeError as exc:
            raise CakeError(f"Could not remove SkyPilot cluster {data['cluster']}: {exc} Run `sky down {data['cluster']}`.") from None
        data["released"] = True

    # -- planning ---------------------------------------------------------------------------------------------
    def plan(self, target: Target, progress: Progress | None = None) -> dict[str, Any]:
        """SkyPilot's optimizer choice for the target and its $/hour (where a catalog knows prices)."""
        spec = task_spec(target, target.name or "plan")
        try:
            return bridge.call("plan", {"spec": spec}, timeout=PLAN_TIMEOUT_S, python=self._python(target),
                               what="Planning with SkyPilot's optimizer")  # fmt: skip
        except bridge.BridgeError as exc:
            raise explain(exc, target, f"plan {target.infra}") from None

"""The Ray head of a session, started by the nanny next to the kernel (stdlib only: it runs on the node).

Ray 2.60 realities handled here, each explicitly rather than by Ray's defaults:

- **Binding.** ``ray start`` resolves 127.0.0.1 to the host's public address and its gRPC servers
  (GCS, raylet) listen on all interfaces. A single-node session runs Ray in its single-node mode
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), where every Ray server listens on loopback only. A
  multi-node session gives the head the node's cluster address (Slurm's NodeAddr), never 0.0.0.0.
  The dashboard listens on the node's loopback in both cases and is reached through the channel.
- **Authentication.** ``RAY_AUTH_MODE=token`` with a per-session token in a 0600 file of the session
  directory, named by ``RAY_AUTH_TOKEN_PATH``; an inherited ``RAY_AUTH_TOKEN`` is dropped and a
  ``~/.ray/auth_token`` is never consulted, so a file left there cannot silently change the mode.
- **Node IP** is passed with ``--node-ip-address``, never guessed by Ray.
- **Usage stats** are off: the session makes no network calls of its own.

Every Ray process of the head is in one process group (``start_new_session``), which is how the
session stops them: ``ray stop`` would kill every Ray on the machine, other users' included.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_cake.nanny.groups import stop_group
from jupyter_cake.nanny.nanny import free_ports
from jupyter_cake.ray import ports, versions

log = logging.getLogger("cake.nanny.ray")

ACTIVITY_POLL_S = 5.0  # how often the head asks Ray whether tasks or jobs are running (idle release)
STOP_GRACE_S = 1.0  # Ray's gcs_server and raylet ignore SIGTERM anyway; the dashboard and agents use it
# The Jobs API and the state API, as the dashboard serves them; both answer in a few ms.
TASKS_SUMMARY = "/api/v0/tasks/summarize"
JOBS = "/api/jobs/"
DONE_STATES = frozenset({"FINISHED", "FAILED"})


class RayHead:
    """The nanny's service for ``--ray`` (jupyter_cake.nanny.services.Service)."""

    kernel_hooks = ("jupyter_cake.ray.kernel_hooks",)  # worker prints must reach their cell

    @property
    def process_group(self) -> int | None:
        """Every Ray process of the head is in this group (``start_new_session``)."""
        return self.proc.pid if self.proc is not None else None

    def __init__(self, session_dir: Path, spec: dict[str, Any], python: str) -> None:
        self.session_dir = session_dir
        self.spec = spec
        self.python = python
        self.dir = session_dir / "ray"
        self.dir.mkdir(mode=0o700, exist_ok=True)
        # Ray's sockets live under the temp dir: keep its path short (Unix sockets stop at 107 bytes).
        self.temp_dir = Path(tempfile.gettempdir()) / f"cake-ray-{session_dir.name}"
        self.token_path = self.dir / "auth_token"
        self.state = "starting"
        self.error: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.ip = ""
        self.dashboard_port = 0
        self.client_port = 0
        self.started = time.time()
        self.ready_at: float | None = None
        self.last_busy = 0.0  # when Ray last had a running task or job (epoch seconds)
        self.cluster_versions: dict[str, Any] = {}
        self._stop = threading.Event()

    # -- start ---------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Check versions, then start ``ray start --head`` in the background; the kernel's environment
        (os.environ, which the kernel inherits) gets RAY_ADDRESS and the auth settings."""
        self.cluster_versions = versions.local_versions()  # the nanny runs the kernel's Python
        if self.spec.get("check", True):
            problem = versions.mismatch(self.spec.get("client") or {}, self.cluster_versions, self.python)
        else:
            problem = None if self.cluster_versions.get("ray") else versions.mismatch({}, self.cluster_versions, self.python)
        if problem:
            self._fail(problem)
            return
        loopback = self.spec.get("mode", "loopback") == "loopback"
        try:
            self.ip = "127.0.0.1" if loopback else ports.cluster_address()
        except (OSError, RuntimeError) as exc:
            self._fail(f"cannot tell this node's cluster address for the Ray head: {exc}")
            return
        if not loopback and self.ip.startswith("127."):
            self._fail(f"this node's cluster address is {self.ip} (loopback), which other nodes cannot reach; "
                       "fix the node's NodeAddr / host name resolution, or use --nodes 1")  # fmt: skip
            return
        (gcs,) = free_ports(self.ip, 1)
        # Every port explicit: Ray's defaults collide between sessions on one node (the agent's 52365),
        # and a dynamically chosen runtime-env agent port reaches Ray Client's proxy as port 0.
        self.dashboard_port, self.client_port, agent, runtime_env = free_ports("127.0.0.1", 4)
        self.address = f"{self.ip}:{gcs}"
        self._write_token()
        env = self._environment(loopback)
        os.environ.update(env)
        os.environ.pop("RAY_AUTH_TOKEN", None)
        argv = [
            self.python, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            f"--node-ip-address={self.ip}", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={self.client_port}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
        ]  # fmt: skip
        cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
        if cpus:
            argv.append(f"--num-cpus={int(cpus)}")  # the allocation's CPUs, not the whole node's
        proc_env = dict(os.environ)
        root = proc_env.pop("CAKE_NANNY_ROOT", None)  # the shipped nanny: not for Ray's workers to see
        if root:
            proc_env["PYTHONPATH"] = os.pathsep.join(p for p in proc_env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root)
        with open(self.dir / "head.log", "ab") as out:
            self.proc = subprocess.Popen(argv, env=proc_env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        log.info("ray head starting at %s (pid %d)", self.address, self.proc.pid)
        threading.Thread(target=self._watch, name="cake-ray-watch", daemon=True).start()

    def _environment(self, loopback: bool) -> dict[str, str]:
        env = {
            "RAY_ADDRESS": self.address,
            "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
            "RAY_USAGE_STATS_ENABLED": "0",
            "CAKE_RAY_TEMP_DIR": str(self.temp_dir),
        }
        if loopback:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's single-node mode: loopback only
        # Ray folds similar worker lines ("task 1", "task 2") into one and prints the repeats up to
        # 5 s later, after the cell has ended. A notebook shows every line unless the user opts in.
        env["RAY_DEDUP_LOGS"] = os.environ.get("RAY_DEDUP_LOGS", "0")
        return env

    def _write_token(self) -> None:
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))

    def _fail(self, message: str) -> None:
        log.error("ray: %s", message)
        self.state, self.error = "failed", message

    # -- readiness and activity ---------------------------------------------------------------------
    def _watch(self) -> None:
        """Background thread: mark the head ready once GCS and the dashboard answer, then poll Ray's
        state API for running tasks and jobs (idle release must not stop a busy cluster)."""
        assert self.proc is not None
        while not self._stop.is_set():
            code = self.proc.poll()
            if code is not None:
                if self.state != "stopped":
                    self._fail(f"the Ray head exited with code {code}. Its log ({self.dir / 'head.log'}):\n{self.log_tail()}")
                return
            if self.state == "starting":
                if (self.temp_dir / "ray_current_cluster").exists() and self._get("/api/version") is not None:
                    self._write_head_file()  # workers on other nodes join from here
                    self.state = "joining"
                self._stop.wait(0.1)
                continue
            if self.state == "joining":
                self._check_workers()
                self._stop.wait(0.25)
                continue
            if self.busy():
                self.last_busy = time.time()
            self._stop.wait(float(self.spec.get("poll_s", ACTIVITY_POLL_S)))

    def _check_workers(self) -> None:
        """Ready once every node of the allocation has joined; a worker that refused to join (its
        versions differ from the head's) fails the session with its own message."""
        for report in sorted(self.dir.glob("worker-*.error")):
            self._fail(report.read_text().strip())
            return
        wanted = int(self.spec.get("nodes", 1))
        joined = (self.resources().get("nodes") or 0) if wanted > 1 else 1
        if joined >= wanted:
            self.state, self.ready_at = "ready", time.time()
            self.last_busy = time.time()  # a fresh cluster counts as activity once
            log.info("ray head ready in %.1f s with %d node(s)", self.ready_at - self.started, joined)

    def _write_head_file(self) -> None:
        """Workers on other nodes wait for this file (the session directory is on the shared home)."""
        tmp = self.dir / "head.json.tmp"
        tmp.write_text(json.dumps({"address": self.address, "versions": self.cluster_versions}))
        tmp.replace(self.dir / "head.json")

    def _get(self, path: str, timeout: float = 2.0) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.dashboard_port}{path}")
        request.add_header("Authorization", f"Bearer {self.token_path.read_text().strip()}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def busy(self) -> bool:
        """True when any task is running or waiting to run anywhere in the cluster, or a submitted job
        is pending/running.
        (The kernel's own driver is always a RUNNING job, so only submitted jobs count.)"""
        summary = self._get(TASKS_SUMMARY)
        try:
            clusters = summary["data"]["result"]["result"]["node_id_to_summary"]
            for per_node in clusters.values():
                for entry in per_node["summary"].values():
                    counts = entry.get("state_counts") or {}
                    if any(n for state, n in counts.items() if state not in DONE_STATES):
                        return True  # running, or waiting for a worker/resources/arguments
        except (KeyError, TypeError, AttributeError):
            pass
        jobs = self._get(JOBS) or []
        return any(j.get("type") == "SUBMISSION" and j.get("status") in ("PENDING", "RUNNING") for j in jobs)

    def resources(self) -> dict[str, Any]:
        """Totals over the cluster's live nodes (the dashboard's node summary) and, once Ray's monitor
        has reported, what is in use (the autoscaler's load report): {"total", "used", "nodes"}."""
        try:
            nodes = [n["raylet"] for n in self._get("/nodes?view=summary")["data"]["summary"]]
        except (KeyError, TypeError):
            return {}
        alive = [n for n in nodes if n.get("state") == "ALIVE"]
        total: dict[str, float] = {}
        for node in alive:
            for name, amount in (node.get("resourcesTotal") or {}).items():
                total[name] = total.get(name, 0.0) + float(amount)
        used: dict[str, float] = {}
        try:
            usage = self._get("/api/cluster_status")["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
            used = {name: float(pair[0]) for name, pair in usage.items()}
        except (KeyError, TypeError, IndexError, ValueError):
            pass
        return {"total": total, "used": used, "nodes": len(alive)}

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.dir / "head.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def status(self, details: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = {
            "state": self.state, "error": self.error, "address": self.address,
            "dashboard_port": self.dashboard_port, "client_port": self.client_port,
            "versions": self.cluster_versions, "started": self.started, "ready_at": self.ready_at,
            "last_busy": self.last_busy, "token_path": str(self.token_path), "temp_dir": str(self.temp_dir),
        }  # fmt: skip
        if details and self.state == "ready":
            info["resources"] = self.resources()
            info["busy"] = self.busy()
        return info

    # -- stop -----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process of this head (its process group), gracefully first; remove its files."""
        self._stop.set()
        if self.proc is None:
            return
        if self.state != "failed":
            self.state = "stopped"
        stop_group(self.proc.pid, STOP_GRACE_S)
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        log.info("ray head stopped")


def start(session_dir: Path, spec_text: str, python: str = sys.executable) -> RayHead:
    """The nanny's entry point (its ``--service ray jupyter_cake.ray.head SPEC``): parse the spec and begin (never raises: failures are reported
    through the nanny's ``ray`` request, where the client turns them into one clear error)."""
    head = RayHead(session_dir, json.loads(spec_text), python)
    try:
        head.begin()
    except Exception as exc:  # noqa: BLE001 - reported to the user by the client, with the reason
        head._fail(f"{type(exc).__name__}: {exc}")
    return head

"""Direct Kubernetes backend: ``k8s[/<context>]``.

One Pod per session (podspec.py) in one namespace; its main process is the nanny, shipped inside the
Pod spec, so any image with python3 + ipykernel + pyzmq + cloudpickle works. While the Pod is Pending
the reason (Unschedulable: Insufficient nvidia.com/gpu, image pull, quota) shows in place with the time
waited (waiting.py); ``--timeout`` bounds the wait, after which the Pod is deleted and the scheduler's
message is the error. The channel is port-forward through the API server (forward.py). The nanny's
idle autostop ends the container (restartPolicy Never), which frees the node's resources at once; the
session's forwarder, or the next Cake command to look, deletes the finished Pod object. RBAC: a Role
in one namespace (rbac.py, README "Kubernetes"). The kubernetes client is only imported when used.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyter_cake.backends.base import (
    Allocation,
    Backend,
    Channel,
    NannyInfo,
    Progress,
    forwarded_endpoints,
    idle_minutes,
)
from jupyter_cake.backends.kubernetes.cluster import Cluster, connect, network_errors, request_timeout, unreachable
from jupyter_cake.backends.kubernetes.forward import (
    ENDED_FILE,
    KubernetesChannel,
    forwarder_pid,
    record_end,
    spawn_forwarder,
    stop_forwarder,
)
from jupyter_cake.backends.kubernetes.podspec import (
    REPORT_PORT,
    build_pod,
    env_secret,
    env_secret_name,
    nanny_archive,
    owner_patch,
    pod_name,
)  # fmt: skip
from jupyter_cake.backends.kubernetes.rbac import api_error, preflight
from jupyter_cake.backends.kubernetes.waiting import pod_state
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target

POLL_S = 0.25
PENDING_TIMEOUT_S = 600.0  # without --timeout
REPORT_TIMEOUT_S = 120.0  # from container start to the kernel's report
RELEASE_WAIT_S = 30.0  # how long release waits for a Pod that still ran to be gone
RELEASE_STOP_WAIT_S = 3.0  # how long release waits for a stopping nanny's container to exit


class KubernetesBackend(Backend):
    name = "kubernetes"
    runs_images = True  # the Pod's container image

    def __init__(self) -> None:
        self._clusters: dict[tuple[str, str, str], Cluster] = {}
        # Forwarders spawned at allocate, by session dir: they load the client while the Pod starts.
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}

    # -- the cluster ------------------------------------------------------------------------------
    def _cluster(self, data: dict[str, Any]) -> Cluster:
        key = (data.get("context", ""), data.get("kubeconfig", ""), data.get("namespace", ""))
        if key not in self._clusters:
            self._clusters[key] = connect(*key)
        return self._clusters[key]

    def _call(self, cluster: Cluster, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException

        try:
            return fn(*args, _request_timeout=request_timeout(), **kwargs)
        except ApiException as exc:
            raise api_error(exc, doing, cluster.namespace, cluster.context or "(current)") from None
        except network_errors() as exc:
            raise unreachable(cluster, exc) from None

    def _read_pod(self, cluster: Cluster, name: str) -> Any | None:
        from kubernetes.client.rest import ApiException

        try:
            return cluster.core.read_namespaced_pod(name, cluster.namespace, _request_timeout=request_timeout())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, f"read the session Pod {name}", cluster.namespace, cluster.context) from None
        except network_errors() as exc:
            raise unreachable(cluster, exc) from None

    # -- allocation -------------------------------------------------------------------------------
    def intent(self, target: Target, session_dir: Path) -> dict[str, Any]:
        # The Pod's name follows from the session id, and the cluster from the target (namespace "" is
        # the context's own): enough for release to delete a Pod whose starter died after creating it.
        # So is the --env Secret's, which exists before the Pod (and without an owner until the Pod is
        # made its owner): a starter killed in between leaves a Secret that only its name can find.
        options = target.options_dict()
        parts = target.infra_parts
        return {
            "context": parts[1] if len(parts) > 1 else "",
            "kubeconfig": options.get("kubeconfig", ""),
            "namespace": options.get("namespace", ""),
            "pod": pod_name(session_dir.name),
            **({"env_secret": env_secret_name(session_dir.name)} if target.env else {}),
        }

    def allocate(self, target: Target, session_dir: Path, progress: Progress) -> Allocation:
        options = target.options_dict()
        data = self.intent(target, session_dir)
        cluster = connect(data["context"], data["kubeconfig"], data["namespace"])
        data["namespace"] = cluster.namespace
        self._clusters[(data["context"], data["kubeconfig"], data["namespace"])] = cluster
        archive, _ = nanny_archive()
        manifest = build_pod(target, session_dir.name, cluster.namespace, idle_minutes(target), archive)
        data["pod"] = manifest["metadata"]["name"]
        gpus = target.gpus
        if gpus is not None and gpus.name and not ({"gpu_label", "gpu_types"} & set(options)):
            progress(f"note: GPU type {gpus.name} is not mapped to nodes (set the target option gpu_label or "
                     "gpu_types); any GPU node will do")  # fmt: skip
        progress(f"checking access to namespace {cluster.namespace} ({cluster.describe()})", transient=True)
        try:
            preflight(cluster.auth, cluster.namespace, env_secret=bool(target.env))
        except network_errors() as exc:
            raise unreachable(cluster, exc) from None
        except CakeError:
            raise
        except Exception as exc:  # noqa: BLE001 - an ApiException from the review itself
            raise api_error(exc, "check Cake's permissions", cluster.namespace, cluster.context) from None
        progress(f"creating Pod {data['pod']} in namespace {cluster.namespace}", transient=True)
        allocation = Allocation(self.name, session_dir, data)
        try:
            self._create_pod(cluster, manifest, env_secret(target, session_dir.name, cluster.namespace))
            spec = dict(manifest, spec={k: v for k, v in manifest["spec"].items()})
            spec["spec"]["containers"] = [dict(c, env=[e for e in c["env"] if e["name"] != "CAKE_NANNY_ARCHIVE"])
                                          for c in manifest["spec"]["containers"]]  # fmt: skip
            (session_dir / "pod.json").write_text(json.dumps(spec, indent=1))  # what was created, minus the archive
            self._spawned[str(session_dir)] = spawn_forwarder(data, session_dir)
        except BaseException:
            # The Pod may exist (created, or a create that timed out after the API server took it)
            # while no Allocation reaches the caller: delete it here, or nobody would.
            try:
                self.release(allocation)
            except Exception:  # noqa: BLE001 - best effort: the error that got us here is the one to report
                pass
            raise
        return allocation

    def _create_pod(self, cluster: Cluster, manifest: dict[str, Any], secret: dict[str, Any] | None) -> None:
        """Create the Pod, and before it the Secret with the --env values (so the container never starts
        without them), then make the Pod the Secret's owner (so it is deleted with the Pod). A failure
        half-way deletes what was made: nothing is left behind, the values least of all."""
        name = manifest["metadata"]["name"]
        if secret is None:
            self._call(cluster, f"create the session Pod {name}", cluster.core.create_namespaced_pod,
                       cluster.namespace, manifest)  # fmt: skip
            return
        secret_name = secret["metadata"]["name"]
        self._call(cluster, f"create the Secret {secret_name} (the --env values)", cluster.core.create_namespaced_secret,
                   cluster.namespace, secret)  # fmt: skip
        pod = None
        try:
            pod = self._call(cluster, f"create the session Pod {name}", cluster.core.create_namespaced_pod,
                             cluster.namespace, manifest)  # fmt: skip
            self._call(cluster, f"make the Pod {name} own the Secret {secret_name}", cluster.core.patch_namespaced_secret,
                       secret_name, cluster.namespace, owner_patch(pod))  # fmt: skip
        except BaseException:
            deletes = [cluster.core.delete_namespaced_secret] + ([cluster.core.delete_namespaced_pod] if pod is not None else [])
            for delete, made in zip(deletes, (secret_name, name)):
                # Best effort: the error that got us here is the one to report.
                with contextlib.suppress(Exception):
                    delete(made, cluster.namespace, grace_period_seconds=0, _request_timeout=request_timeout())
            raise

    def _delete_env_secret(self, data: dict[str, Any]) -> None:
        """Delete the session's --env Secret, if it has one. Once the Pod owns it, deleting the Pod would
        do; but a start killed before that (or an older cluster's slow garbage collector) must not leave
        the values behind. Gone already (404) or the cluster unreachable: nothing to do here now."""
        secret = data.get("env_secret")
        if not secret:
            return
        from kubernetes.client.rest import ApiException

        try:
            cluster = self._cluster(data)
            cluster.core.delete_namespaced_secret(secret, cluster.namespace, _request_timeout=request_timeout())
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"delete the Secret {secret}", data.get("namespace", ""), data.get("context", "")) from None
        except CakeError:
            return  # no cluster to ask (its kubeconfig is gone): the Pod's deletion below says the same
        except network_errors():
            return  # unreachable now: a later `cake down` tries again, the row stays until then

    def start_nanny(self, allocation: Allocation, target: Target, progress: Progress, timeout: float) -> NannyInfo:
        data = allocation.data
        cluster = self._cluster(data)
        name = data["pod"]
        started = time.monotonic()
        deadline = started + (timeout or PENDING_TIMEOUT_S)
        while True:
            state = pod_state(self._read_pod(cluster, name))
            waited = time.monotonic() - started
            if state.fatal:
                raise CakeError(f"The session Pod {name} failed to start: {state.fatal}")
            if state.ready:
                break
            progress(f"Pod {name} is {state.phase} ({state.waiting}), waited {waited:.0f} s", transient=True)
            if time.monotonic() > deadline:
                raise CakeError(
                    f"The session Pod {name} was still {state.phase} after {waited:.0f} s ({state.waiting}), so it "
                    "was deleted. Ask for fewer resources (--gpus/--cpus/--memory), another context or node "
                    "pool, or wait longer with --timeout."
                )
            time.sleep(POLL_S)
        pod = self._read_pod(cluster, name)
        data["node"] = getattr(pod.spec, "node_name", "") if pod is not None else ""
        progress(f"Pod {name} is running on {data['node']}; starting the kernel", transient=True)
        report_deadline = max(deadline, time.monotonic() + 10)
        while True:
            report = self._report(cluster, name)
            if report.get("state") == "running":
                return NannyInfo.from_report(report)
            if report.get("state") == "failed":
                raise CakeError(f"The kernel in Pod {name} failed to start: {report.get('error')}.\n{report.get('log', '')}")
            state = pod_state(self._read_pod(cluster, name))
            if state.fatal:
                raise CakeError(f"The session Pod {name} stopped before its kernel started: {state.fatal}"
                                f"{self._log_tail(allocation)}")  # fmt: skip
            if time.monotonic() > report_deadline:
                raise CakeError(f"The kernel in Pod {name} did not report within {time.monotonic() - started:.0f} s."
                                f"{self._log_tail(allocation)}")  # fmt: skip
            time.sleep(POLL_S)

    def _log_tail(self, allocation: Allocation, lines: int = 15) -> str:
        """The end of the session container's log (the nanny's and the kernel's own output), to say why."""
        text = self.logs(allocation).strip()
        return "\nIts log (last lines):\n" + "\n".join(text.splitlines()[-lines:]) if text else ""

    def _report(self, cluster: Cluster, name: str) -> dict[str, Any]:
        """podmain's report, read through a one-off port-forward ({} while nothing listens yet)."""
        from jupyter_cake.backends.kubernetes.wsforward import open_stream, read_line

        try:
            ws = open_stream(cluster, cluster.namespace, name, REPORT_PORT)
        except Exception as exc:  # noqa: BLE001 - ApiException on upgrade: RBAC, or the Pod went away
            if getattr(exc, "status", None) == 403:
                raise api_error(exc, f"port-forward to Pod {name}", cluster.namespace, cluster.context) from None
            return {}
        try:
            data = read_line(ws, 10)
        except OSError:
            return {}
        try:
            return dict(json.loads(data)) if data.strip() else {}
        except ValueError:
            return {}

    # -- channel ----------------------------------------------------------------------------------
    def open_channel(self, allocation: Allocation, info: NannyInfo) -> Channel:
        data = allocation.data
        # Without a live forwarder the old local ports may be taken by now: pick new ones.
        connection, pairs = forwarded_endpoints(info, data, fresh=forwarder_pid(allocation.session_dir) is None)

        def pod_alive() -> bool:
            try:
                return pod_state(self._read_pod(self._cluster(data), data["pod"])).ready
            except CakeError:
                return False

        channel = KubernetesChannel(connection, f"tcp://127.0.0.1:{pairs[-1][0]}", data, allocation.session_dir,
                                    pairs, pod_alive)  # fmt: skip
        channel.establish(self._spawned.pop(str(allocation.session_dir), None))
        return channel

    # -- lifecycle --------------------------------------------------------------------------------
    def status(self, allocation: Allocation) -> str:
        data = allocation.data
        if not data.get("pod"):
            return "stopped"
        try:
            state = pod_state(self._read_pod(self._cluster(data), data["pod"]))
        except CakeError:
            return "unknown"
        if state.fatal:
            record_end(allocation.session_dir, state.fatal)
            return "stopped"
        return "running" if state.ready else "pending"

    def describe(self, allocation: Allocation) -> str:
        data = allocation.data
        text = f"pod {data.get('namespace', '?')}/{data.get('pod', '?')}"
        return text + (f" on {data['node']}" if data.get("node") else "")

    def ended_reason(self, allocation: Allocation) -> str | None:
        data = allocation.data
        if not data.get("pod"):
            return None
        try:
            state = pod_state(self._read_pod(self._cluster(data), data["pod"]))
            if state.fatal and state.phase != "Gone":
                record_end(allocation.session_dir, state.fatal)
        except CakeError:
            state = None
        try:  # what the forwarder (or an earlier look) saw while the Pod still existed
            recorded = json.loads((allocation.session_dir / ENDED_FILE).read_text()).get("reason")
        except (OSError, ValueError):
            recorded = None
        reason = recorded or (state.fatal if state is not None else None)
        return f"{reason} (Pod {data.get('namespace')}/{data['pod']})" if reason else None

    def logs(self, allocation: Allocation) -> str:
        data = allocation.data
        if not data.get("pod"):
            return ""
        cluster = self._cluster(data)
        try:
            text: str = self._call(cluster, f"read the log of Pod {data['pod']}", cluster.core.read_namespaced_pod_log,
                                   data["pod"], cluster.namespace, tail_lines=200)  # fmt: skip
        except CakeError as exc:
            return str(exc)
        return text

    def release(self, allocation: Allocation) -> None:
        data = allocation.data
        spawned = self._spawned.pop(str(allocation.session_dir), None)
        if spawned is not None:  # the start failed before the channel was opened
            spawned.kill()
            spawned.wait()
        stop_forwarder(allocation.session_dir)
        name = data.get("pod")
        if not name:
            return
        from kubernetes.client.rest import ApiException

        self._delete_env_secret(data)

        try:
            cluster = self._cluster(data)
            # After `cake down` the nanny is stopping the kernel: give its container a moment to exit.
            # A Pod whose container no longer runs (or never ran) is deleted at once (grace period 0),
            # since the kubelet's graceful path takes several seconds more for nothing; a container
            # that still runs gets a grace period, so its GPU is never handed out while it is in use.
            pod = self._read_pod(cluster, name)
            deadline = time.monotonic() + RELEASE_STOP_WAIT_S
            while pod is not None and pod_state(pod).ready and time.monotonic() < deadline:
                time.sleep(POLL_S / 2)
                pod = self._read_pod(cluster, name)
            if pod is None:
                return
            grace = 5 if pod_state(pod).ready else 0
            cluster.core.delete_namespaced_pod(name, cluster.namespace, grace_period_seconds=grace,
                                               _request_timeout=request_timeout())  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"delete the session Pod {name}", data.get("namespace", ""), data.get("context", "")) from None
            return
        except CakeError:
            return
        except network_errors():
            return  # unreachable now: the nanny's idle autostop still ends the container
        # Wait (briefly) until it is really gone, so `kubectl get pods` right after shows nothing.
        deadline = time.monotonic() + RELEASE_WAIT_S
        while time.monotonic() < deadline:
            try:
                if self._read_pod(cluster, name) is None:
                    return
            except CakeError:
                return
            time.sleep(POLL_S)

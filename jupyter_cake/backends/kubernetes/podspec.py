"""The Pod of a Cake session, built as a plain manifest dict from a Target (no kubernetes import).

One Pod per session, restartPolicy Never: the nanny (shipped in the spec, see ``nanny_archive``) is the
container's main process, so the image needs only python3 with ipykernel, pyzmq and cloudpickle.
Everything the session creates is this one Pod (plus, with --env, the Secret holding the values, which
the Pod owns), so deleting it deletes everything.

``--env`` values are never in the Pod spec (anyone who may get or list Pods reads it, and Cake keeps a copy
in the session's pod.json): they go into a Secret (``env_secret``) that the container's env references
by key (``secretKeyRef``), created before the Pod so its container never starts without them, then made
owned by the Pod (``owner_patch``) so Kubernetes' garbage collector deletes it with the Pod.

Target options (``--option K=V`` or keys of a named target in targets.toml; tables/lists as JSON):
  namespace          the namespace (default: the context's, else "default")
  service_account    the Pod's service account (default: the namespace's default)
  labels             extra Pod labels, a table or "k=v,k2=v2"
  node_selector      a table of node labels the Pod needs
  tolerations        a list of Kubernetes tolerations
  volumes / volume_mounts   lists of Kubernetes volumes and the session container's mounts
  gpu_resource       the extended resource for --gpus (default nvidia.com/gpu)
  gpu_label          node label whose value is the GPU type (e.g. nvidia.com/gpu.product): --gpus T:N
                     then adds a node selector gpu_label=T
  gpu_types          a table mapping GPU type -> node selector table, for clusters whose labels don't
                     carry the type's plain name (e.g. {A100 = {"cloud.google.com/gke-accelerator" =
                     "nvidia-tesla-a100"}})
  python             the interpreter in the image (default python3)
  install_kernel     true (default): if the image lacks ipykernel/pyzmq/cloudpickle, pip-install them
                     into the Pod at start; false: fail at once saying so
  image_pull_policy  IfNotPresent by default
  pod_spec           a table merged into the Pod's spec last (anything not covered above)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jupyter_cake.backends.shipping import nanny_archive as shipped_nanny
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target

# The documented default: an official slim Python image; the boot step pip-installs ipykernel, pyzmq and
# cloudpickle into it (the Pod needs to reach the package index). An image that has them starts faster.
DEFAULT_IMAGE = "python:3.11-slim"
REPORT_PORT = 47011  # podmain's report server, on the Pod's loopback only
WORK_DIR = "/cake"  # an emptyDir: writable even with a read-only root filesystem
SESSION_DIR = f"{WORK_DIR}/session"
NANNY_ROOT = f"{WORK_DIR}/nanny"
CONTAINER = "session"
MANAGED_BY = ("app.kubernetes.io/managed-by", "jupyter-cake")
SESSION_LABEL = "jupyter-cake/session"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

# Used with fullmatch, never match + '$', which also matches before a trailing newline ("ns\n" would
# pass). ASCII: Kubernetes names are plain ASCII.
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", re.ASCII)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?", re.ASCII)
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)

# Runs first in the container with `python3 -c`: checks the image (and, unless install_kernel=false,
# pip-installs what the kernel needs into the Pod's work dir when the image lacks it), unpacks the nanny
# shipped in the environment, then becomes podmain (exec keeps PID 1, so Pod deletion's SIGTERM reaches it).
BOOT = r"""
import base64, io, os, subprocess, sys, tarfile
root, site = sys.argv[1], os.path.join(os.path.dirname(sys.argv[1]), "site")


def missing():
    names = []
    for module, package in (("ipykernel", "ipykernel"), ("jupyter_client", "jupyter-client"), ("zmq", "pyzmq"),
                            ("cloudpickle", "cloudpickle")):
        try:
            __import__(module)
        except ImportError:
            names.append(package)
    return names


def fail(message):
    print("cake-error: " + message, file=sys.stderr, flush=True)
    try:
        open("/dev/termination-log", "w").write("cake-error: " + message)
    except OSError:
        pass
    sys.exit(3)


lacking, why = missing(), ""
if lacking and os.environ.get("CAKE_INSTALL_KERNEL") == "1":
    print("cake: installing " + " ".join(lacking) + " into " + site, flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-input", "--retries", "1", "--timeout", "20", "--target", site] + lacking,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if done.returncode == 0:
        sys.path.insert(0, site)
        os.environ["PYTHONPATH"] = site + os.pathsep + os.environ.get("PYTHONPATH", "")
        lacking = missing()
    else:
        why = " and installing them failed (" + (done.stdout.strip().splitlines() or ["pip failed"])[-1][:300] + ")"
if lacking:
    fail("the image's Python %s lacks %s%s. Use an image that has them, e.g. one built with "
         "`RUN pip install ipykernel pyzmq cloudpickle` on top of your image, and pass it with --image."
         % (sys.version.split()[0], ", ".join(lacking), why))
os.makedirs(root, exist_ok=True)
tarfile.open(fileobj=io.BytesIO(base64.b64decode(os.environ.pop("CAKE_NANNY_ARCHIVE")))).extractall(root)
os.execv(sys.executable, [sys.executable, os.path.join(root, "cake_pod.py"), "--root", root] + sys.argv[2:])
"""


def pod_name(session_id: str) -> str:
    return "cake-" + session_id.lower().replace("_", "-")


def env_secret_name(session_id: str) -> str:
    return pod_name(session_id) + "-env"


def env_secret(target: Target, session_id: str, namespace: str) -> dict[str, Any] | None:
    """The Secret with ``target``'s --env values (None without --env). Env names are valid Secret keys."""
    if not target.env:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": env_secret_name(session_id),
            "namespace": namespace,
            "labels": {MANAGED_BY[0]: MANAGED_BY[1], SESSION_LABEL: session_id},
        },
        "type": "Opaque",
        "stringData": dict(target.env),
    }


def owner_patch(pod: Any) -> dict[str, Any]:
    """The patch that makes the created Pod (a V1Pod) the owner of its env Secret."""
    meta = pod.metadata
    return {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta.name, "uid": meta.uid}]}}


def nanny_archive() -> tuple[str, str]:
    """The nanny plus podmain (the Pod's PID 1); see shipping."""
    return shipped_nanny("shipped into a Pod", {"cake_pod.py": (Path(__file__).parent / "podmain.py").read_bytes()})


def _json_option(options: dict[str, str], key: str, kind: type, example: str) -> Any:
    text = options.get(key)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise CakeError(
            f"The Kubernetes option {key} must be a {'list' if kind is list else 'table'} "
            f"(in targets.toml: {key} = {example}; on the command line as JSON), not {text!r}."
        )
    return value


def _labels(options: dict[str, str]) -> dict[str, str]:
    text = options.get("labels")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        pairs = [item.partition("=") for item in text.split(",") if item.strip()]
        value = {key: val for key, _, val in pairs}
    if not isinstance(value, dict):
        raise CakeError(f"The Kubernetes option labels must be a table or k=v,k2=v2, not {text!r}.")
    labels = {str(k).strip(): str(v).strip() for k, v in value.items()}
    for key, val in labels.items():
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(val) or len(val) > 63:
            raise CakeError(
                f"The Pod label {key}={val} is not a valid Kubernetes label (keys: [prefix/]name of letters, "
                "digits, '-', '_', '.'; values up to 63 such characters). Fix the target's labels option."
            )
    return labels


def check_name(kind: str, value: str) -> str:
    if not _DNS_NAME.fullmatch(value):
        raise CakeError(
            f"The Kubernetes {kind} {value!r} is not a valid name (lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most 63). Fix the target's {kind} option."
        )
    return value


def _quantity_memory(gb: float) -> str:
    return f"{int(round(gb * 1024))}Mi"


def _quantity_cpu(cpus: float) -> str:
    return f"{int(round(cpus * 1000))}m"


def _gpu_selector(target: Target, options: dict[str, str]) -> dict[str, str]:
    assert target.gpus is not None
    name = target.gpus.name
    if not name:
        return {}
    types = _json_option(options, "gpu_types", dict, '{ A100 = { "gpu.example/type" = "a100" } }')
    if types is not None:
        if name not in types:
            raise CakeError(
                f"--gpus {target.gpus} asks for GPU type {name!r}, but this target's gpu_types only knows "
                f"{', '.join(sorted(types)) or 'none'}. Use one of those, or add {name} to gpu_types."
            )
        selector = types[name]
        if not isinstance(selector, dict):
            raise CakeError(f"gpu_types.{name} must be a table of node labels, not {selector!r}.")
        return {str(k): str(v) for k, v in selector.items()}
    if options.get("gpu_label"):
        return {options["gpu_label"]: name}
    return {}


def build_pod(
    target: Target, session_id: str, namespace: str, idle_minutes: float, archive: str
) -> dict[str, Any]:
    """The Pod manifest for ``target``. User values go into structured fields (never a shell)."""
    options = target.options_dict()
    if target.nodes > 1:
        raise CakeError(
            f"--nodes {target.nodes}: a Kubernetes session is one Pod on one node. Drop --nodes; for several "
            "nodes use a slurm/... target (with --ray for a Ray cluster across them)."
        )
    resources: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    if target.cpus is not None:
        resources["requests"]["cpu"] = _quantity_cpu(target.cpus.value)
        if not target.cpus.or_more:
            resources["limits"]["cpu"] = _quantity_cpu(target.cpus.value)
    if target.memory is not None:
        resources["requests"]["memory"] = _quantity_memory(target.memory.value)
        if not target.memory.or_more:  # "16+" asks for at least 16 GB: no limit
            resources["limits"]["memory"] = _quantity_memory(target.memory.value)
    node_selector = _json_option(options, "node_selector", dict, '{ "pool" = "gpu" }') or {}
    tolerations = list(_json_option(options, "tolerations", list, '[{ key = "dedicated", operator = "Exists" }]') or [])
    if target.gpus is not None:
        gpu_resource = options.get("gpu_resource", DEFAULT_GPU_RESOURCE)
        resources["limits"][gpu_resource] = str(target.gpus.count)
        node_selector = {**node_selector, **_gpu_selector(target, options)}
        # GPU node pools are usually tainted so that only GPU work lands there.
        tolerations.append({"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    python = options.get("python", "python3")
    args = [NANNY_ROOT, "--session-dir", SESSION_DIR, "--report-port", str(REPORT_PORT),
            "--idle-minutes", f"{idle_minutes:g}"]  # fmt: skip
    if target.workdir:
        args += ["--workdir", target.workdir]
    install_off = options.get("install_kernel", "true").lower() in ("0", "false", "no")
    secret = env_secret_name(session_id)
    env: list[dict[str, Any]] = [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k, _ in target.env]
    env += [
        {"name": "CAKE_NANNY_ARCHIVE", "value": archive},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "CAKE_SESSION", "value": session_id},
        {"name": "CAKE_INSTALL_KERNEL", "value": "0" if install_off else "1"},
    ]
    volumes = [{"name": "cake", "emptyDir": {}}]
    volumes += _json_option(options, "volumes", list, '[{ name = "data", persistentVolumeClaim = { claimName = "data" } }]') or []
    mounts = [{"name": "cake", "mountPath": WORK_DIR}]
    mounts += _json_option(options, "volume_mounts", list, '[{ name = "data", mountPath = "/data" }]') or []
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": target.image or DEFAULT_IMAGE,
        "imagePullPolicy": options.get("image_pull_policy", "IfNotPresent"),
        "command": [python, "-c", BOOT],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources["requests"] or resources["limits"]:
        container["resources"] = {k: v for k, v in resources.items() if v}
    labels = {**_labels(options), MANAGED_BY[0]: MANAGED_BY[1], SESSION_LABEL: session_id}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        # The kernel owns its state: stopping it fast matters more than a long grace period.
        "terminationGracePeriodSeconds": 10,
        "automountServiceAccountToken": options.get("automount_token", "false").lower() in ("1", "true", "yes"),
    }
    if options.get("service_account"):
        spec["serviceAccountName"] = check_name("service_account", options["service_account"])
    if node_selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in node_selector.items()}
    if tolerations:
        spec["tolerations"] = tolerations
    extra = _json_option(options, "pod_spec", dict, '{ priorityClassName = "interactive" }')
    if extra:
        spec = _merge(spec, extra)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(session_id),
            "namespace": namespace,
            "labels": labels,
        },
        "spec": spec,
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged

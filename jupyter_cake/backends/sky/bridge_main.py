"""The SkyPilot side of the bridge: the only Cake code that imports ``sky``.

Run as a script by SkyPilot's own Python (``CAKE_SKY_PYTHON``), never imported by Cake: it must use
only the standard library and SkyPilot. One process per operation; the request is one JSON object on
stdin, and the answer is JSON lines on the original stdout: ``{"event": "log", "text": ...}`` while
SkyPilot works (provisioning logs, shown as progress), ``{"event": "request", "id": ...}`` for every
SkyPilot request started, then exactly one ``{"event": "result", ...}`` or ``{"event": "error", ...}``.

Anything SkyPilot itself prints goes to stderr (fd 1 is pointed there), so it can never corrupt the
protocol. On SIGTERM (Cake's deadline) the requests still running on the API server are cancelled
before exiting, so a hung launch does not keep provisioning in the background.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from typing import Any

os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")  # no phoning home (and +10 s/call on slow DNS)

_PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)  # SkyPilot's own prints (spinners, tables) go to stderr
sys.stdout = sys.stderr

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
_OUTSTANDING: list[str] = []


def emit(event: str, **fields: Any) -> None:
    _PROTOCOL.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    _PROTOCOL.flush()


class _Cancelled(BaseException):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Cancelled()


class LineStream:
    """A text stream for ``sky.stream_and_get``: every complete line becomes a log event."""

    def __init__(self) -> None:
        self.buffer = ""
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        clean = _ANSI.sub("", line).rstrip()
        if clean.strip():
            self.lines.append(clean)
            emit("log", text=clean)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer)
            self.buffer = ""

    def isatty(self) -> bool:
        return False


import sky  # noqa: E402  (after the fd juggling: importing sky may already print)
from sky import exceptions as sky_exceptions  # noqa: E402


def _cancel_outstanding() -> None:
    if not _OUTSTANDING:
        return
    try:
        sky.api_cancel(list(_OUTSTANDING), silent=True)
    except Exception:  # noqa: BLE001 - the server may be the very thing that hangs
        pass
    _OUTSTANDING.clear()


def _started(request_id: Any) -> Any:
    _OUTSTANDING.append(str(request_id))
    emit("request", id=str(request_id))
    return request_id


def _get(request_id: Any) -> Any:
    result = sky.get(_started(request_id))
    _OUTSTANDING.remove(str(request_id))
    return result


def _stream(request_id: Any) -> tuple[Any, LineStream]:
    stream = LineStream()
    try:
        result = sky.stream_and_get(_started(request_id), output_stream=stream)  # type: ignore[arg-type]
    finally:
        stream.close()
    _OUTSTANDING.remove(str(request_id))
    return result, stream


# ------------------------------------------------------------------------------ tasks
def build_task(spec: dict[str, Any]) -> Any:
    if spec.get("yaml"):
        task = sky.Task.from_yaml(spec["yaml"])
        if task.run:
            emit("log", text="note: the task file's `run` is replaced by Cake's kernel (run your code in cells)")
        overrides = dict(spec.get("resources") or {})
        if overrides:
            # Where the task file names its infra, it stands (SkyPilot refuses infra next to cloud/region).
            task.set_resources({r.copy(**{k: v for k, v in overrides.items() if k != "infra" or r.cloud is None})
                                for r in task.resources})  # fmt: skip
        if spec.get("setup"):
            task.setup = "\n".join(s for s in (task.setup, spec["setup"]) if s)
    else:
        task = sky.Task(name=spec.get("name"), setup=spec.get("setup"))
        task.set_resources(sky.Resources(**(spec.get("resources") or {})))
    if spec.get("envs"):
        _set_env(task, spec["envs"])
    if spec.get("num_nodes"):
        task.num_nodes = int(spec["num_nodes"])
    task.run = spec.get("run")
    return task


def _set_env(task: Any, values: dict[str, str]) -> None:
    """The target's --env values, as SkyPilot *secrets* where it has them (0.10+): set in setup and
    run like envs, but redacted in SkyPilot's logs, its stored task YAML and its dashboard."""
    if hasattr(task, "update_secrets"):
        task.update_secrets(values)
    else:
        task.update_envs(values)


def _price(resources: Any, nodes: int) -> float | None:
    try:
        return float(resources.get_cost(3600)) * max(1, nodes)
    except Exception:  # noqa: BLE001 - Slurm/Kubernetes have no catalog prices
        return None


def _record(cluster: str) -> dict[str, Any] | None:
    records = _get(sky.status([cluster]))
    if not records:
        return None
    record = records[0]
    return record if isinstance(record, dict) else dict(record)


def _status_text(record: dict[str, Any] | None) -> str | None:
    if record is None:
        return None
    status = record.get("status")
    return getattr(status, "value", None) or str(status)


# ------------------------------------------------------------------------------ operations
def op_status(req: dict[str, Any]) -> dict[str, Any]:
    return {"status": _status_text(_record(req["cluster"]))}


def op_launch(req: dict[str, Any]) -> dict[str, Any]:
    cluster = req["cluster"]
    task = build_task(req["spec"])
    existing = _status_text(_record(cluster))
    if existing is None:
        _require_enabled(req["spec"].get("resources", {}).get("infra", ""))
    if existing == "UP":
        emit("log", text=f"re-using SkyPilot cluster {cluster} (already UP); starting the kernel on it")
        job_id, handle = _stream(sky.exec(task, cluster_name=cluster))[0]
        reused = True
    else:
        from sky.skylet.autostop_lib import AutostopWaitFor

        try:
            job_id, handle = _stream(
                sky.launch(task, cluster_name=cluster, idle_minutes_to_autostop=int(req["autostop_minutes"]),
                           down=True, wait_for=AutostopWaitFor.JOBS)  # fmt: skip
            )[0]
        except _Cancelled:
            _cancel_outstanding()  # stop provisioning first, then remove what it made
            if existing is None:
                _cleanup(cluster)
            raise
        except Exception as exc:
            if existing is None:  # ours: a failed launch must leave no cluster behind
                raise _LaunchFailed(exc, _cleanup(cluster)) from exc
            raise
        reused = False
    if handle is None:
        raise RuntimeError("SkyPilot returned no cluster handle after the launch")
    info = _ssh_info(handle)
    launched = handle.launched_resources
    return {
        "job_id": job_id, "reused": reused, "ssh": info,
        "price_per_hour": _price(launched, int(getattr(handle, "launched_nodes", 1) or 1)),
        "resources": str(launched), "nodes": int(getattr(handle, "launched_nodes", 1) or 1),
    }  # fmt: skip


_CLOUD_ALIASES = {"k8s": "kubernetes"}


class _NotEnabled(Exception):
    pass


def _require_enabled(infra: str) -> None:
    """Fail in a second, from SkyPilot's cached `sky check` result, rather than after a launch has
    re-checked every cloud (tens of seconds) only to say the same."""
    head = infra.split("/", 1)[0].lower()
    if not head:
        return
    from sky.client import sdk

    enabled = [str(c) for c in _get(sdk.enabled_clouds())]
    if _CLOUD_ALIASES.get(head, head) not in {c.lower() for c in enabled}:
        raise _NotEnabled(
            f"{head} is not enabled in SkyPilot (enabled: {', '.join(enabled) or 'none'}); `sky check {head}` says why."
        )


class _LaunchFailed(Exception):
    def __init__(self, cause: BaseException, cleaned: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.cleaned = cleaned


def _cleanup(cluster: str) -> bool:
    """Tear down whatever a failed launch left (SkyPilot keeps a cluster whose setup failed)."""
    try:
        if _record(cluster) is None:
            return True
        emit("log", text=f"launch failed: removing cluster {cluster}")
        _get(sky.down(cluster, purge=True))
        return True
    except Exception as exc:  # noqa: BLE001 - reported to the user as a leftover
        emit("log", text=f"could not remove {cluster}: {exc}")
        return False


def _ssh_info(handle: Any) -> dict[str, Any]:
    """How to reach the head node the way SkyPilot does (its key, user, port, proxy)."""
    runner = handle.get_command_runners()[0]
    info: dict[str, Any] = {"runner": type(runner).__name__}
    for field in ("ip", "port", "ssh_user", "ssh_private_key", "_ssh_proxy_command", "_ssh_proxy_jump",
                  "sky_dir", "slurm_node", "job_id"):  # fmt: skip
        value = getattr(runner, field, None)
        if value is not None:
            info[field.lstrip("_")] = value
    return info


def op_ssh_info(req: dict[str, Any]) -> dict[str, Any]:
    record = _record(req["cluster"])
    if record is None or record.get("handle") is None:
        return {"ssh": None}
    return {"ssh": _ssh_info(record["handle"])}


def op_job_status(req: dict[str, Any]) -> dict[str, Any]:
    statuses = _get(sky.job_status(req["cluster"], [int(req["job_id"])]))
    status = (statuses or {}).get(int(req["job_id"]))
    return {"status": getattr(status, "value", None) if status is not None else None}


def op_logs(req: dict[str, Any]) -> dict[str, Any]:
    lines: list[str] = []
    try:
        for line in sky.tail_logs(req["cluster"], int(req["job_id"]), follow=False, tail=int(req.get("tail", 50)),
                                  preload_content=False):  # fmt: skip
            if line:
                lines.append(_ANSI.sub("", line))
    except Exception as exc:  # noqa: BLE001 - logs are best effort (the cluster may be gone)
        lines.append(f"(could not read the job log: {exc})")
    return {"text": "".join(lines)}


def op_down(req: dict[str, Any]) -> dict[str, Any]:
    if _record(req["cluster"]) is None:
        return {"removed": False}
    _stream(sky.down(req["cluster"]))
    return {"removed": True}


def op_plan(req: dict[str, Any]) -> dict[str, Any]:
    """SkyPilot's optimizer on the task. The API server does not return the optimized DAG, only its
    log, so the choice and its price come from the optimizer's own table (the row marked chosen)."""
    task = build_task(req["spec"])
    _, stream = _stream(sky.optimize(_dag(task)))
    header: list[str] = []
    chosen: dict[str, str] | None = None
    for line in stream.lines:
        cells = [c.strip() for c in re.split(r"\s{2,}", line.strip())]
        if "CHOSEN" in cells and "INFRA" in cells:
            header = cells
        elif header and "\u2714" in line:
            chosen = dict(zip(header, cells))
            break
    price = None
    if chosen is not None:
        try:
            price = float(chosen.get("COST ($)", "").split()[0])
        except (ValueError, IndexError):
            price = None
    return {"table": "\n".join(stream.lines), "chosen": chosen, "price_per_hour": price, "nodes": task.num_nodes}


def _dag(task: Any) -> Any:
    with sky.Dag() as dag:
        dag.add(task)
    return dag


def op_check(req: dict[str, Any]) -> dict[str, Any]:
    infra = req.get("infra")
    result, stream = _stream(sky.check(tuple(infra) if infra else None, verbose=False))
    return {"enabled": result, "text": "\n".join(stream.lines)}


def op_cancel(req: dict[str, Any]) -> dict[str, Any]:
    ids = [str(i) for i in req.get("request_ids", [])]
    if ids:
        sky.api_cancel(ids, silent=True)
    return {"cancelled": ids}


OPS = {
    "status": op_status, "launch": op_launch, "ssh_info": op_ssh_info, "job_status": op_job_status,
    "logs": op_logs, "down": op_down, "plan": op_plan, "check": op_check, "cancel": op_cancel,
}  # fmt: skip


# ------------------------------------------------------------------------------ errors
def classify(exc: BaseException) -> dict[str, Any]:
    """The kind of failure, for Cake's user-facing messages; SkyPilot's own text is kept."""
    cleaned = None
    if isinstance(exc, _LaunchFailed):
        cleaned, exc = exc.cleaned, exc.cause
    name = type(exc).__name__
    message = _ANSI.sub("", str(exc)).strip() or name
    kind = "failed"
    if isinstance(exc, getattr(sky_exceptions, "ApiServerConnectionError", ())) or name in (
        "ConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionRefusedError"
    ):
        kind = "api_unreachable"
    elif isinstance(exc, (_NotEnabled, getattr(sky_exceptions, "NoCloudAccessError", ()))):
        kind = "no_infra"
    elif isinstance(exc, getattr(sky_exceptions, "ResourcesUnavailableError", ())):
        lowered = message.lower()
        if "quota" in lowered:
            kind = "quota"
        elif "satisfying the request" in lowered or "catalog does not contain" in lowered:
            kind = "capacity"  # checked first: these messages also hint at `sky check`
        elif "not enabled" in lowered or "no cloud is enabled" in lowered or "enabled infra" in lowered:
            kind = "no_infra"
        else:
            kind = "capacity"
    elif isinstance(exc, getattr(sky_exceptions, "ResourcesMismatchError", ())):
        kind = "mismatch"
    elif name in ("ValueError", "InvalidSkyPilotConfigError", "ValidationError", "SchemaError", "FileNotFoundError"):
        kind = "invalid"
    elif isinstance(exc, getattr(sky_exceptions, "ClusterNotUpError", ())):
        kind = "not_up"
    out: dict[str, Any] = {"kind": kind, "type": name, "message": message[-4000:]}
    if cleaned is not None:
        out["cleaned"] = cleaned
    return out


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    request = json.loads(sys.stdin.read())
    started = time.monotonic()
    try:
        result = OPS[request["op"]](request)
    except _Cancelled:
        pending = list(_OUTSTANDING)
        _cancel_outstanding()
        emit("error", kind="timeout", type="Timeout", message="cancelled at Cake's deadline", cancelled=pending)
        return
    except BaseException as exc:  # noqa: BLE001 - every failure is reported in the protocol
        emit("error", **classify(exc))
        return
    emit("result", seconds=round(time.monotonic() - started, 3), **result)


if __name__ == "__main__":
    main()

"""What the side panel sees, as JSON: synchronous functions over ``Cake`` and the store.

Everything here blocks (SQLite, nanny pings, starting a session), so the tornado handlers call it in a
thread executor, never on the server's event loop. Reads mirror ``views.py`` (the text tables of
``%cake status`` / ``cake runs``) so the panel, the magics and the CLI show the same facts.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.manager import Cake
from jupyter_cake.store import LIVE_SESSION_STATES, RunRow, SessionRow
from jupyter_cake.targets.envmask import mask_env_text

RUN_STATES = ("queued", "running", "ok", "error", "aborted", "lost")
MAX_LIMIT = 500


class NotFound(CakeError):
    """A session or run id that is not in the store (HTTP 404)."""


def _target_dict(row: SessionRow) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(row.target_json or "{}")
        return data
    except ValueError:
        return {}


def _gpus(target: dict[str, Any]) -> str:
    gpus = target.get("gpus")
    if not gpus:
        return ""
    return f"{gpus.get('name')}:{gpus.get('count')}" if gpus.get("name") else f"{gpus.get('count')} GPU"


def _where(row: SessionRow) -> str:
    from jupyter_cake.backends import get_backend
    from jupyter_cake.backends.base import Allocation

    try:
        return get_backend(row.backend).describe(Allocation(row.backend, Path(row.session_dir), row.allocation_data))
    except Exception:  # noqa: BLE001 - a missing backend must not break the listing
        return ""


def session_json(row: SessionRow, ping: dict[str, Any] | None = None, pinged_at: float | None = None) -> dict[str, Any]:
    """A session as the panel shows it. Uptime and cost so far are computed by the client from
    ``created`` and ``price_per_hour`` (so the row does not change every second); the idle countdown
    from ``ping`` (the nanny's own idle clock) and ``pinged_at``."""
    target = _target_dict(row)
    live = row.state in LIVE_SESSION_STATES
    # mask_env_text: rows written before --env values were masked may still hold them (name, target, reason).
    data: dict[str, Any] = {
        "id": row.id,
        "name": mask_env_text(row.name),
        "owner": row.owner,
        "target": mask_env_text(row.target),
        "infra": target.get("infra", row.target.split(" ")[0]),
        "gpus": _gpus(target),
        "backend": row.backend,
        "state": row.state,
        "reason": None if live or row.reason is None else mask_env_text(row.reason),
        "where": _where(row) if live else "",
        "created": row.created,
        "updated": row.updated,
        "price_per_hour": row.price_per_hour,
        "idle_minutes": row.idle_minutes,
        "ping": None,
    }
    if ping is not None:
        data["ping"] = {
            "state": ping.get("state"),
            "idle_seconds": ping.get("idle_seconds"),
            "idle_minutes": ping.get("idle_minutes"),
            "at": pinged_at or time.time(),
        }
    return data


def split_source(source: str) -> tuple[str, str]:
    notebook, _, cell = source.partition("#")
    return notebook, cell


def run_json(run: RunRow) -> dict[str, Any]:
    notebook, cell = split_source(run.source)
    lines = run.code.strip().splitlines()
    return {
        "id": run.id,
        "session_id": run.session_id,
        "state": run.state,
        "kind": run.kind,
        "detached": bool(run.detached),
        "error": run.error,
        "created": run.created,
        "started": run.started,
        "ended": run.ended,
        "notebook": notebook,
        "cell": cell,
        "code": "\n".join(lines[:3])[:300],
    }


# -- targets --------------------------------------------------------------------------------------------
def targets() -> dict[str, Any]:
    """Named targets plus the built-in ``local``, each with a health check: does the spec parse, and is
    its backend installed and importable. Never raises: a broken file becomes ``error``."""
    from jupyter_cake.backends import available_backends, get_backend
    from jupyter_cake.targets import config_path, load_named_targets, resolve_target

    result: dict[str, Any] = {"config_path": str(config_path()), "backends": available_backends(), "error": None}
    names = ["local"]
    try:
        names += [n for n in load_named_targets() if n != "local"]
    except CakeError as exc:
        result["error"] = str(exc)
    rows = []
    for name in names:
        entry: dict[str, Any] = {"name": name, "resources": "", "backend": "", "ok": True, "note": ""}
        try:
            target = resolve_target([name])
            entry["resources"] = target.describe()
            entry["backend"] = target.backend_name
            get_backend(target.backend_name)
            if name == "local":
                entry["note"] = "built in: this machine, no setup"
        except Exception as exc:  # noqa: BLE001 - show the broken entry instead of failing the listing
            entry["ok"] = False
            entry["note"] = str(exc)
        rows.append(entry)
    result["targets"] = rows
    return result


# -- reads ----------------------------------------------------------------------------------------------
def list_sessions(cake: Cake, include_ended: bool = True, limit: int = 20) -> list[SessionRow]:
    rows = cake.store.sessions(live_only=True)
    if include_ended:
        ended = [r for r in cake.store.sessions() if r.state not in LIVE_SESSION_STATES][:limit]
        rows += ended
    return rows


def list_runs(cake: Cake, session_id: str | None, states: list[str], limit: int, offset: int) -> list[dict[str, Any]]:
    bad = [s for s in states if s not in RUN_STATES]
    if bad:
        raise CakeError(f"Unknown run state {bad[0]!r}; states are {', '.join(RUN_STATES)}.")
    limit = max(1, min(limit, MAX_LIMIT))
    return [run_json(r) for r in cake.store.runs(session_id=session_id, states=states, limit=limit, offset=max(0, offset))]


def get_session(cake: Cake, session_id: str) -> SessionRow:
    row = cake.store.session(session_id)
    if row is None:
        raise NotFound(f"No session {session_id!r}.")
    return row


def get_run(cake: Cake, run_id: str) -> RunRow:
    run = cake.store.run(run_id)
    if run is None:
        raise NotFound(f"No run {run_id!r}.")
    return run


def output_text(entries: list[dict[str, Any]]) -> str:
    from jupyter_cake.relay import journal_text

    return journal_text(entries)


def journal(cake: Cake, run: RunRow) -> list[dict[str, Any]]:
    """A run's journaled outputs: from the live nanny, or from the files once the session has ended
    (``Cake.journal`` without the kernel handshake, see NannyLink)."""
    from jupyter_cake.nanny.journal import read_entries

    row = cake.store.session(run.session_id)
    if row is None:
        return []
    if row.state == "running":
        try:
            link = NannyLink(row)
            try:
                entries: list[dict[str, Any]] = link.nanny("journal", run_id=run.id)["entries"]
                return entries
            finally:
                link.close()
        except CakeError:
            pass
    return read_entries(Path(row.session_dir) / "journal", run.id)


def run_output(cake: Cake, run_id: str) -> dict[str, Any]:
    run = get_run(cake, run_id)
    entries = journal(cake, run)
    return {"run": run_json(run), "text": output_text(entries), "entries": len(entries)}


# -- talking to a session without its kernel ---------------------------------------------------------------
class NannyLink:
    """A connection to a session's nanny only (ping, runs, journal, interrupt, shutdown).

    Why not ``Cake.connect``: it waits for the kernel to answer kernel_info, which a kernel busy with a
    cell does only when the cell ends; after 10 s it records the session as stopped and releases it.
    The panel looks at busy sessions all the time, so it talks to the nanny, which always answers."""

    def __init__(self, row: SessionRow) -> None:
        from jupyter_cake.backends import get_backend
        from jupyter_cake.backends.base import Allocation, NannyInfo
        from jupyter_cake.manager import CONNECTION_FILE
        from jupyter_cake.session import RemoteSession

        info_path = Path(row.session_dir) / CONNECTION_FILE
        if not info_path.exists():
            raise CakeError(f"Session {row.id} has no connection file yet (still starting?).")
        info = NannyInfo.from_report(json.loads(info_path.read_text()))
        backend = get_backend(row.backend)
        channel = backend.open_channel(Allocation(row.backend, Path(row.session_dir), row.allocation_data), info)
        self.remote = RemoteSession(channel, label=f"{row.id} ({row.name})")
        self.remote.connect_nanny_only()

    def nanny(self, op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        from jupyter_cake import engine

        return engine.run(self.remote.nanny(op, timeout=timeout, **args))

    def close(self) -> None:
        from jupyter_cake import engine

        try:
            engine.run(self.remote.close(), timeout=5)
        except Exception:  # noqa: BLE001 - closing a dead session's socket may fail; nothing to do
            pass


def settle_runs(cake: Cake, row: SessionRow, records: dict[str, Any]) -> None:
    """Record final states the nanny knows for runs the store still has as running (as Cake.refresh)."""
    from jupyter_cake.store import FINAL_RUN_STATES

    for run in cake.store.runs(session_id=row.id, states=("queued", "running"), limit=10_000):
        record = records.get(run.id)
        if record and record["state"] in FINAL_RUN_STATES:
            cake.store.update_run(run.id, state=record["state"], error=record.get("error"), ended=record.get("ended"))


def ended(row: SessionRow) -> bool:
    from jupyter_cake.backends import get_backend
    from jupyter_cake.backends.base import Allocation

    try:
        status = get_backend(row.backend).status(Allocation(row.backend, Path(row.session_dir), row.allocation_data))
    except Exception:  # noqa: BLE001 - unknown: not proof that it ended
        return False
    return status == "stopped"


# -- actions: each on a Cake of its own, so a slow start never blocks the readers -------------------------
def start_session(spec: str, name: str | None, owner: str) -> dict[str, Any]:
    from jupyter_cake.targets import resolve_target

    target = resolve_target(shlex.split(spec))
    cake = Cake()
    existing = cake.store.live_session(name or target.name or target.canonical(), owner)
    if existing is not None and existing.target == target.canonical() and not ended(existing):
        return {"session": session_json(existing), "started": False}  # reused as is: no kernel handshake
    handle, started = cake.use(target, name=name or None, owner=owner)
    row = cake.store.session(handle.id) or handle.row
    handle.close()  # the session keeps running; this process only disconnects
    return {"session": session_json(row), "started": started}


def stop_session(session_id: str, reason: str = "stopped from the JupyterLab panel") -> dict[str, Any]:
    """``Cake.down`` without its kernel handshake (which stalls 10 s on a busy kernel): ask the nanny
    to shut down (so its own record says why), release the allocation, record it."""
    from jupyter_cake.backends import get_backend
    from jupyter_cake.backends.base import Allocation

    cake = Cake()
    row = get_session(cake, session_id)
    if row.state in LIVE_SESSION_STATES:
        try:
            link = NannyLink(row)
            try:
                link.nanny("shutdown", reason=reason, timeout=3.0)
            finally:
                link.close()
        except CakeError:
            pass  # unreachable or still starting: releasing it is what counts
        get_backend(row.backend).release(Allocation(row.backend, Path(row.session_dir), row.allocation_data))
        cake.mark_stopped(row, reason=reason)
    return {"session": session_json(get_session(cake, session_id))}


def interrupt_run(run_id: str) -> dict[str, Any]:
    """Interrupt a running run (KeyboardInterrupt in the remote cell; the session survives)."""
    cake = Cake()
    run = get_run(cake, run_id)
    if run.state not in ("queued", "running"):
        raise CakeError(f"Run {run_id} is not running (state: {run.state}).")
    row = get_session(cake, run.session_id)
    if row.state not in LIVE_SESSION_STATES or ended(row):
        cake.mark_stopped(row)  # settles its runs from the journal
        raise CakeError(f"Session {row.id} of run {run_id} has ended; nothing to interrupt.")
    link = NannyLink(row)
    try:
        link.nanny("interrupt")
    finally:
        link.close()
    return {"run": run_json(get_run(cake, run_id)), "interrupted": True}

"""Text views shared by the magics and the CLI: status, targets, runs, logs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from jupyter_cake.manager import Cake
from jupyter_cake.manager.recovery import UNREACHABLE, is_unreachable_note
from jupyter_cake.relay import journal_text
from jupyter_cake.store import SessionRow
from jupyter_cake.targets.envmask import mask_env_text


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[("" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def status_table(cake: Cake, show_all: bool = False) -> str:
    rows = []
    now = time.time()
    for row in cake.store.sessions(live_only=not show_all)[:100]:
        ping = cake.refresh(row)
        fresh = cake.store.session(row.id) or row
        idle = autostop = "-"
        if ping is not None:
            idle = _ago(ping["idle_seconds"])
            if ping.get("idle_minutes"):
                autostop = "busy" if ping["state"] == "busy" else _ago(ping["idle_minutes"] * 60 - ping["idle_seconds"])
        cost = "-"
        if fresh.price_per_hour:
            cost = f"${fresh.price_per_hour:.2f}/h, ${fresh.price_per_hour * (now - fresh.created) / 3600:.2f} so far"
        live = fresh.state in ("running", "starting")
        where = _where(cake, fresh) if live else ""
        unreachable = live and is_unreachable_note(fresh.reason)  # running, but its channel dropped: not stopped
        # mask_env_text: names and reasons written before --env values were masked may still hold them.
        rows.append((fresh.id, mask_env_text(fresh.name), UNREACHABLE if unreachable else fresh.state, where,
                     _ago(now - fresh.created), idle, autostop, cost,
                     mask_env_text(fresh.reason or "") if unreachable or not live else ""))  # fmt: skip
    if not rows:
        return "No live Cake sessions. Start one with `%cake use local` (or `%cake use <target>`)."
    return table(("SESSION", "NAME", "STATE", "WHERE", "UPTIME", "IDLE", "AUTOSTOP IN", "COST", "NOTE"), rows)


def _where(cake: Cake, row: SessionRow) -> str:
    """Backend's own words for where the session runs: job id, node, partition, GPUs..."""
    from jupyter_cake.backends import get_backend
    from jupyter_cake.backends.base import Allocation

    return get_backend(row.backend).describe(Allocation(row.backend, Path(row.session_dir), row.allocation_data))


def targets_table() -> str:
    from jupyter_cake.backends import available_backends
    from jupyter_cake.targets import config_path, load_named_targets, resolve_target

    rows: list[tuple[str, str, str]] = [("local", "local", "built in: this machine, no setup")]
    for name in load_named_targets():
        try:
            rows.append((name, resolve_target([name]).describe(), ""))
        except Exception as exc:  # noqa: BLE001 - show the broken entry instead of failing the listing
            rows.append((name, "?", f"invalid: {exc}"))
    listing = table(("TARGET", "RESOURCES", "NOTE"), rows)
    return f"{listing}\n\nNamed targets file: {config_path()}\nInstalled backends: {', '.join(available_backends())}"


def runs_table(cake: Cake, limit: int = 20, session_id: str | None = None) -> str:
    for row in cake.store.sessions(live_only=True):
        cake.refresh(row)  # settles detached runs that finished meanwhile
    runs = cake.store.runs(session_id=session_id, limit=limit)
    if not runs:
        return "No runs yet. Run a cell with %%cake."
    rows = []
    for run in runs:
        first = (run.code.strip().splitlines() or [""])[0][:40]
        duration = run.duration
        rows.append((run.id, run.session_id, run.state, _ago(time.time() - run.created),
                     f"{duration:.2f}s" if duration is not None else "-", "detached" if run.detached else "",
                     first, run.error or ""))  # fmt: skip
    return table(("RUN", "SESSION", "STATE", "AGE", "DURATION", "", "CODE", "ERROR"), rows)


def logs_text(cake: Cake, ref: str) -> str:
    run = cake.find_run(ref)
    text = journal_text(cake.journal(run))
    return text if text else f"(run {run.id} has no output yet; state: {run.state})\n"

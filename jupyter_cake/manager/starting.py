"""Starting sessions and re-attaching to them: a new allocation + nanny + channel, or the live one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jupyter_cake import engine
from jupyter_cake.addons import addons_for
from jupyter_cake.backends import get_backend
from jupyter_cake.backends.base import Allocation, Backend, NannyInfo, Progress, idle_minutes, no_progress
from jupyter_cake.errors import CakeError
from jupyter_cake.manager.handle import Handle
from jupyter_cake.manager.state import CONNECTION_FILE, CakeState
from jupyter_cake.session import RemoteSession
from jupyter_cake.store import SessionRow, new_id, private_dir, sessions_root
from jupyter_cake.targets import Target

REATTACH_TIMEOUT_S = 10.0


def default_owner() -> str:
    """Sessions are reused per notebook: Jupyter tells a kernel its notebook through JPY_SESSION_NAME."""
    return os.environ.get("JPY_SESSION_NAME", "")


def preflight(target: Target) -> None:
    """Check offline, before anything is allocated, that ``target`` can be started from here: its
    backend is installed and, where the backend has one, its own preflight passes (e.g. SkyPilot found).
    Front doors that record a target for later (IDE kernelspecs) call this so a typo fails at once."""
    backend = get_backend(target.backend_name)
    check = getattr(backend, "preflight", None)
    if check is not None:
        check(target)


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


class Starting(CakeState):
    def use(
        self,
        target: Target,
        *,
        name: str | None = None,
        owner: str | None = None,
        new: bool = False,
        progress: Progress = no_progress,
        timeout: float | None = None,
    ) -> tuple[Handle, bool]:
        """A live session for ``target``: the existing one with that name (re-attached) unless ``new``.
        Returns (handle, started) where started says whether a new session was launched.
        ``timeout`` bounds the start; None: the backend's own default (a cloud launch takes minutes)."""
        name = name or target.name or target.canonical()
        owner = default_owner() if owner is None else owner
        backend = get_backend(target.backend_name)  # fails early for unavailable infra
        for addon in addons_for(target):  # say so before allocating anything
            addon.check(target, backend)
        if timeout is None:
            timeout = backend.start_timeout
        if not new:
            row = self.store.live_session(name, owner)
            if row is not None and row.target == target.canonical():
                handle = self.connect(row)
                if handle is not None:
                    return handle, False
            elif row is not None:
                progress(f"session {row.id} ({name}) runs a different target; starting a new one")
        return self._start(target, backend, name, owner, progress, timeout), True

    def _start(
        self, target: Target, backend: Backend, name: str, owner: str, progress: Progress, timeout: float
    ) -> Handle:
        session_id = new_id("s-")
        session_dir = private_dir(sessions_root(self.store) / session_id)
        now = time.time()
        row = SessionRow(
            id=session_id, name=name, owner=owner, target=target.canonical(),
            target_json=json.dumps(target.to_dict()), backend=backend.name, state="starting",
            session_dir=str(session_dir), created=now, updated=now,
            price_per_hour=backend.price_per_hour(target), idle_minutes=idle_minutes(target),
        )  # fmt: skip
        self.store.add_session(row)
        allocation: Allocation | None = None
        try:
            progress(f"starting session {session_id} on {target.describe()}", transient=True)
            allocation = backend.allocate(target, session_dir, progress)
            self.store.update_session(session_id, allocation=json.dumps(allocation.data))
            info = backend.start_nanny(allocation, target, progress, timeout)
            if allocation.data.get("price_per_hour") is not None:  # known only once launched (SkyPilot)
                row.price_per_hour = float(allocation.data["price_per_hour"])
                self.store.update_session(session_id, price_per_hour=row.price_per_hour)
            row.allocation = json.dumps(allocation.data)
            self.store.update_session(session_id, allocation=row.allocation)
            _write_private_json(session_dir / CONNECTION_FILE, info.to_report())
            handle = self._open(row, target, backend, allocation, info, timeout)
            for addon in addons_for(target):  # e.g. the Ray head, booting beside the kernel
                addon.ready(handle, progress)
        except BaseException as exc:
            # Nothing may be left running behind a failed start (including Ctrl-C during it).
            if allocation is not None:
                backend.release(allocation)
            reason = str(exc) if isinstance(exc, CakeError) else f"{type(exc).__name__}: {exc}"
            self.store.update_session(session_id, state="failed", reason=reason[:2000])
            raise
        self.store.update_session(session_id, state="running")
        handle.row.state = "running"
        return handle

    def _open(
        self, row: SessionRow, target: Target, backend: Backend, allocation: Allocation, info: NannyInfo,
        timeout: float, wait_kernel: bool = True,
    ) -> Handle:  # fmt: skip
        channel = backend.open_channel(allocation, info)
        row.allocation = json.dumps(allocation.data)  # the channel may have recorded its local ports
        self.store.update_session(row.id, allocation=row.allocation)
        remote = RemoteSession(channel, label=f"{row.id} ({row.name})")
        try:
            engine.run(remote.connect(timeout, wait_kernel=wait_kernel))
        except BaseException:
            engine.run(remote.close(), timeout=5)
            raise
        handle = Handle(row, target, backend, allocation, remote, self)
        self._handles[row.id] = handle
        return handle

    def connect(self, row: SessionRow) -> Handle | None:
        """Re-attach to a session started earlier (maybe by another process); None if it has ended."""
        cached = self._handles.get(row.id)
        if cached is not None:
            return cached
        backend = get_backend(row.backend)
        allocation = self._allocation(row)
        info_path = Path(row.session_dir) / CONNECTION_FILE
        status = backend.status(allocation)
        if status == "stopped":
            self.mark_stopped(row)
            return None
        if status != "running" or row.state == "starting" or not info_path.exists():
            return None  # queued, unreachable right now, or still being started by another process
        info = NannyInfo.from_report(json.loads(info_path.read_text()))
        target = Target.from_dict(json.loads(row.target_json))
        try:
            return self._open(row, target, backend, allocation, info, REATTACH_TIMEOUT_S, wait_kernel=False)
        except CakeError:
            # The nanny did not answer: gone for good only if the backend agrees (it may be unreachable).
            if backend.status(allocation) == "stopped":
                self.mark_stopped(row)
            return None

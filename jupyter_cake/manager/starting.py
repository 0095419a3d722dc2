"""Starting sessions and re-attaching to them: a new allocation + nanny + channel, or the live one."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from jupyter_cake import engine
from jupyter_cake.addons import addons_for
from jupyter_cake.backends import get_backend
from jupyter_cake.backends.base import Allocation, Backend, NannyInfo, Progress, idle_minutes, no_progress
from jupyter_cake.errors import CakeError, ChannelRefused
from jupyter_cake.manager.handle import Handle
from jupyter_cake.manager.state import CONNECTION_FILE, CakeState
from jupyter_cake.procs import pid_alive, process_start_time
from jupyter_cake.session import RemoteSession
from jupyter_cake.store import (
    SessionRow, new_id, private_dir, save_session_env, session_target, sessions_root, write_private_json,
)  # fmt: skip
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
    refuse_unsupported(target, backend)
    check = getattr(backend, "preflight", None)
    if check is not None:
        check(target)


def refuse_unsupported(target: Target, backend: Backend) -> None:
    """Options the target's backend would ignore: one clear error instead of a session that quietly is
    not what was asked for."""
    if target.image is not None and not backend.runs_images:
        raise CakeError(
            f"--image {target.image} can't be honoured on {target.infra}: the {backend.name} backend runs the "
            "target's own Python (set `python` in targets.toml to choose it), not a container image. Targets "
            "that run an image: k8s/<context> and SkyPilot's clouds (aws, gcp, azure, ...). Drop --image here."
        )


# In a starting session's allocation data: the process starting it ({pid, host, since}), or None once
# that process gave up half-way (interrupted while cleaning up). A row stuck in "starting" whose starter
# is gone is reaped: what its backend may hold (found from the intent data) is released.
STARTER = "starter"


def _starter() -> dict[str, Any]:
    pid = os.getpid()
    # The start time tells this process from a later one that reuses its pid.
    return {"pid": pid, "host": socket.gethostname(), "since": process_start_time(pid)}


def dead_start(row: SessionRow) -> str | None:
    """Why ``row``'s start can never finish (the process starting it is gone), or None while it may
    (still starting, elsewhere or here, or not "starting" at all)."""
    data = row.allocation_data
    if row.state != "starting" or STARTER not in data:
        return None  # a row written by an older Cake has no starter record: nobody can tell
    starter = data[STARTER]
    if starter is None:
        return "the start was interrupted while it cleaned up"
    if starter.get("host") != socket.gethostname():
        return None  # started on another machine sharing this store: its process can't be checked here
    pid = int(starter["pid"])
    if pid_alive(pid) and starter.get("since") in (None, process_start_time(pid)):
        return None
    return f"the process that started it (pid {pid}) is gone"


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
        refuse_unsupported(target, backend)
        for addon in addons_for(target):  # say so before allocating anything
            addon.check(target, backend)
        if timeout is None:
            timeout = backend.start_timeout
        if not new:
            row = self.store.live_session(name, owner)
            if row is not None and self.reap_dead_start(row) is not None:
                row = None  # a killed start of this name: what it held is released now; start afresh
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
        starter = _starter()
        row = SessionRow(
            id=session_id, name=name, owner=owner, target=target.canonical(),
            target_json=json.dumps(target.to_dict(env_values=False)), backend=backend.name, state="starting",
            session_dir=str(session_dir), created=now, updated=now, allocation=json.dumps({STARTER: starter}),
            price_per_hour=backend.price_per_hour(target), idle_minutes=idle_minutes(target),
        )  # fmt: skip
        save_session_env(session_dir, target)  # --env values: only there (0600); the row has them masked
        self.store.add_session(row)
        # Before anything is held, the row says what will name it (job name, Pod name...), so if this
        # process dies during the start, whoever looks next finds the allocation and releases it.
        intent: dict[str, Any] | None = None
        allocation: Allocation | None = None
        try:
            intent = {**backend.intent(target, session_dir), STARTER: starter}
            self.store.update_session(session_id, allocation=json.dumps(intent))
            progress(f"starting session {session_id} on {target.describe()}", transient=True)
            allocation = backend.allocate(target, session_dir, progress)
            allocation.data[STARTER] = starter
            self.store.update_session(session_id, allocation=json.dumps(allocation.data))
            info = backend.start_nanny(allocation, target, progress, timeout)
            if info.plaintext:
                where = f" on {info.host}" if info.host else ""
                progress(f"warning: session {session_id}'s kernel traffic is not encrypted{where}, so other users "
                         f"of that machine could read its output: {info.plaintext}")  # fmt: skip
            if allocation.data.get("price_per_hour") is not None:  # known only once launched (SkyPilot)
                row.price_per_hour = float(allocation.data["price_per_hour"])
                self.store.update_session(session_id, price_per_hour=row.price_per_hour)
            row.allocation = json.dumps(allocation.data)
            self.store.update_session(session_id, allocation=row.allocation)
            write_private_json(session_dir / CONNECTION_FILE, info.to_report())
            handle = self._open(row, target, backend, allocation, info, timeout)
            for addon in addons_for(target):  # e.g. the Ray head, booting beside the kernel
                addon.ready(handle, progress)
            stored = self.store.session(session_id)
            if stored is not None and stored.state != "starting":  # `cake down` meanwhile: don't revive it
                self._handles.pop(session_id, None)
                handle.close()
                raise CakeError(f"Session {session_id} ({name}) was stopped while it started: {stored.reason}.")
        except BaseException as exc:
            # Nothing may be left running behind a failed start (including Ctrl-C during it). An error
            # of allocate's own (CakeError) comes with whatever it made already freed; anything else
            # (Ctrl-C, a timed-out call) may have left an allocation that only the intent names.
            held = allocation
            if held is None and intent is not None and not isinstance(exc, CakeError):
                held = Allocation(backend.name, session_dir, dict(intent))
            try:
                if held is not None:
                    backend.release(held)
            except BaseException:
                # Interrupted while cleaning up (a second Ctrl-C): the row stays "starting" with no
                # starter, so the next `cake status`, start or `cake down` releases what is left.
                self.store.update_session(session_id, allocation=json.dumps({**(held.data if held else {}), STARTER: None}))
                raise
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
        if row.state == "starting":
            row = self.store.session(row.id) or row  # the caller's copy may predate the starter record
            if self.reap_dead_start(row) is not None or STARTER in row.allocation_data:
                return None  # reaped now, or still being started by a live process: leave that alone
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
        target = session_target(row)  # with its --env values, from the session directory
        try:
            return self._open(row, target, backend, allocation, info, REATTACH_TIMEOUT_S, wait_kernel=False)
        except ChannelRefused:
            raise  # e.g. a changed host key: the user must see it, not a silent second session
        except CakeError:
            # The nanny did not answer: gone for good only if the backend agrees (it may be unreachable).
            if backend.status(allocation) == "stopped":
                self.mark_stopped(row)
            return None

    def reap_dead_start(self, row: SessionRow, strict: bool = False) -> str | None:
        """If ``row`` is stuck in "starting" because the process starting it is gone, release what its
        backend may hold (by job name, Pod name, session directory: the intent data) and record that
        the start failed; returns what was done, for the user. None: not a dead start, left alone.
        When the release fails (say, the cluster is unreachable) the row stays "starting" so a later
        look tries again; ``strict`` raises that as a CakeError instead of returning it."""
        why = dead_start(row)
        if why is None:
            return None
        allocation = self._allocation(row)
        allocation.data.pop(STARTER, None)
        try:
            get_backend(row.backend).release(allocation)
        except Exception as exc:  # noqa: BLE001 - e.g. the cluster is unreachable: try again next time
            note = f"its start was interrupted ({why}) and releasing what it holds failed: {exc}"
            self.store.update_session(row.id, reason=note[:2000])
            if strict:
                raise CakeError(f"Session {row.id} ({row.name}): {note}. Try `cake down {row.id}` again.") from None
            return note
        note = f"its start was interrupted ({why}); released what it held"
        self.store.update_session(row.id, state="failed", reason=note)
        return note

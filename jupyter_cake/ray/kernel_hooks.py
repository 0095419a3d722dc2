"""Inside a Ray session's kernel: worker prints reach the cell that caused them.

Ray forwards worker stdout/stderr to the driver (here: the kernel) through files, its log monitor
(polling every 0.1 s), GCS pubsub and a printing thread. A task that prints and returns quickly
lets ``ray.get`` return before its lines reach the driver; the cell ends, and the lines would land
after it (Cake routes outputs by cell, so they would show nowhere live). So at the end of each cell
the kernel waits, bounded, until every line that this node's workers wrote for our job has arrived.

Counting is exact: lines written are read from the worker log files the way Ray's log monitor reads
them (marker lines skipped, per-job), lines arrived are counted by a handler on Ray's own stdstream
dispatcher, installed the moment ``ray`` is imported (an import hook, so the very first cell counts
too). Workers on other nodes write files this node can't see: their lines are not waited for.

Installed by the kernel launcher only for sessions with Ray (the Ray head names this module among its
``kernel_hooks``, see jupyter_cake.nanny.services); it imports nothing of Ray itself until the user does.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

DRAIN_MAX_S = 3.0  # never hold a cell longer than this for worker output
WATCHED_MODULE = "ray._private.worker"
# Ray's worker log names carry the job id: worker-<worker id>-<job id>-<pid>.{out,err}
WORKER_LOG = re.compile(r"worker-[0-9a-f]+-([0-9a-f]+)-\d+\.(out|err)$")
MARKERS = (":actor_name:", ":task_name:", ":task_attempt_start:", ":task_attempt_end:")


class _FileState:
    __slots__ = ("offset", "job", "partial")

    def __init__(self, job: str | None) -> None:
        self.offset = 0
        self.job = job
        self.partial = b""


class OutputDrain:
    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self.files: dict[str, _FileState] = {}
        self.written: Counter[str] = Counter()  # lines workers wrote, per job ("" = unknown job)
        self.arrived: Counter[str] = Counter()  # lines Ray delivered to this driver, per job
        self.lock = threading.Lock()
        self.hooked = False

    # -- arrival side: a handler on Ray's dispatcher -------------------------------------------------
    def hook(self, worker_module: Any) -> None:
        if self.hooked:
            return
        self.hooked = True
        worker_module.global_worker_stdstream_dispatcher.add_handler("cake_output_drain", self._arrived)

    def _arrived(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.arrived[str(data.get("job") or "")] += len(data.get("lines") or ())

    # -- written side: the worker log files, read like Ray's log monitor reads them -------------------
    def scan(self) -> None:
        try:
            entries = list(os.scandir(self.logs_dir))
        except OSError:
            return
        for entry in entries:
            state = self.files.get(entry.name)
            if state is None:
                match = WORKER_LOG.match(entry.name)
                if not match:
                    continue
                state = self.files[entry.name] = _FileState(match.group(1))
            try:
                if entry.stat().st_size <= state.offset:
                    continue  # nothing new: a stat, not a read (this runs after every cell)
                with open(entry.path, "rb") as handle:
                    handle.seek(state.offset)
                    chunk = handle.read()
            except OSError:
                continue
            if not chunk:
                continue
            state.offset += len(chunk)
            *lines, state.partial = (state.partial + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line.startswith(":job_id:"):
                    state.job = line.split(":job_id:", 1)[1]
                elif not line.startswith(MARKERS):
                    self.written[state.job or ""] += 1

    def drain(self, job: str) -> None:
        """Wait (bounded) until this node's workers' lines for ``job`` have reached the driver."""
        deadline = time.monotonic() + DRAIN_MAX_S
        waited = False
        while True:
            self.scan()
            with self.lock:
                pending = self.written[job] - self.arrived[job]
            if pending <= 0 or time.monotonic() > deadline:
                break
            waited = True
            time.sleep(0.01)
        if waited:
            time.sleep(0.005)  # Ray's own print handler runs right after ours for the last batch
            sys.stdout.flush()
            sys.stderr.flush()


class _RayImportHook(importlib.abc.MetaPathFinder):
    """Calls ``on_import(module)`` right after ``ray._private.worker`` is executed."""

    def __init__(self, on_import: Any) -> None:
        self.on_import = on_import

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != WATCHED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original = loader.exec_module
        hook = self

        def exec_module(module: Any) -> None:
            original(module)
            try:
                hook.on_import(module)
            finally:
                if hook in sys.meta_path:
                    sys.meta_path.remove(hook)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install(shell: Any) -> OutputDrain | None:
    temp_dir = os.environ.get("CAKE_RAY_TEMP_DIR")
    if not temp_dir:
        return None
    drain = OutputDrain(Path(temp_dir) / "session_latest" / "logs")
    if WATCHED_MODULE in sys.modules:
        drain.hook(sys.modules[WATCHED_MODULE])
    else:
        sys.meta_path.insert(0, _RayImportHook(drain.hook))

    def post_run_cell(_result: Any) -> None:
        ray = sys.modules.get("ray")
        if ray is None or not drain.hooked:
            return
        try:
            if not ray.is_initialized():
                return
            job = ray.get_runtime_context().get_job_id()
        except Exception:  # noqa: BLE001 - never break the user's cell over output bookkeeping
            return
        drain.drain(job)

    shell.events.register("post_run_cell", post_run_cell)
    return drain

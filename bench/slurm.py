#!/usr/bin/env python
"""jupyter_cake on a real Slurm cluster: cold start and warm cell round trip, side by side with
ipyparallel's Slurm engines, submitit and raw `srun`.

    python bench/slurm.py [--quick] [--json out.json] [--keep-data] [--partition debug]

Needs the local test cluster (`sudo tests/infra/slurm-up.sh`; `source /tmp/cake-slurm/env.sh` sets
SLURM_CONF, which this script also picks up by itself). Prints one markdown table (median and p90
over repetitions, goal, verdict) to stdout; progress and errors go to stderr. See bench/README.md.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from harness import MARK_CELL, VERDICT_HEADER, BenchBase, BenchTimeout, RemotePlan, Result, fmt_seconds  # noqa: E402
from harness import isolated_tmp, parse_args, percentile, print_notes, print_report, quiesce  # noqa: E402
from harness import json_record, short_error, tmp_remover, verdict_row, write_json  # noqa: E402
from harness import stderr_log as log  # noqa: E402
from run import RTT_BLOCK, env_line, environment, run_guarded  # noqa: E402
from systems import Cake, Px, cake_shell  # noqa: E402

SLURM_ROOT = Path("/tmp/cake-slurm")
SSH_CONFIG = SLURM_ROOT / "ssh" / "ssh_config"
LOGIN_ALIAS = "cake-login"
# The remote Python is this venv's: it has ipykernel and cloudpickle (Cake's nanny), ipyparallel
# (its engines) and submitit (its job runner), as a cluster's Python would.
PYTHON = str(REPO / ".venv" / "bin" / "python")
REMOTE_SESSIONS = Path.home() / ".cache" / "jupyter-cake" / "sessions"  # Cake's session dirs on the login node

COLD_GOAL_S = 2.0
RTT_GOAL_S = 0.001  # Slurm within 1 ms of the local target


@dataclass
class Plan(RemotePlan):
    queue_wait_s: float  # longest wait for foreign jobs to finish before a timed rep


FULL = Plan(cold_n=7, rtt_n=200, rtt_warmup=20, queue_wait_s=120.0)
QUICK = Plan(cold_n=2, rtt_n=60, rtt_warmup=10, queue_wait_s=30.0)


# -- the Slurm queue ------------------------------------------------------------------------------------


class Queue:
    """The jobs this benchmark created (by id, or by a job name it chose), and waiting for an empty queue.

    Cake names its jobs ``cake-<session id>``, with the session id from our temporary store; the
    ipyparallel engine job is ``ipengine-<cluster id>``; submitit and srun jobs get names we pick."""

    def __init__(self, cake_data_dir: Path, tag: str) -> None:
        self.cake_data_dir = cake_data_dir
        self.tag = tag  # job name of our submitit / srun jobs
        self.ids: set[str] = set()
        self.names: set[str] = {tag}
        self.foreign_waits: list[tuple[str, float, int]] = []  # (what, seconds waited, foreign jobs seen)
        self.busy_reps: dict[str, int] = {}  # rows whose timed rep still had foreign jobs queued
        self.stale: set[str] = set()  # foreign jobs that outlasted a full wait

    def jobs(self) -> list[tuple[str, str, str]]:
        """(id, name, state) of every job in the queue, anyone's."""
        done = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T"], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"squeue failed: {done.stderr.strip()}")
        out = []
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                out.append((parts[0], parts[1], parts[2]))
        return out

    def mine(self, job: tuple[str, str, str]) -> bool:
        jid, name, _ = job
        if jid in self.ids or name in self.names:
            return True
        if name.startswith("cake-s-"):  # a Cake session of ours, even one whose start failed half way
            return (self.cake_data_dir / "sessions" / name[len("cake-"):]).exists()
        return False

    def wait_empty(self, what: str, max_s: float, own_max_s: float = 45.0, keep_own: bool = False) -> int:
        """Wait (untimed) until no job at all is queued. Our own leftovers (a job still COMPLETING after
        scancel) are waited for up to ``own_max_s`` and then cancelled again; foreign jobs (other test
        runs on the same cluster) up to ``max_s``. With ``keep_own``, our jobs are ignored: wait only
        for the foreign ones. Returns how many foreign jobs were still queued when the wait gave up
        (0 normally)."""
        start = time.monotonic()
        foreign_seen: set[str] = set()
        nudged = False
        while True:
            everything = self.jobs()
            # Foreign jobs that already outlasted one full wait are background load from now on: they
            # don't make us wait again (the rows they overlap are still marked).
            jobs = [j for j in everything if j[0] not in self.stale]
            if keep_own:
                jobs = [j for j in jobs if not self.mine(j)]
            if not jobs:
                stale = [j for j in everything if j[0] in self.stale]
                if stale:
                    return len(stale)
                break
            foreign = [j for j in jobs if not self.mine(j)]
            foreign_seen.update(j[0] for j in foreign)
            waited = time.monotonic() - start
            own = [j for j in jobs if self.mine(j)]
            if own and waited > own_max_s and not nudged:
                log(f"{what}: our job(s) {', '.join(j[0] for j in own)} still queued after {waited:.0f} s; scancel again")
                self.cancel([j[0] for j in own])
                nudged = True
            if waited > max_s and not own:
                log(f"{what}: foreign job(s) {', '.join(j[0] for j in foreign)} still queued after {waited:.0f} s; "
                    "running anyway, and not waiting for them again")  # fmt: skip
                self.stale.update(j[0] for j in foreign)
                self.foreign_waits.append((what, waited, len(foreign_seen)))
                return len(foreign)
            if waited > max_s + own_max_s:
                raise RuntimeError(f"our Slurm jobs {[j[0] for j in own]} did not leave the queue")
            time.sleep(0.1)
        if foreign_seen:
            waited = time.monotonic() - start
            log(f"{what}: waited {waited:.1f} s for {len(foreign_seen)} foreign job(s) to finish")
            self.foreign_waits.append((what, waited, len(foreign_seen)))
        return 0

    def cancel(self, ids: list[str]) -> None:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


# -- the systems -----------------------------------------------------------------------------------------


class SlurmPx(Px):
    """``systems.Px`` with its engine in a Slurm job (ipyparallel's SlurmEngineSetLauncher); the
    controller runs here, on the login node, as ipyparallel's Slurm docs set it up."""

    def __init__(self, ip: Any, partition: str) -> None:
        import ipyparallel as ipp
        from traitlets.config import Config

        super().__init__(ip)
        config = Config()
        config.SlurmEngineSetLauncher.queue = partition
        config.SlurmEngineSetLauncher.engine_cmd = [PYTHON, "-m", "ipyparallel.engine"]
        self.cluster = ipp.Cluster(n=1, engines="slurm", controller="local", config=config,
                                   log_level=logging.WARNING)  # fmt: skip

    @property
    def job_name(self) -> str:
        return f"ipengine-{self.cluster.cluster_id}"

    def job_ids(self) -> list[str]:
        return [str(es.job_id) for es in self.cluster.engines.values() if getattr(es, "job_id", "")]


# -- the benchmark -----------------------------------------------------------------------------------------

COLD = "1. Cold start: submit until the first cell's output (idle cluster)"
RTT = "2. Warm round trip, trivial cell (`pass`)"

CAKE_HPC = "jupyter_cake `%cake use hpc --new` (login node over SSH) + first `%%cake`"
CAKE_HPC_LOCAL = "jupyter_cake `%cake use hpc-local --new` (sbatch on this host) + first `%%cake`"
PX_COLD = "ipyparallel `Cluster(n=1, engines='slurm')` start + first `%px`"
SUBMITIT = "submitit `AutoExecutor(cluster='slurm')` submit → `result()`"
SRUN = "`srun true`"

RTT_HPC = "jupyter_cake `%%cake` on hpc (SSH port forwards)"
RTT_HPC_LOCAL = "jupyter_cake `%%cake` on hpc-local (node loopback)"
RTT_LOCAL = "jupyter_cake `%%cake` on local"
RTT_PX = "ipyparallel `%px` (1 Slurm engine)"

COLD_ATTEMPTS = 3  # a cold rep that fails (e.g. another test run cancelled our job) is tried again
SUBMITIT_LIMIT_S = 120.0
USE_TIMEOUT_S = 60  # `%cake use --timeout`: how long a session start may wait in the queue


def short_name(system: str) -> str:
    """The first `code` part of a row label, for progress lines."""
    return system.split("`")[1] if "`" in system else system


class Warm:
    """One system of the warm section: start it, make it current, run one trivial cell, stop it."""

    def __init__(self, result: Result, start: Callable[[], Any], call: Callable[[], Any],
                 stop: Callable[[], Any], switch: Callable[[], Any] = lambda: None) -> None:  # fmt: skip
        self.result = result
        self.start = start
        self.call = call
        self.stop = stop
        self.switch = switch
        self.restarts_left = 1


class SlurmBench(BenchBase):
    def __init__(self, plan: Plan, tmp: Path, partition: str, keep_data: bool = False) -> None:
        super().__init__()
        self.plan = plan
        self.tmp = tmp
        self.partition = partition
        self.keep_data = keep_data
        self.cake_data_dir = tmp / "cake"
        self.retries: list[str] = []  # failed attempts that were tried again (not errors in the table)
        self.redone = 0  # cold reps discarded because a foreign job arrived during them
        self.queue = Queue(self.cake_data_dir, tag=f"cake-bench-{os.getpid()}")
        self.cake: Cake | None = None
        self.slow_release: list[str] = []  # `%cake down` returned while the job was still queued
        self.session_ids: set[str] = set()
        self.use_split: dict[str, list[float]] = {}  # cold start: seconds in `%cake use` alone, per target
        self.last_use: tuple[str, float] | None = None
        self.warm_foreign: set[str] = set()  # foreign job ids seen between warm blocks
        self.local_by_phase: dict[str, list[float]] = {}  # the local session's samples, per warm phase

    # setup ------------------------------------------------------------------------------------------
    def start_shell(self) -> None:
        self.ip = cake_shell()
        self.cake = Cake(self.ip, self.cake_data_dir)
        # Whatever happens: no session, job or remote session directory of ours outlives the run.
        self.cleanup.push("remote session directories", self.remove_remote_dirs)
        self.cleanup.push("scancel leftover jobs", self.cancel_leftovers)
        self.cleanup.push("%cake down --all", self.cake.down_all)

    def cancel_leftovers(self) -> None:
        """scancel whatever of ours is still queued, then wait (briefly) until Slurm has let it go."""
        try:
            leftover = [j for j in self.queue.jobs() if self.queue.mine(j)]
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log(f"squeue failed ({short_error(exc)}); scancel every job id of ours")
            self.queue.cancel(sorted(self.queue.ids))
            return
        running = [j[0] for j in leftover if j[2] != "COMPLETING"]
        if running:
            log(f"cancelling leftover Slurm job(s) of ours: {', '.join(running)}")
        self.queue.cancel([j[0] for j in leftover])
        deadline = time.monotonic() + 30
        while leftover and time.monotonic() < deadline:
            time.sleep(0.2)
            leftover = [j for j in self.queue.jobs() if self.queue.mine(j)]
        if leftover:
            log(f"jobs of ours still queued after cleanup: {', '.join(j[0] + ' ' + j[2] for j in leftover)}")

    def remove_remote_dirs(self) -> None:
        """Cake keeps each Slurm session's directory (job output, journal) in the login node's home;
        on this cluster that is our own home. Remove the ones this run created."""
        if self.keep_data:
            return
        for sid in sorted(self.session_ids | self.stored_session_ids()):
            path = REMOTE_SESSIONS / sid
            if sid.startswith("s-") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def stored_session_ids(self) -> set[str]:
        root = self.cake_data_dir / "sessions"
        return {p.name for p in root.iterdir()} if root.is_dir() else set()

    # jupyter_cake helpers ----------------------------------------------------------------------------
    def cake_use(self, target: str, new: bool = False) -> str:
        """`%cake use TARGET [--new]`; returns the Slurm job id ('' for local) and remembers it."""
        assert self.cake is not None
        flags = f" --new --timeout {USE_TIMEOUT_S}" if new else ""
        self.ip.run_line_magic("cake", f"use {target}{flags}")
        handle = self.cake.magics.current
        self.session_ids.add(handle.id)
        job = str(handle.allocation.data.get("job_id") or "")
        if job:
            self.queue.ids.add(job)
        return job

    def cake_down(self, job: str) -> None:
        """`%cake down` of the current session; then check that Slurm really let the job go."""
        assert self.cake is not None
        if not self.cake.live:
            return
        self.cake.down()
        if job and any(j[0] == job for j in self.queue.jobs()):
            self.slow_release.append(job)

    # 1. cold start ---------------------------------------------------------------------------------
    def cold_cake(self, target: str) -> float:
        assert self.cake is not None
        job = ""
        t0 = time.time()
        try:
            job = self.cake_use(target, new=True)
            used = time.time()
            arrived = self.stamp.first_output(lambda: self.cake.cell(MARK_CELL))
            self.last_use = (target, used - t0)
            return arrived - t0
        finally:
            try:
                self.cake_down(job)  # the session `%cake use` just made current
            finally:
                if job:
                    self.queue.cancel([job])  # a no-op normally: down has cancelled it

    def cold_px(self) -> float:
        px = SlurmPx(self.ip, self.partition)
        px.cluster.engine_timeout = 30  # it starts in ~7 s; don't sit 60 s on an engine job cancelled from outside
        self.queue.names.add(px.job_name)

        def stop() -> None:
            try:
                px.stop()
            finally:
                self.queue.cancel(px.job_ids())

        stop_now = self.cleanup.push("cold ipyparallel cluster", stop)
        try:
            t0 = time.perf_counter()
            px.start()
            self.queue.ids.update(px.job_ids())
            px.cell("pass")
            return time.perf_counter() - t0
        finally:
            stop_now()

    def cold_submitit(self) -> float:
        import operator

        import submitit

        logging.getLogger("submitit").setLevel(logging.ERROR)  # "sacct failed" warnings: no accounting here
        executor = submitit.AutoExecutor(folder=self.tmp / "submitit" / "%j", cluster="slurm", slurm_python=PYTHON)
        executor.update_parameters(slurm_partition=self.partition, timeout_min=10, name=self.queue.tag,
                                   cpus_per_task=1, tasks_per_node=1, nodes=1)  # fmt: skip
        job = None
        try:
            t0 = time.perf_counter()
            job = executor.submit(operator.add, 2, 3)
            jid = str(job.job_id)
            self.queue.ids.add(jid)
            # `job.result()` is `while not job.done(): sleep(1)` and then reads the result. Without Slurm
            # accounting (sacct), as here, submitit never learns that a job died without a result and
            # would wait forever; so the same loop, plus a check that the job is still queued.
            while not job.done():
                waited = time.perf_counter() - t0
                if waited > SUBMITIT_LIMIT_S:
                    raise TimeoutError(f"submitit job {jid} gave no result within {SUBMITIT_LIMIT_S:g} s")
                if waited > 5 and not any(j[0] == jid for j in self.queue.jobs()):
                    time.sleep(2)  # the result file may still be on its way
                    if not job.done():
                        raise RuntimeError(f"submitit job {jid} left the queue without a result (cancelled from outside?)")
                    break
                time.sleep(1)
            value = job.result()
            took = time.perf_counter() - t0
            if value != 5:
                raise RuntimeError(f"submitit returned {value!r}, expected 5")
            return took
        finally:
            if job is not None:
                self.queue.cancel([str(job.job_id)])  # it may still be finishing; the queue wait sees it go

    def cold_srun(self) -> float:
        argv = ["srun", f"--partition={self.partition}", f"--job-name={self.queue.tag}", "--ntasks=1", "true"]
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        took = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"srun failed ({done.returncode}): {done.stderr.strip()[:200]}")
        return took

    def cold_rep(self, what: str, fn: Callable[[], float]) -> tuple[float, bool]:
        """One timed cold start on an empty queue and quiet CPUs. Tried again if it fails, or if a foreign
        job showed up while it ran (it may have waited for a CPU); returns (seconds, still disturbed)."""
        for attempt in range(1, COLD_ATTEMPTS + 1):
            busy = self.queue.wait_empty(what, self.plan.queue_wait_s)
            quiesce(3.0)
            try:
                sample = fn()
            except (KeyboardInterrupt, BenchTimeout, SystemExit):
                raise
            except BaseException as exc:
                if attempt == COLD_ATTEMPTS:
                    raise
                self.retries.append(f"{what} (attempt {attempt}): {short_error(exc)}")
                log(f"{what}: attempt {attempt} failed ({short_error(exc)}); trying again")
                continue
            foreign = [j for j in self.queue.jobs() if not self.queue.mine(j)]
            arrived = [j for j in foreign if j[0] not in self.queue.stale]
            if arrived and attempt < COLD_ATTEMPTS:
                self.redone += 1
                log(f"{what}: foreign job(s) {', '.join(j[0] for j in arrived)} in the queue during the rep; redoing it")
                continue
            return sample, bool(busy or foreign)
        raise AssertionError("unreachable")

    def bench_cold(self) -> None:
        n = self.plan.cold_n
        log(f"{COLD}: {n} reps per system, interleaved; queue empty and CPUs quiet before each")
        systems: list[tuple[str, Callable[[], float]]] = [
            (CAKE_HPC, lambda: self.cold_cake("hpc")),
            (CAKE_HPC_LOCAL, lambda: self.cold_cake("hpc-local")),
            (PX_COLD, self.cold_px),
            (SUBMITIT, self.cold_submitit),
            (SRUN, self.cold_srun),
        ]
        for rep in range(n):
            for name, fn, r in self.working("cold", COLD, systems):
                try:
                    self.last_use = None
                    sample, disturbed = self.cold_rep(f"cold {rep + 1}/{n} {short_name(name)}", fn)
                    r.samples.append(sample)
                    if self.last_use is not None:  # the kept rep's `%cake use` part
                        self.use_split.setdefault(self.last_use[0], []).append(self.last_use[1])
                    if disturbed:
                        self.queue.busy_reps[name] = self.queue.busy_reps.get(name, 0) + 1
                except BaseException as exc:
                    self.fail(r, f"cold start {name}", exc)
            log(f"cold rep {rep + 1}/{n}: " + ", ".join(
                f"{short_name(name)} {fmt_seconds(self.result('cold', COLD, name).samples[-1])}"
                for name, _ in systems if self.result("cold", COLD, name).samples))  # fmt: skip

    # 2. warm round trip --------------------------------------------------------------------------------
    def restart(self, system: Warm, exc: BaseException) -> bool:
        """After a failure in the timed loop (e.g. its job was cancelled from outside): one restart."""
        if isinstance(exc, (KeyboardInterrupt, BenchTimeout, SystemExit)):
            raise exc
        if system.restarts_left <= 0:
            return False
        system.restarts_left -= 1
        self.retries.append(f"warm {system.result.system}: {short_error(exc)}; restarted it")
        log(f"warm {system.result.system}: {short_error(exc)}; restarting it")
        try:
            system.stop()
        except Exception as stop_exc:  # noqa: BLE001 - it is probably gone already
            log(f"  stopping it failed too: {short_error(stop_exc)}")
        try:
            self.queue.wait_empty(f"restarting {system.result.system}", self.plan.queue_wait_s, keep_own=True)
            system.start()
            system.switch()
            for _ in range(self.plan.rtt_warmup):
                system.call()
        except BaseException as start_exc:
            self.fail(system.result, f"restarting {system.result.system}", start_exc)
            return False
        return True

    def rtt_phase(self, systems: list[Warm]) -> None:
        """Interleaved blocks of RTT_BLOCK timed calls per system, as bench/run.py does. ``switch`` makes
        the system current, untimed: `%cake use TARGET` re-attaches to the session's cached handle."""
        active = []
        for s in systems:
            try:
                s.switch()
                for _ in range(self.plan.rtt_warmup):
                    s.call()
                active.append(s)
            except BaseException as exc:
                if self.restart(s, exc):
                    active.append(s)
                elif s.result.error is None:
                    self.fail(s.result, f"rtt warm-up {s.result.system}", exc)
        gc.collect()
        done = 0
        while done < self.plan.rtt_n:
            block = min(RTT_BLOCK, self.plan.rtt_n - done)
            for s in list(active):
                try:
                    s.switch()
                    s.call()  # untimed: first call after another system ran
                    for _ in range(block):
                        t0 = time.perf_counter()
                        s.call()
                        s.result.samples.append(time.perf_counter() - t0)
                except BaseException as exc:
                    if not self.restart(s, exc):
                        if s.result.error is None:
                            self.fail(s.result, f"rtt {s.result.system}", exc)
                        active.remove(s)
            done += block
            try:  # untimed: note other users' jobs that shared the node with these blocks
                self.warm_foreign.update(j[0] for j in self.queue.jobs() if not self.queue.mine(j))
            except (OSError, RuntimeError, subprocess.SubprocessError):
                pass

    def cake_warm(self, target: str, label: str) -> Warm:
        assert self.cake is not None
        jobs: list[str] = []

        def start() -> None:
            jobs.append(self.cake_use(target, new=True))

        def switch() -> None:
            self.ip.run_line_magic("cake", f"use {target}")

        def stop() -> None:
            if jobs:
                try:
                    switch()
                except Exception:  # noqa: BLE001 - the session has ended: nothing to stop but the job
                    pass
                else:
                    self.cake_down(jobs[-1])
                finally:
                    self.queue.cancel([j for j in jobs if j])

        return Warm(self.result("rtt", RTT, label), start, lambda: self.cake.cell("pass"), stop, switch)  # type: ignore[union-attr]

    def px_warm(self) -> Warm:
        holder: dict[str, Any] = {}

        def start() -> None:
            px = holder["px"] = SlurmPx(self.ip, self.partition)
            self.queue.names.add(px.job_name)
            holder["stop"] = self.cleanup.push("warm ipyparallel cluster", stop_px)
            px.start()
            self.queue.ids.update(px.job_ids())

        def stop_px() -> None:
            px = holder["px"]
            try:
                px.stop()
            finally:
                self.queue.cancel(px.job_ids())

        def stop() -> None:
            if "stop" in holder:
                holder.pop("stop")()

        return Warm(self.result("rtt", RTT, RTT_PX), start, lambda: holder["px"].cell("pass"), stop)

    def bench_rtt(self) -> None:
        """One phase per Slurm system, each interleaved with the same local session: (local, hpc),
        (local, hpc-local), (local, %px). One Slurm job at a time, so a phase needs one free CPU of
        the node's two, even while another user's job holds the other."""
        assert self.cake is not None
        log(f"{RTT}: {self.plan.rtt_warmup} warm-up + {self.plan.rtt_n} reps per system and phase, "
            f"in blocks of {RTT_BLOCK}")  # fmt: skip
        local = self.cake_warm("local", RTT_LOCAL)
        try:
            local.start()
        except BaseException as exc:
            self.fail(local.result, "starting the local session", exc)
            local.stop()
            return
        try:
            for system in (self.cake_warm("hpc", RTT_HPC), self.cake_warm("hpc-local", RTT_HPC_LOCAL), self.px_warm()):
                self.queue.wait_empty(f"warm phase {short_name(system.result.system)}", self.plan.queue_wait_s,
                                      keep_own=True)  # fmt: skip
                try:
                    system.start()
                except BaseException as exc:
                    self.fail(system.result, f"starting {system.result.system}", exc)
                    system.stop()
                    continue
                first = len(local.result.samples)
                try:
                    log(f"warm phase: {system.result.system}")
                    self.rtt_phase([local, system])
                finally:
                    self.local_by_phase[system.result.system] = local.result.samples[first:]
                    system.stop()
        finally:
            local.stop()

    # driver ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        self.start_shell()
        self.bench_cold()
        self.bench_rtt()

    # report ---------------------------------------------------------------------------------------------
    def goal(self, r: Result) -> tuple[str, str]:
        if r.key == "cold":
            if not r.system.startswith("jupyter_cake"):
                return "anchor", ""
            if not r.samples:
                return f"< {COLD_GOAL_S:g} s", "n/a"
            return f"< {COLD_GOAL_S:g} s", "PASS" if r.median < COLD_GOAL_S else "FAIL"
        if r.key == "rtt":
            if r.system == RTT_LOCAL:
                return "anchor", "pooled over the 3 phases"
            goal = "anchor" if r.system == RTT_PX else "<= local + 1 ms"
            # Against the local session's samples from the same phase (interleaved with this system).
            local = self.local_by_phase.get(r.system, [])
            if not r.samples or not local:
                return goal, "" if r.system == RTT_PX else "n/a"
            diff = r.median - percentile(local, 50)
            delta = f"{'+' if diff >= 0 else '−'}{fmt_seconds(abs(diff))} vs local, same phase"
            if r.system == RTT_PX:
                return goal, delta
            return goal, f"{'PASS' if diff <= RTT_GOAL_S else 'FAIL'} ({delta})"
        return "", ""

    def table(self) -> str:
        rows = list(VERDICT_HEADER)
        order = {
            "cold": [CAKE_HPC, CAKE_HPC_LOCAL, PX_COLD, SUBMITIT, SRUN],
            "rtt": [RTT_HPC, RTT_HPC_LOCAL, RTT_LOCAL, RTT_PX],
        }
        for key, systems in order.items():
            first = True
            for system in systems:
                r = self.results.get((key, system))
                if r is None:
                    continue
                goal, verdict = self.goal(r)
                busy = self.queue.busy_reps.get(system, 0)
                if busy:
                    r.note = f"{busy} rep(s) ran with foreign jobs queued"
                rows.append(verdict_row(r, first, goal, verdict))
                first = False
        return "\n".join(rows)


# -- command line ---------------------------------------------------------------------------------------


def slurm_env() -> str | None:
    """Make sure Slurm's commands reach the test cluster; None if fine, else what is wrong."""
    if not os.environ.get("SLURM_CONF") and (SLURM_ROOT / "etc" / "slurm.conf").exists():
        os.environ["SLURM_CONF"] = str(SLURM_ROOT / "etc" / "slurm.conf")
    for tool in ("sbatch", "srun", "squeue", "scancel", "scontrol"):
        if not shutil.which(tool):
            return f"{tool} is not on PATH"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"scontrol ping failed: {exc}"
    if "UP" not in ping.stdout:
        return f"the Slurm controller is not up ({(ping.stdout or ping.stderr).strip()}); run `sudo tests/infra/slurm-up.sh`"
    if not SSH_CONFIG.exists():
        return f"{SSH_CONFIG} is missing (the login node's ssh config); run `sudo tests/infra/slurm-up.sh`"
    return None


def cluster_name() -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20).stdout
    for line in out.splitlines():
        if line.startswith("ClusterName"):
            return line.split("=", 1)[1].strip()
    raise RuntimeError("scontrol show config names no ClusterName")


def write_targets(path: Path, partition: str) -> None:
    path.write_text(f"""
[targets.hpc]
infra = "slurm/{LOGIN_ALIAS}/{partition}"
python = "{PYTHON}"
ssh_config = "{SSH_CONFIG}"

[targets.hpc-local]
infra = "slurm/{cluster_name()}/{partition}"
python = "{PYTHON}"
""")


def extra_env() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        submitit = version("submitit")
    except PackageNotFoundError:
        submitit = "missing"
    try:
        slurm = subprocess.run(["sinfo", "-V"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        slurm = "unknown"
    return {"submitit": submitit, "slurm": slurm}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, quick="fewer repetitions (about a minute)",
                      json_help="also write raw samples and summary here",
                      keep_data="keep the temporary data dir and Cake's remote session dirs (for debugging)",
                      extra=[("--partition", {"default": "debug", "help": "Slurm partition (default: debug)"})])  # fmt: skip
    plan = QUICK if args.quick else FULL

    problem = slurm_env()
    if problem:
        print(f"bench/slurm.py: no usable Slurm cluster: {problem}", file=sys.stderr)
        return 2

    # Everything the systems write locally goes to a fresh temp dir: the Cake store and targets file,
    # IPython profile (ipyparallel's connection files, logs, batch scripts), Jupyter runtime dir.
    tmp = isolated_tmp("cake-bench-slurm-")
    os.environ["CAKE_CONFIG"] = str(tmp / "targets.toml")
    write_targets(tmp / "targets.toml", args.partition)
    # ipyparallel writes its batch script (slurm_engine.sbatch) into the current directory.
    json_out = args.json.resolve() if args.json else None
    old_cwd = os.getcwd()
    (tmp / "work").mkdir()
    os.chdir(tmp / "work")

    env = environment()
    env.update(extra_env())
    line = f"{env_line(env)} | submitit {env['submitit']} | {env['slurm']}"
    log(line)
    log(f"mode: {'quick' if args.quick else 'full'}; temp dir {tmp}")
    bench = SlurmBench(plan, tmp, args.partition, keep_data=args.keep_data)

    took, aborted = run_guarded(bench, args.max_minutes, tmp_remover(tmp, args.keep_data, lambda: os.chdir(old_cwd)))

    table = bench.table()
    print_report("jupyter_cake on Slurm", args.quick, took, line, table)
    notes = []
    if bench.queue.foreign_waits:
        total = sum(w for _, w, _ in bench.queue.foreign_waits)
        jobs = sum(n for _, _, n in bench.queue.foreign_waits)
        notes.append(f"- Other users' jobs were queued before {len(bench.queue.foreign_waits)} timed rep(s); "
                     f"the benchmark waited {total:.0f} s in all for them ({jobs} job(s)), untimed.")  # fmt: skip
    for target, split in bench.use_split.items():
        notes.append(f"- Of the `{target}` cold start, `%cake use` alone took {fmt_seconds(percentile(split, 50))} "
                     "(median); the rest is the first cell.")  # fmt: skip
    if bench.warm_foreign:
        notes.append(f"- Section 2 shared the node with {len(bench.warm_foreign)} foreign job(s) "
                     f"({', '.join(sorted(bench.warm_foreign, key=lambda j: (len(j), j)))}): its numbers are noisier.")
    if bench.redone:
        notes.append(f"- {bench.redone} cold rep(s) were discarded and run again: a foreign job was queued during them.")
    for retry in bench.retries:
        notes.append(f"- retried: {retry}")
    if bench.slow_release:
        notes.append(f"- `%cake down` returned while its Slurm job was still queued: jobs {', '.join(bench.slow_release)}.")
    leaks = bench.cake.leaked_after_down if bench.cake is not None else 0
    if leaks:
        notes.append(f"- jupyter_cake: `%cake down` left a local nanny running {leaks} time(s); stopped by the benchmark.")
    print_notes(notes, bench.errors, aborted)
    if json_out:
        data = json_record(bench, env, args.quick, took, aborted, table,
                           foreign_waits=bench.queue.foreign_waits, slow_release=bench.slow_release,
                           retries=bench.retries, redone=bench.redone, warm_foreign_jobs=sorted(bench.warm_foreign),
                           local_by_phase_s=bench.local_by_phase, cake_use_s=bench.use_split)  # fmt: skip
        write_json(json_out, data)
        log(f"wrote {json_out}")
    return 1 if (bench.errors or aborted) else 0


if __name__ == "__main__":
    sys.exit(main())

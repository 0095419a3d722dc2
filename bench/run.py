#!/usr/bin/env python
"""jupyter_cake benchmark: %%cake side by side with ipyparallel's %px and a plain ipykernel.

    python bench/run.py [--quick] [--json out.json] [--keep-data]

Prints one markdown table (median and p90 over repetitions, goal, verdict) to stdout; progress and
errors go to stderr. See bench/README.md for what each row measures and how to read it.
"""

from __future__ import annotations

import gc
import os
import platform
import signal
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

from harness import VERDICT_HEADER, BenchBase, BenchTimeout, Result, isolated_tmp, log_exception  # noqa: E402
from harness import parse_args, print_notes, print_report, quiesce, remote_stamp, short_error  # noqa: E402
from harness import json_record, tmp_remover, verdict_row, write_json  # noqa: E402
from harness import stderr_log as log  # noqa: E402

MB = 1_000_000
GB = 1_000_000_000
RTT_BLOCK = 20


@dataclass
class Plan:
    rtt_n: int
    rtt_warmup: int
    lat_unflushed_n: int
    lat_flushed_n: int
    xfer_sizes: list[tuple[str, int, int]]  # (label, nbytes, reps)
    cold_n: int
    unflushed_sleep_s: float = 0.5
    flushed_sleep_s: float = 0.1


FULL = Plan(rtt_n=300, rtt_warmup=20, lat_unflushed_n=25, lat_flushed_n=40,
            xfer_sizes=[("100 MB", 100 * MB, 10), ("1 GB", 1 * GB, 3)], cold_n=5)  # fmt: skip
QUICK = Plan(rtt_n=60, rtt_warmup=10, lat_unflushed_n=8, lat_flushed_n=15,
             xfer_sizes=[("100 MB", 100 * MB, 4)], cold_n=2)  # fmt: skip

# Remote code for the output-latency rows: the remote clock is read just before the print; the local
# side notes when the text arrives (same machine, so the same clock).
UNFLUSHED = 'import time as _t; _t0 = _t.time(); print(f"@@T{{_t0!r}}@@"); _t.sleep({sleep})'
FLUSHED = 'import time as _t; _t0 = _t.time(); print(f"@@T{{_t0!r}}@@", flush=True); _t.sleep({sleep})'


# -- environment --------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "missing"

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jupyter_cake"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        rev = f"{rev}{'+dirty' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "python": platform.python_version(),
        "jupyter_cake": f"{v('jupyter-cake')} ({rev})",
        "ipykernel": v("ipykernel"),
        "jupyter_client": v("jupyter_client"),
        "ipyparallel": v("ipyparallel"),
        "pyzmq": v("pyzmq"),
        "numpy": v("numpy"),
        "cores": cores,
        "platform": platform.platform(),
    }


def env_line(env: dict[str, Any]) -> str:
    return (f"python {env['python']} | jupyter_cake {env['jupyter_cake']} | ipykernel {env['ipykernel']} | "
            f"jupyter_client {env['jupyter_client']} | ipyparallel {env['ipyparallel']} | pyzmq {env['pyzmq']} | "
            f"numpy {env['numpy']} | cores {env['cores']} | {env['platform']}")  # fmt: skip


_ZMQ_SINK = """
import sys, zmq
ctx = zmq.Context()
sock = ctx.socket(zmq.PAIR)
sock.connect(sys.argv[1])
while True:
    frame = sock.recv(copy=False)
    if len(frame) == 0:
        break
    sock.send(b"k")
    del frame
ctx.destroy(linger=0)
"""


def zmq_loopback(array: Any, reps: int) -> list[float]:
    """Seconds to move ``array`` to another process over 127.0.0.1 TCP with pyzmq, zero-copy on both
    sides, until that process acknowledges it: what the loopback transport alone costs, without
    pickling or Jupyter messages. A ceiling for the push rows (and, mirrored, the pull rows)."""
    import zmq

    ctx = zmq.Context()
    child = None
    try:
        tx = ctx.socket(zmq.PAIR)
        tx.setsockopt(zmq.LINGER, 0)
        port = tx.bind_to_random_port("tcp://127.0.0.1")
        child = subprocess.Popen([sys.executable, "-c", _ZMQ_SINK, f"tcp://127.0.0.1:{port}"])
        out = []
        for i in range(reps + 1):
            quiesce(1.0)
            t0 = time.perf_counter()
            tx.send(memoryview(array).cast("B"), copy=False)
            if not tx.poll(60_000):
                raise RuntimeError("the zmq sink process did not acknowledge within 60 s")
            tx.recv()
            if i:  # the first one is warm-up
                out.append(time.perf_counter() - t0)
        tx.send(b"")
        child.wait(10)
        return out
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        ctx.destroy(linger=0)


# -- the benchmark --------------------------------------------------------------------------------------


class Bench(BenchBase):
    def __init__(self, plan: Plan, quick: bool, cake_data_dir: Path | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.cake_data_dir = cake_data_dir
        self.quick = quick

    # setup --------------------------------------------------------------------------------------------
    def start_shell(self) -> None:
        from systems import Cake, cake_shell

        self.ip = cake_shell()
        self.cake = Cake(self.ip, self.cake_data_dir)
        # Whatever happens, no session may outlive the benchmark.
        self.cleanup.push("%cake down --all", self.cake.down_all)

    def timed(self, fn: Any, *args: Any) -> float:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    # 1. warm round trip --------------------------------------------------------------------------------
    def bench_rtt(self, px: Any, plain: Any) -> None:
        label = "1. Warm round trip, trivial cell (`pass`)"
        systems: list[tuple[str, Any]] = []
        if self.cake.live:
            systems.append(("jupyter_cake `%%cake`", lambda: self.cake.cell("pass")))
        if px is not None:
            systems.append(("ipyparallel `%%px` (1 engine)", lambda: px.cell("pass")))
        if plain is not None:
            systems.append(("jupyter_client + ipykernel (execute, wait idle)", lambda: plain.execute("pass")))
        log(f"{label}: {self.plan.rtt_warmup} warm-up + {self.plan.rtt_n} reps per system, interleaved")
        active = []
        for name, fn in systems:
            r = self.result("rtt", label, name)
            try:
                for _ in range(self.plan.rtt_warmup):
                    fn()
                active.append((r, fn, name))
            except BaseException as exc:
                self.fail(r, f"rtt warm-up {name}", exc)
        gc.collect()
        # Blocks of RTT_BLOCK repetitions per system, rotating: interleaved against drift, while the
        # background work one system leaves behind (hub bookkeeping, journaling) mostly stays in its
        # own block.
        done = 0
        while done < self.plan.rtt_n:
            block = min(RTT_BLOCK, self.plan.rtt_n - done)
            for r, fn, name in list(active):
                try:
                    fn()  # untimed: first call after another system ran
                    for _ in range(block):
                        r.samples.append(self.timed(fn))
                except BaseException as exc:
                    self.fail(r, f"rtt {name}", exc)
                    active.remove((r, fn, name))
            done += block

    # 2. live output latency -----------------------------------------------------------------------------
    def cake_latency(self, code: str) -> float:
        self.stamp.arm()
        try:
            self.cake.cell(code)
        finally:
            arrived, text = self.stamp.disarm()
        sent = remote_stamp(text)
        if arrived is None or sent is None:
            raise RuntimeError(f"marker line not seen on the local stdout (got {text[:80]!r})")
        return arrived - sent

    @staticmethod
    def plain_latency(plain: Any, code: str) -> float:
        seen: dict[str, Any] = {}

        def on_iopub(msg: dict[str, Any]) -> None:
            if "arrived" in seen or msg["msg_type"] != "stream":
                return
            text = msg["content"].get("text", "")
            if "@@T" in text:
                seen["arrived"] = time.time()
                seen["text"] = text

        plain.execute(code, on_iopub)
        sent = remote_stamp(seen.get("text", ""))
        if "arrived" not in seen or sent is None:
            raise RuntimeError("marker line not seen on iopub")
        return seen["arrived"] - sent

    def bench_latency(self, plain: Any) -> None:
        p = self.plan
        cases = [
            ("lat_unflushed", f"2a. Output latency, unflushed `print`, cell keeps running ({p.unflushed_sleep_s:g} s)",
             UNFLUSHED.format(sleep=p.unflushed_sleep_s), p.lat_unflushed_n),
            ("lat_flushed", "2b. Output latency, `print(..., flush=True)`",
             FLUSHED.format(sleep=p.flushed_sleep_s), p.lat_flushed_n),
        ]  # fmt: skip
        for key, label, code, n in cases:
            log(f"{label}: 2 warm-up + {n} reps per system, interleaved")
            systems: list[tuple[str, Any]] = []
            if self.cake.live:
                systems.append(("jupyter_cake `%%cake` (local stdout write)", lambda c=code: self.cake_latency(c)))
            if plain is not None:
                systems.append(("jupyter_client + ipykernel (iopub arrival)",
                                lambda c=code: self.plain_latency(plain, c)))  # fmt: skip
            active = []
            for name, fn in systems:
                r = self.result(key, label, name)
                try:
                    for _ in range(2):
                        fn()
                    active.append((r, fn, name))
                except BaseException as exc:
                    self.fail(r, f"{key} warm-up {name}", exc)
            for _ in range(n):
                for r, fn, name in list(active):
                    try:
                        r.samples.append(fn())
                    except BaseException as exc:
                        self.fail(r, f"{key} {name}", exc)
                        active.remove((r, fn, name))
            if key == "lat_unflushed":
                for r, _, _ in active:
                    if r.samples and r.median > 0.8 * p.unflushed_sleep_s:
                        r.note = "arrived only around the end of the cell"

    # 3. push / pull ----------------------------------------------------------------------------------
    def bench_transfer(self, px: Any) -> None:
        import numpy as np

        rng = np.random.default_rng(12345)
        for size_label, nbytes, reps in self.plan.xfer_sizes:
            log(f"3. Push/pull {size_label}: creating the array")
            src = rng.random(nbytes // 8)  # float64, created once per size
            assert src.nbytes == nbytes
            keys = {
                "push": (f"push_{size_label}", f"3. Push {size_label} float64 array"),
                "pull": (f"pull_{size_label}", f"3. Pull {size_label} float64 array"),
            }
            ops: list[tuple[str, str, Any]] = []  # (direction, system, fn)
            ns = self.ip.user_ns

            def cake_push() -> None:
                self.cake.cell("pass", "--push arr")

            def cake_pull() -> None:
                self.cake.cell("pass", "--pull arr")

            if self.cake.live:
                ops += [("push", "jupyter_cake `%%cake --push arr`", cake_push),
                        ("pull", "jupyter_cake `%%cake --pull arr`", cake_pull)]  # fmt: skip
            if px is not None:
                ops += [("push", "ipyparallel `rc[:].push(block=True)`", lambda: px.push("arr", src)),
                        ("pull", "ipyparallel `rc[:].pull(block=True)`", lambda: px.pull("arr"))]  # fmt: skip

            def reset() -> None:
                ns["arr"] = src  # a pull replaced it with the pulled copy; push the original again
                if px is not None:
                    px.forget()
                gc.collect()
                quiesce(3.0 if nbytes >= GB else 1.0)

            # Warm-up + content check (untimed): push, pull, compare with the original.
            log(f"3. Push/pull {size_label}: warm-up and content check, then {reps} timed reps each")
            broken: set[str] = set()
            for system in ("cake", "px"):
                mine = [(d, s, f) for d, s, f in ops if (s.startswith("jupyter_cake") == (system == "cake"))]
                if not mine:
                    continue
                try:
                    reset()
                    for direction, _, fn in mine:
                        if direction == "push":
                            fn()
                    if system == "cake":
                        self.cake.cell("pass", "--pull arr")
                        back = ns["arr"]
                    else:
                        back = px.pull("arr")
                        back = back[0] if isinstance(back, list) else back
                    ok = back is not src and back.shape == src.shape and bool(np.array_equal(back, src))
                    del back
                    if not ok:
                        raise RuntimeError(f"pulled array differs from the pushed one ({system}, {size_label})")
                except BaseException as exc:
                    for direction, s, _ in mine:
                        self.fail(self.result(keys[direction][0], keys[direction][1], s, nbytes), f"transfer {s}", exc)
                    broken.update(s for _, s, _ in mine)
            for direction, s, _ in ops:
                r = self.result(keys[direction][0], keys[direction][1], s, nbytes)
                if s not in broken:
                    r.note = "content verified (push+pull round trip, np.array_equal)"
            reset()
            for _ in range(reps):
                for direction, s, fn in ops:
                    if s in broken:
                        continue
                    r = self.result(keys[direction][0], keys[direction][1], s, nbytes)
                    try:
                        r.samples.append(self.timed(fn))
                    except BaseException as exc:
                        self.fail(r, f"transfer {s}", exc)
                        broken.add(s)
                    reset()
            # Reference: what the loopback transport alone moves (no pickling, no Jupyter messages).
            wire = self.result(f"wire_{size_label}", f"3. Reference: raw pyzmq, TCP loopback, {size_label}",
                               "pyzmq PAIR to a 2nd process, zero-copy, until acked", nbytes)  # fmt: skip
            try:
                wire.samples.extend(zmq_loopback(src, reps))
            except BaseException as exc:
                self.fail(wire, "raw zmq reference", exc)
            # free the remote copies before the next size
            try:
                if self.cake.live:
                    self.cake.cell("globals().pop('arr', None)")
                if px is not None:
                    px.dv.execute("globals().pop('arr', None)", block=True)
                    px.forget()
            except Exception as exc:  # noqa: BLE001 - only housekeeping
                log(f"could not free remote arrays: {short_error(exc)}")
            ns.pop("arr", None)
            # Drop this size's array before the next one is made. Not `del`: the closures above read
            # `src`, and a `del` of a name they capture reads to linters as a use after delete.
            src = None
            gc.collect()

    # 4. cold start -----------------------------------------------------------------------------------
    def bench_cold(self) -> None:
        from systems import PlainKernel, Px

        label = "4. Cold start until the first cell ran"
        n = self.plan.cold_n
        log(f"{label}: {n} reps per system, interleaved")

        def cake_cold() -> float:
            t0 = time.perf_counter()
            try:
                self.cake.use_new()
                self.cake.cell("pass")
                return time.perf_counter() - t0
            finally:
                if self.cake.live:
                    self.cake.down()

        def plain_cold() -> float:
            t0 = time.perf_counter()
            k = PlainKernel()
            try:
                k.execute("pass")
                return time.perf_counter() - t0
            finally:
                k.shutdown()

        def px_cold() -> float:
            px = Px(self.ip)
            stop = self.cleanup.push("cold ipyparallel cluster", px.stop)
            try:
                t0 = time.perf_counter()
                px.start()
                px.cell("pass")
                return time.perf_counter() - t0
            finally:
                stop()

        systems = [
            ("jupyter_cake `%cake use local --new` + first `%%cake`", cake_cold),
            ("jupyter_client `start_new_kernel()` + first execute", plain_cold),
            ("ipyparallel `Cluster(n=1).start_and_connect_sync()` + first `%%px`", px_cold),
        ]
        for _ in range(n):
            for name, fn, r in self.working("cold", label, systems):
                try:
                    r.samples.append(fn())
                except BaseException as exc:
                    self.fail(r, f"cold start {name}", exc)
                quiesce(3.0)  # let the previous system's processes exit before the next start

    # driver --------------------------------------------------------------------------------------------
    def run(self) -> None:
        from systems import PlainKernel, Px

        self.start_shell()
        # Warm systems for sections 1-3.
        log("starting the warm systems: jupyter_cake session, ipyparallel cluster (1 engine), plain ipykernel")
        r = self.result("rtt", "1. Warm round trip, trivial cell (`pass`)", "jupyter_cake `%%cake`")
        try:
            self.cake.use_new()
            self.cleanup.push("%cake down (warm session)", lambda: self.cake.live and self.cake.down())
            self.cake.cell("import numpy")  # what the transfer rows need, loaded outside any timing
        except BaseException as exc:
            self.fail(r, "starting the warm jupyter_cake session", exc)
        px = None
        try:
            px = Px(self.ip)
            stop_px = self.cleanup.push("warm ipyparallel cluster", px.stop)
            px.start()
            px.dv.execute("import numpy", block=True)
        except BaseException as exc:
            self.fail(self.result("rtt", "1. Warm round trip, trivial cell (`pass`)", "ipyparallel `%%px` (1 engine)"),
                      "starting the warm ipyparallel cluster", exc)  # fmt: skip
            px = None
        plain = None
        try:
            plain = PlainKernel()
            stop_plain = self.cleanup.push("warm plain kernel", plain.shutdown)
        except BaseException as exc:
            self.fail(self.result("rtt", "1. Warm round trip, trivial cell (`pass`)",
                                  "jupyter_client + ipykernel (execute, wait idle)"),
                      "starting the warm plain ipykernel", exc)  # fmt: skip

        self.bench_rtt(px, plain)
        self.bench_latency(plain)
        self.bench_transfer(px)

        log("stopping the warm systems before the cold-start section")
        if self.cake.live:
            self.cake.down()
        if px is not None:
            stop_px()
        if plain is not None:
            stop_plain()
        time.sleep(1.0)
        self.bench_cold()

    # report --------------------------------------------------------------------------------------------
    def table(self) -> str:
        rows = list(VERDICT_HEADER)
        by_key: dict[str, list[Result]] = {}
        for r in self.results.values():
            by_key.setdefault(r.key, []).append(r)

        def find(key: str, prefix: str) -> Result | None:
            for r in by_key.get(key, []):
                if r.system.startswith(prefix) and r.samples:
                    return r
            return None

        order = ["rtt", "lat_unflushed", "lat_flushed"]
        order += [f"{d}_{lbl}" for lbl, _, _ in self.plan.xfer_sizes for d in ("push", "pull", "wire")]
        order += ["cold"]
        for key in order:
            group = by_key.get(key, [])
            group.sort(key=lambda r: (not r.system.startswith("jupyter_cake"), r.system))
            first = True
            for r in group:
                goal, verdict = self.goal(key, r, find)
                rows.append(verdict_row(r, first, goal, verdict))
                first = False
        return "\n".join(rows)

    @staticmethod
    def goal(key: str, r: Result, find: Any) -> tuple[str, str]:
        cake = r.system.startswith("jupyter_cake")
        if key == "rtt":
            px = find("rtt", "ipyparallel")
            if not cake:
                return "anchor", ""
            if not r.samples or px is None:
                return "<= %px", "n/a"
            ok = r.median <= px.median
            return "<= %px", f"{'PASS' if ok else 'FAIL'} ({px.median / r.median:.1f}x faster than %px)" if ok else \
                f"FAIL ({r.median / px.median:.1f}x slower than %px)"
        if key == "lat_unflushed":
            if not cake:
                return "anchor (~200 ms: ipykernel's 0.2 s stdout batching)", ""
            ok = bool(r.samples) and r.median < 0.030
            return "< 30 ms", ("PASS" if ok else "FAIL") if r.samples else "n/a"
        if key == "lat_flushed":
            if not cake:
                return "anchor", ""
            ok = bool(r.samples) and r.median < 0.005
            return "< 5 ms", ("PASS" if ok else "FAIL") if r.samples else "n/a"
        if key.startswith("wire_"):
            return "reference: transport ceiling", ""
        if key.startswith(("push_", "pull_")):
            if not cake:
                return "anchor", ""
            px = find(key, "ipyparallel")
            if not r.samples:
                return ">= 1 GB/s and >= 2x ipyparallel", "n/a"
            ok_abs = r.gbps >= 1.0
            ratio = r.gbps / px.gbps if px is not None else float("nan")
            ok_rel = px is not None and ratio >= 2.0
            text = f"{'PASS' if ok_abs and ok_rel else 'FAIL'} ({r.gbps:.2f} GB/s, {ratio:.2f}x ipyparallel)"
            return ">= 1 GB/s and >= 2x ipyparallel", text
        if key == "cold":
            if not cake:
                return "anchor", ""
            ok = bool(r.samples) and r.median < 1.0
            return "< 1.0 s", ("PASS" if ok else "FAIL") if r.samples else "n/a"
        return "", ""



def run_guarded(bench: Any, max_minutes: float, finish: Callable[[], None]) -> tuple[float, str | None]:
    """Run ``bench`` under a --max-minutes watchdog with stdout sent to ``bench.stamp``; whatever
    happens, clean up its systems, then call ``finish``. Returns (seconds taken, why it aborted)."""

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGALRM:
            raise BenchTimeout(f"the benchmark ran past --max-minutes {max_minutes:g}")
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(max_minutes * 60))
    real_stdout = sys.stdout
    started = time.perf_counter()
    aborted: str | None = None
    sys.stdout = bench.stamp  # relayed remote output and the magics' chatter land here
    try:
        bench.run()
    except (KeyboardInterrupt, BenchTimeout, SystemExit) as exc:
        aborted = short_error(exc)
        log(f"aborted: {aborted}")
    except BaseException as exc:  # noqa: BLE001 - report what we have, then clean up
        aborted = short_error(exc)
        log_exception(log, "benchmark", exc)
    finally:
        try:
            log("cleaning up")
            bench.cleanup.run_all()
        finally:
            sys.stdout = real_stdout
            signal.alarm(0)
            finish()
    return time.perf_counter() - started, aborted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, quick="fewer repetitions, no 1 GB transfers",
                      json_help="also write raw samples and summary here",
                      keep_data="keep the temporary CAKE_DATA_DIR (for debugging)")  # fmt: skip
    plan = QUICK if args.quick else FULL

    # Everything the systems write goes to a fresh temp dir: the user's Cake store, IPython profile
    # (ipyparallel's connection files and logs) and Jupyter runtime dir are never touched.
    tmp = isolated_tmp("cake-bench-")

    env = environment()
    log(env_line(env))
    log(f"mode: {'quick' if args.quick else 'full'}; temp dir {tmp}")
    bench = Bench(plan, args.quick, tmp / "cake")

    took, aborted = run_guarded(bench, args.max_minutes, tmp_remover(tmp, args.keep_data))

    table = bench.table()
    print_report("jupyter_cake benchmark", args.quick, took, env_line(env), table)
    notes = []
    leaks = getattr(getattr(bench, "cake", None), "leaked_after_down", 0)
    if leaks:
        notes.append(f"- jupyter_cake: `%cake down` left the nanny + kernel running {leaks} "
                     "time(s); the benchmark stopped them itself (untimed). See bench/README.md.")  # fmt: skip
    print_notes(notes, bench.errors, aborted)
    if args.json:
        write_json(args.json, json_record(bench, env, args.quick, took, aborted, table, cake_down_leaks=leaks))
        log(f"wrote {args.json}")
    return 1 if (bench.errors or aborted) else 0


if __name__ == "__main__":
    sys.exit(main())

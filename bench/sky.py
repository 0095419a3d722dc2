#!/usr/bin/env python
"""jupyter_cake through SkyPilot on a real Slurm cluster: SkyPilot launch -> first output, and the warm
cell through the SkyPilot-launched session side by side with `sky exec` of the same code on the same
cluster (goal: the warm cell at least 1000x faster).

    python bench/sky.py [--quick] [--json out.json] [--keep-data]

Needs the local test cluster with SkyPilot on it: `sudo tests/infra/slurm-up.sh`,
`tests/infra/sky-venv.sh`, `sudo tests/infra/sky-up.sh` (`make test` runs all three). Cake reaches
SkyPilot through its bridge with CAKE_SKY_PYTHON=/tmp/cake-slurm/sky/python (.venv-sky's python with the
test SkyPilot HOME). Prints one markdown table to stdout; progress and errors go to stderr.

Order (each SkyPilot launch is ~35 s on this machine, so the counts are small):
1. the API server's start (stopped first, then the first SkyPilot call starts it);
2. cold: `%cake use <target> --new` (sky launch + nanny + channel) until the first cell's output;
3. warm: `%%cake pass` round trips through that session, alternating with the local target;
4. `sky exec` of the same code (`python3 -c pass`) on the same cluster, through SkyPilot's SDK in its
   own process (import excluded): submit until the job has finished. The session's kernel is stopped
   first, because on Slurm a SkyPilot job holds all the cluster's CPUs and `sky exec` would queue;
5. `%cake down` (sky down) until the cluster is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from harness import MARK_CELL, BenchBase, BenchTimeout, RemotePlan, fmt_seconds, isolated_tmp, log_exception  # noqa: E402
from harness import end_plain_report, parse_args, percentile, plain_rows, print_report, short_error  # noqa: E402
from harness import tmp_remover  # noqa: E402
from harness import stderr_log as log  # noqa: E402
from run import env_line, environment, run_guarded  # noqa: E402
from systems import Cake, cake_shell  # noqa: E402

SLURM_ROOT = Path(os.environ.get("CAKE_SLURM_ROOT", "/tmp/cake-slurm"))
SKY = SLURM_ROOT / "sky"
SKY_PYTHON = SKY / "python"
NODE_PYTHON = SKY / "node-python" / "bin" / "python"
TARGET = f"slurm/cakecluster/debug --via sky --cpus 1 --memory 2 --gpus T4:1 --option python={NODE_PYTHON}"
BLOCK = 20
GOAL_RATIO = 1000.0

# `sky exec` through SkyPilot's SDK, timed inside one process so the SDK's import is not counted.
SKY_EXEC = r"""
import json, sys, time
import sky
cluster, n, python = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = []
for _ in range(n):
    task = sky.Task(run=f"{python} -c pass")
    t0 = time.perf_counter()
    job_id, _ = sky.stream_and_get(sky.exec(task, cluster_name=cluster), output_stream=sys.stderr)
    while True:
        status = sky.get(sky.job_status(cluster, [job_id])).get(job_id)
        if status is not None and status.is_terminal():
            break
        time.sleep(0.2)
    out.append(time.perf_counter() - t0)
    print(f"sky exec job {job_id}: {status.value} in {out[-1]:.2f} s", file=sys.stderr, flush=True)
print(json.dumps(out))
"""


@dataclass
class Plan(RemotePlan):
    exec_n: int


FULL = Plan(cold_n=2, rtt_n=200, rtt_warmup=20, exec_n=3)
QUICK = Plan(cold_n=1, rtt_n=60, rtt_warmup=10, exec_n=2)


def sky_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SKY / "sky"), *args], capture_output=True, text=True, timeout=timeout)


class SkyBench(BenchBase):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        self.cake: Cake | None = None
        self.use_split: list[float] = []
        self.launch_split: list[float] = []

    def run(self) -> None:
        self.ip = cake_shell()
        self.cake = Cake(self.ip)
        # Pushed first, so it runs last: the API server this benchmark started goes when it is done.
        self.cleanup.push("sky api stop", lambda: sky_cli("api", "stop", timeout=120))
        self.cleanup.push("%cake down --all", lambda: self.ip.run_line_magic("cake", "down --all"))
        self.bench_api_server()
        for i in range(self.plan.cold_n):
            last = i == self.plan.cold_n - 1
            self.cold_once(keep=last)  # the last session stays up for the warm rows and sky exec
        self.bench_rtt()
        self.bench_sky_exec()
        self.bench_down()

    def _record(self, key: str, bench: str, system: str, fn: Any) -> Any:
        r = self.result(key, bench, system)
        try:
            t0 = time.perf_counter()
            value = fn()
            r.samples.append(time.perf_counter() - t0 if value is None else value)
            log(f"{key}: {fmt_seconds(r.samples[-1])}")
            return value
        except (KeyboardInterrupt, BenchTimeout, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - one failed row is reported, the rest go on
            r.error = short_error(exc)
            self.errors.append(f"{key}: {r.error}")
            log_exception(log, key, exc)
            return None

    def bench_api_server(self) -> None:
        from jupyter_cake.backends.sky import bridge

        sky_cli("api", "stop", timeout=120)
        self._record("api", "SkyPilot API server start (first SkyPilot call after `sky api stop`)", "SkyPilot 0.14.1",
                     lambda: bridge.call("status", {"cluster": "none"}, timeout=300) and None)  # fmt: skip

    def cold_once(self, keep: bool) -> None:
        assert self.cake is not None

        def once() -> float:
            assert self.cake is not None
            t0 = time.time()
            self.ip.run_line_magic("cake", f"use {TARGET} --name bench-sky --new --timeout 900")
            self.use_split.append(time.time() - t0)
            handle = self.cake.magics.current
            self.launch_split.append(float(handle.allocation.data.get("launch_s", "nan")))
            arrived = self.stamp.first_output(lambda: self.cake.cell(MARK_CELL))
            return arrived - t0

        try:
            self._record("cold", "cold start: `%cake use` (sky launch) -> first output", "SkyPilot on Slurm", once)
        finally:
            if not keep and self.cake.live:
                self.ip.run_line_magic("cake", "down")

    def bench_rtt(self) -> None:
        assert self.cake is not None
        if not self.cake.live:
            return
        bench = "warm cell round trip (`%%cake pass`)"
        systems = {"local": "local --name bench-sky-local", "SkyPilot-launched session": f"{TARGET} --name bench-sky"}
        self.ip.run_line_magic("cake", f"use {systems['local']} --new")
        for line in systems.values():
            self.ip.run_line_magic("cake", f"use {line}")
            for _ in range(self.plan.rtt_warmup):
                self.cake.cell("pass")
        self.cake.rtt_blocks(systems, lambda label: self.result("rtt", bench, label).samples, self.plan.rtt_n, BLOCK)
        self.ip.run_line_magic("cake", f"use {systems['local']}")
        self.ip.run_line_magic("cake", "down")
        self.ip.run_line_magic("cake", f"use {systems['SkyPilot-launched session']}")

    def bench_sky_exec(self) -> None:
        assert self.cake is not None
        handle = self.cake.magics.current
        if handle is None:
            return
        cluster = handle.allocation.data["cluster"]
        job = int(handle.allocation.data["job_id"])
        handle.nanny("shutdown", reason="bench: free the cluster for sky exec")  # the nanny's job ends
        self._wait_job_done(cluster, job)
        r = self.result("exec", "`sky exec` of the same code on the same cluster (submit -> job done)", "sky exec (SDK)")
        done = subprocess.run([str(SKY_PYTHON), "-c", SKY_EXEC, cluster, str(self.plan.exec_n), str(NODE_PYTHON)],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        sys.stderr.write("".join(line + "\n" for line in done.stderr.splitlines() if line.startswith("sky exec job")))
        if done.returncode != 0:
            r.error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            self.errors.append(f"sky exec: {r.error}")
            return
        r.samples.extend(json.loads(done.stdout.strip().splitlines()[-1]))

    @staticmethod
    def _wait_job_done(cluster: str, job: int) -> None:
        code = ("import sys, time, sky\nc, j = sys.argv[1], int(sys.argv[2])\nfor _ in range(600):\n"
                "    s = sky.get(sky.job_status(c, [j])).get(j)\n    if s is None or s.is_terminal(): break\n"
                "    time.sleep(0.5)\n")  # fmt: skip
        subprocess.run([str(SKY_PYTHON), "-c", code, cluster, str(job)], capture_output=True, timeout=400)

    def bench_down(self) -> None:
        assert self.cake is not None
        if not self.cake.live:
            return
        self._record("down", "`%cake down` (sky down) until the cluster is gone", "SkyPilot on Slurm",
                     lambda: self.ip.run_line_magic("cake", "down"))  # fmt: skip

    def table(self) -> str:
        rows = plain_rows(self.results.values())
        warm, local = self.results.get(("rtt", "SkyPilot-launched session")), self.results.get(("rtt", "local"))
        execs = self.results.get(("exec", "sky exec (SDK)"))
        if warm and local and warm.samples and local.samples:
            rows.append(f"| warm overhead of the SkyPilot session vs local | difference of medians | | "
                        f"{fmt_seconds(warm.median - local.median)} | |")  # fmt: skip
        if warm and execs and warm.samples and execs.samples:
            ratio = execs.median / warm.median
            verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
            rows.append(f"| `sky exec` / warm `%%cake` (goal >= {GOAL_RATIO:g}x) | ratio of medians | | "
                        f"{ratio:,.0f}x {verdict} | |")  # fmt: skip
        return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, quick="one launch, fewer repetitions (about 3 minutes)")
    if not SKY_PYTHON.exists():
        print(f"bench/sky.py: no test SkyPilot ({SKY_PYTHON} missing): run tests/infra/sky-venv.sh and "
              "sudo tests/infra/sky-up.sh (after tests/infra/slurm-up.sh)", file=sys.stderr)  # fmt: skip
        return 2
    tmp = isolated_tmp("cake-bench-sky-", [("CAKE_DATA_DIR", ".")])
    os.environ.update(CAKE_CONFIG=str(tmp / "targets.toml"), CAKE_SKY_PYTHON=str(SKY_PYTHON),
                      SLURM_CONF=os.environ.get("SLURM_CONF", str(SLURM_ROOT / "etc" / "slurm.conf")))  # fmt: skip
    line = env_line(environment())
    log(line)
    bench = SkyBench(QUICK if args.quick else FULL)

    took, aborted = run_guarded(bench, args.max_minutes, tmp_remover(tmp, args.keep_data))
    print_report("jupyter_cake through SkyPilot", args.quick, took,
                 f"{line} | SkyPilot 0.14.1 (own venv, local API server) | Slurm 22.05 single node on loopback",
                 bench.table())  # fmt: skip
    notes = []
    if bench.use_split:
        notes.append(f"\n- Of the cold start, `%cake use` took {fmt_seconds(percentile(bench.use_split, 50))} (median), "
                     f"of which SkyPilot's launch request {fmt_seconds(percentile(bench.launch_split, 50))}.")  # fmt: skip
    return end_plain_report(bench, notes, aborted, args.json)


if __name__ == "__main__":
    sys.exit(main())

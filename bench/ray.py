#!/usr/bin/env python
"""Ray on a Cake session (`--ray`), next to Ray's own ways in: Ray Client (`ray://`) and Ray Jobs'
`tail_job_logs`.

    python bench/ray.py [--quick] [--json out.json] [--keep-data] [--max-minutes M]

Rows (median and p90 over repetitions, on the `local` target; see bench/README.md):
1. Ray start in a session: `%cake use local --ray --new` until ray.init() would work, and the Ray
   head's own share of it; anchor: a plain local `ray.init()` in a fresh Python.
2. Task round trip (`ray.get(f.remote())` of a no-op task): as a `%%cake` cell from this machine
   (what a notebook user pays per cell), inside the session's kernel (the driver sits next to the
   head), and through Ray Client (`ray://`, a driver on this machine, how Ray reaches a remote
   cluster without Cake).
3. A job's first log line: `cake run --ray` (the kernel reads the driver log file on the head node
   and streams it through the session) vs Ray Jobs' `tail_job_logs` (the dashboard polls every 1 s),
   both measured from the submit call of the same trivial job on the same cluster.
4. The same line's delivery alone: from the script's `print` (its timestamp) to its arrival.

Progress and errors go to stderr, the markdown table to stdout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from harness import Cleanup, Result, StampWriter, fmt_seconds, isolated_tmp, log_exception, parse_args  # noqa: E402
from harness import print_notes, print_report, tmp_remover, write_json  # noqa: E402
from harness import stderr_log as log  # noqa: E402
from run import env_line, environment, run_guarded  # noqa: E402

# This file is bench/ray.py: with bench/ on sys.path, `import ray` would find it instead of Ray.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

PYTHON = sys.executable
JOB = 'import time\nprint("first line", time.time(), flush=True)\n'
RTT_CELL = "ray.get(_noop.remote())"
CLIENT_RTT = """
import json, sys, time, ray
ray.init(sys.argv[1], logging_level="ERROR")
@ray.remote
def noop():
    return None
ray.get(noop.remote())
samples = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); ray.get(noop.remote()); samples.append(time.perf_counter() - t)
print(json.dumps(samples))
"""
PLAIN_INIT = "import time, ray; t = time.perf_counter(); ray.init(logging_level='ERROR'); print(time.perf_counter() - t)"
RAY_TAIL = """
import asyncio, json, re, shlex, sys, time
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
async def first_line(job):
    async for chunk in client.tail_job_logs(job):
        found = re.search(r"first line ([0-9.]+)", chunk)  # the printed line, not the echoed entrypoint
        if found:
            return time.time(), float(found.group(1))
out = []
for _ in range(int(sys.argv[3])):
    t = time.time()
    job = client.submit_job(entrypoint=shlex.join([sys.executable, "-u", "-c", sys.argv[2]]))
    arrived, printed = asyncio.run(first_line(job))
    out.append((arrived - t, arrived - printed))
    while not client.get_job_status(job).is_terminal():
        time.sleep(0.1)
print(json.dumps(out))
"""


@dataclass
class Plan:
    starts: int
    rtt_n: int
    jobs: int


FULL = Plan(starts=3, rtt_n=200, jobs=5)
QUICK = Plan(starts=1, rtt_n=50, jobs=2)

START = "1. Ray start in a session"
RTT = "2. Task round trip, `ray.get(f.remote())` of a no-op task"
FIRST = "3. Ray job: submit → first log line"
LAG = "4. Ray job: the script's `print` → the line arrives"


FIRST_LINE = re.compile(r"first line ([0-9.]+)")


def _printed_at(chunk: str) -> float:
    match = FIRST_LINE.search(chunk)
    assert match is not None
    return float(match.group(1))


class RayBench:
    def __init__(self, plan: Plan, tmp: Path) -> None:
        self.plan = plan
        self.tmp = tmp
        self.cleanup = Cleanup(log)
        self.stamp = StampWriter()
        self.results: dict[tuple[str, str], Result] = {}
        self.errors: list[str] = []
        self.cake: Any = None
        self.handle: Any = None

    def result(self, key: str, bench: str, system: str) -> Result:
        return self.results.setdefault((key, system), Result(key, bench, system))

    def fail(self, r: Result, exc: BaseException) -> None:
        log_exception(log, r.system, exc)
        r.error = f"{type(exc).__name__}: {exc}"[:200]
        self.errors.append(f"{r.system}: {r.error}")

    # -- helpers -----------------------------------------------------------------------------------
    def cell(self, code: str) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        _, future = self.handle.start_run(code, outputs.append)
        outcome = future.result()
        if outcome.status != "ok":
            raise RuntimeError(f"cell failed: {outcome.error}")
        return outputs

    def stdout(self, code: str) -> str:
        return "".join(o["content"].get("text", "") for o in self.cell(code) if o["msg_type"] == "stream")

    def start_session(self) -> dict[str, Any]:
        from jupyter_cake.manager import Cake
        from jupyter_cake.ray.session import ray_status
        from jupyter_cake.targets import resolve_target

        if self.cake is None:
            self.cake = Cake()
        if self.handle is not None:
            self.cake.down(self.handle.row)
        t0 = time.perf_counter()
        self.handle, _ = self.cake.use(resolve_target(["local", "--ray"]), new=True)
        took = time.perf_counter() - t0
        handle = self.handle
        self.cleanup.push(f"down {handle.id}", lambda: self.cake.down(handle.row))
        status = ray_status(handle)
        return {"use": took, "head": status["ready_at"] - status["started"], "status": status}

    # -- the rows ------------------------------------------------------------------------------------
    def bench_start(self) -> dict[str, Any]:
        use = self.result("start", START, "jupyter_cake `%cake use local --ray --new` (session + Ray, until usable)")
        head = self.result("start", START, "… of which the Ray head (`ray start --head` until its dashboard answers)")
        plain = self.result("start", START, "anchor: plain local `ray.init()` in a fresh Python")
        status: dict[str, Any] = {}
        for i in range(self.plan.starts):
            log(f"start {i + 1}/{self.plan.starts}")
            try:
                got = self.start_session()
                use.samples.append(got["use"])
                head.samples.append(got["head"])
                status = got["status"]
            except Exception as exc:  # noqa: BLE001 - the row shows it
                self.fail(use, exc)
                break
            try:
                out = subprocess.run([PYTHON, "-c", PLAIN_INIT], capture_output=True, text=True, timeout=300,
                                     env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled",
                                              RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))  # fmt: skip
                plain.samples.append(float(out.stdout.strip().splitlines()[-1]))
            except Exception as exc:  # noqa: BLE001
                self.fail(plain, exc)
        return status

    def bench_rtt(self, status: dict[str, Any]) -> None:
        cell = self.result("rtt", RTT, "jupyter_cake `%%cake ray.get(f.remote())` from this machine (whole cell)")
        bare = self.result("rtt", RTT, "… for scale: `%%cake pass` on the same session (Cake's own cell round trip)")
        inside = self.result("rtt", RTT, "… the `ray.get` alone, in the session's kernel (driver beside the head)")
        client = self.result("rtt", RTT, "anchor: Ray Client `ray://` (driver on this machine)")
        try:
            self.cell("import ray, time\nray.init(logging_level='ERROR')\n@ray.remote\ndef _noop():\n    return None\n"
                      "ray.get(_noop.remote())")  # fmt: skip
            for _ in range(10):
                self.cell(RTT_CELL)
            for _ in range(self.plan.rtt_n):  # interleaved, so load drift hits both alike
                t = time.perf_counter()
                self.cell(RTT_CELL)
                cell.samples.append(time.perf_counter() - t)
                t = time.perf_counter()
                self.cell("pass")
                bare.samples.append(time.perf_counter() - t)
            code = (f"import json\n_s = []\nfor _ in range({self.plan.rtt_n}):\n    _t = time.perf_counter(); "
                    "ray.get(_noop.remote()); _s.append(time.perf_counter() - _t)\nprint(json.dumps(_s))")  # fmt: skip
            inside.samples = json.loads(self.stdout(code).strip().splitlines()[-1])
        except Exception as exc:  # noqa: BLE001
            self.fail(cell, exc)
        try:
            env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=status["token_path"],
                       RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
            env.pop("RAY_ADDRESS", None)
            for attempt in range(3):  # Ray Client's proxy gives up on a per-client server slow to start under load
                out = subprocess.run([PYTHON, "-c", CLIENT_RTT, f"ray://127.0.0.1:{status['client_port']}",
                                      str(self.plan.rtt_n)], capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
                if out.returncode == 0:
                    break
                log(f"Ray Client attempt {attempt + 1} failed: {out.stderr.strip().splitlines()[-1:]}")
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
            client.samples = json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as exc:  # noqa: BLE001
            self.fail(client, exc)

    def bench_first_line(self, status: dict[str, Any]) -> None:
        ours = self.result("first", FIRST, "jupyter_cake `cake run --ray` (driver log file read on the head, streamed)")
        theirs = self.result("first", FIRST, "anchor: Ray Jobs `tail_job_logs` (1 s polling)")
        ours_lag = self.result("lag", LAG, "jupyter_cake `cake run --ray`")
        theirs_lag = self.result("lag", LAG, "anchor: Ray Jobs `tail_job_logs`")
        from jupyter_cake.ray.jobs import remote_code

        workdir = self.tmp / "job"
        workdir.mkdir(exist_ok=True)
        (workdir / "job.py").write_text(JOB)
        spec = {"cwd": str(workdir), "bundle": None, "label": "job.py", "python": True, "argv": ["job.py"]}
        try:
            for _ in range(self.plan.jobs):
                self.cell(remote_code(spec, "cake run --ray job.py"))
                timing = json.loads(self.stdout("import json; print(json.dumps(_cake_ray_job))"))
                # The script's own first line (the supervisor logs "Runtime env is setting up" before it).
                arrived, chunk = next((t, c) for t, c in timing["chunks"] if FIRST_LINE.search(c))
                ours.samples.append(arrived - timing["submit"])
                ours_lag.samples.append(arrived - _printed_at(chunk))
        except Exception as exc:  # noqa: BLE001
            self.fail(ours, exc)
        try:
            env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=status["token_path"])
            url = f"http://127.0.0.1:{status['dashboard_port']}"
            out = subprocess.run([PYTHON, "-c", RAY_TAIL, url, JOB, str(self.plan.jobs)], capture_output=True, text=True,
                                 timeout=600, env=env, cwd=workdir)  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
            pairs = json.loads(out.stdout.strip().splitlines()[-1])
            theirs.samples = [p[0] for p in pairs]
            theirs_lag.samples = [p[1] for p in pairs]
        except Exception as exc:  # noqa: BLE001
            self.fail(theirs, exc)

    def run(self) -> None:
        status = self.bench_start()
        if not status:
            return
        log("task round trips")
        self.bench_rtt(status)
        log("jobs: first log line")
        self.bench_first_line(status)

    def table(self) -> str:
        rows = ["| Benchmark | System | n | Median | p90 |", "|---|---|---|---|---|"]
        for r in self.results.values():
            if r.error and not r.samples:
                rows.append(f"| {r.bench} | {r.system} | 0 | ERROR: {r.error} | |")
            else:
                rows.append(f"| {r.bench} | {r.system} | {len(r.samples)} | {fmt_seconds(r.median)} | {fmt_seconds(r.p90)} |")
        return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, quick="one start, fewer round trips and jobs",
                      keep_data="keep the temporary CAKE_DATA_DIR")  # fmt: skip
    tmp = isolated_tmp("cake-bench-ray-", [("CAKE_DATA_DIR", "cake")])
    env = environment()
    log(env_line(env))
    bench = RayBench(QUICK if args.quick else FULL, tmp)

    took, aborted = run_guarded(bench, args.max_minutes, tmp_remover(tmp, args.keep_data))
    table = bench.table()
    print_report("jupyter_cake Ray benchmark", args.quick, took, env_line(env), table)
    print_notes([], bench.errors, aborted, blank=False)
    if args.json:
        write_json(args.json, {"env": env, "seconds": took, "aborted": aborted, "errors": bench.errors,
                               "results": [r.to_json() for r in bench.results.values()], "table": table})  # fmt: skip
    return 1 if (bench.errors or aborted) else 0


if __name__ == "__main__":
    sys.exit(main())

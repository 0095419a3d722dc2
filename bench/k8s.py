#!/usr/bin/env python
"""jupyter_cake on a real Kubernetes cluster: cold start (session -> first output, image present) and
warm cell round trip through the port-forward channel, side by side with the local target.

    python bench/k8s.py [--quick] [--json out.json] [--keep-data] [--image localhost/cake-python:test]

Needs the local test cluster (`sudo tests/infra/k8s-up.sh`, kubeconfig in /tmp/cake-k8s/kubeconfig;
CAKE_K8S_RUN moves it). Sessions go to a namespace of their own, deleted at the end. Prints one
markdown table (median and p90 over repetitions) to stdout; progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Cleanup, Result, StampWriter, fmt_seconds, fmt_value, log_exception, percentile, short_error  # noqa: E402
from harness import stderr_log as log  # noqa: E402
from run import BenchTimeout, env_line, environment, run_guarded  # noqa: E402
from systems import Cake  # noqa: E402

K8S_RUN = Path(os.environ.get("CAKE_K8S_RUN", "/tmp/cake-k8s"))
KUBECONFIG = K8S_RUN / "kubeconfig"
MARK_CELL = 'import time as _t; print(f"@@T{_t.time()!r}@@", flush=True)'
BLOCK = 20  # warm cells per block; blocks alternate between the systems so drift hits both alike


XFER_BYTES = 100_000_000


@dataclass
class Plan:
    cold_n: int
    rtt_n: int
    rtt_warmup: int
    xfer_n: int


FULL = Plan(cold_n=5, rtt_n=200, rtt_warmup=20, xfer_n=5)
QUICK = Plan(cold_n=2, rtt_n=60, rtt_warmup=10, xfer_n=2)


class K8sBench:
    def __init__(self, plan: Plan, image: str, namespace: str) -> None:
        self.plan = plan
        self.namespace = namespace
        self.target = f"k8s --image {image} --option kubeconfig={KUBECONFIG} --option namespace={namespace}"
        self.cleanup = Cleanup(log)
        self.stamp = StampWriter()
        self.results: dict[tuple[str, str], Result] = {}
        self.errors: list[str] = []
        self.ip: Any = None
        self.cake: Cake | None = None
        self.use_split: list[float] = []

    def result(self, key: str, bench: str, system: str) -> Result:
        r = self.results.get((key, system))
        if r is None:
            r = self.results[(key, system)] = Result(key, bench, system)
        return r

    def run(self) -> None:
        from IPython.testing.globalipapp import start_ipython

        self.ip = start_ipython()
        self.ip.run_line_magic("load_ext", "jupyter_cake")
        self.cake = Cake(self.ip)
        self.cleanup.push("%cake down --all", lambda: self.ip.run_line_magic("cake", "down --all"))
        self.bench_cold()
        self.bench_rtt()
        self.bench_xfer()

    def cold_once(self) -> float:
        assert self.cake is not None
        t0 = time.time()
        try:
            self.ip.run_line_magic("cake", f"use {self.target} --new --timeout 120")
            self.use_split.append(time.time() - t0)
            arrived = self.stamp.first_output(lambda: self.cake.cell(MARK_CELL))
            return arrived - t0
        finally:
            if self.cake.live:
                self.ip.run_line_magic("cake", "down")

    def bench_cold(self) -> None:
        r = self.result("cold", "cold start: `%cake use` -> first output (image present)", "k8s Pod")
        for i in range(self.plan.cold_n):
            try:
                r.samples.append(self.cold_once())
                log(f"cold {i + 1}/{self.plan.cold_n}: {fmt_seconds(r.samples[-1])}")
            except (KeyboardInterrupt, BenchTimeout, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - one failed rep is reported, the rest go on
                r.error = short_error(exc)
                self.errors.append(f"cold: {r.error}")
                log_exception(log, "cold start", exc)

    def bench_rtt(self) -> None:
        assert self.cake is not None
        bench = "warm cell round trip (`%%cake pass`)"
        systems = {"local": "local --name bench-local", "k8s Pod": f"{self.target} --name bench-k8s"}
        for label, line in systems.items():
            self.ip.run_line_magic("cake", f"use {line} --new --timeout 120")
            for _ in range(self.plan.rtt_warmup):
                self.cake.cell("pass")
        done = 0
        while done < self.plan.rtt_n:
            for label, line in systems.items():
                self.ip.run_line_magic("cake", f"use {line}")
                r = self.result("rtt", bench, label)
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    self.cake.cell("pass")
                    r.samples.append(time.perf_counter() - t0)
            done += BLOCK
        for line in systems.values():
            self.ip.run_line_magic("cake", f"use {line}")
            self.ip.run_line_magic("cake", "down")

    def bench_xfer(self) -> None:
        """--push / --pull of a 100 MB array: what the channel carries per second each way."""
        import numpy as np

        self.ip.user_ns["blob"] = np.ones(XFER_BYTES // 8)
        systems = {"local": "local --name bench-xfer-local", "k8s Pod": f"{self.target} --name bench-xfer-k8s"}
        for label, line in systems.items():
            self.ip.run_line_magic("cake", f"use {line} --new --timeout 120")
            push = self.result("push", "push 100 MB (`--push`)", label)
            pull = self.result("pull", "pull 100 MB (`--pull`)", label)
            push.nbytes = pull.nbytes = XFER_BYTES
            for _ in range(self.plan.xfer_n):
                t0 = time.perf_counter()
                self.cake.cell("n = blob.nbytes", "--push blob")  # type: ignore[union-attr]
                t1 = time.perf_counter()
                self.cake.cell("blob = blob", "--pull blob")  # type: ignore[union-attr]
                push.samples.append(t1 - t0)
                pull.samples.append(time.perf_counter() - t1)
            self.ip.run_line_magic("cake", "down")

    def table(self) -> str:
        rows = ["| benchmark | system | n | median | p90 |", "|---|---|---|---|---|"]
        for r in self.results.values():
            rows.append(f"| {r.bench} | {r.system} | {len(r.samples)} | {fmt_value(r, 'median')} | {fmt_value(r, 'p90')} |")
        local, pod = self.results.get(("rtt", "local")), self.results.get(("rtt", "k8s Pod"))
        if local and pod and local.samples and pod.samples:
            # A difference of p90s is not the p90 of the overhead: only the medians are compared.
            rows.append(f"| warm overhead of the Pod vs local | k8s Pod − local | | "
                        f"{fmt_seconds(pod.median - local.median)} | |")  # fmt: skip
        return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute)")
    parser.add_argument("--json", type=Path, default=None, help="also write raw samples here")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--image", default="localhost/cake-python:test", help="session image (present on the node)")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="abort (and clean up) after this long")
    args = parser.parse_args(argv)
    if not KUBECONFIG.exists():
        print(f"bench/k8s.py: no local Kubernetes ({KUBECONFIG} missing): run `sudo tests/infra/k8s-up.sh`", file=sys.stderr)
        return 2
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(str(KUBECONFIG)))
    namespace = f"cake-bench-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    deadline = time.time() + 30  # Pods can only be created once the namespace's default account exists
    while not core.list_namespaced_service_account(namespace).items and time.time() < deadline:
        time.sleep(0.1)
    tmp = Path(tempfile.mkdtemp(prefix="cake-bench-k8s-"))
    os.environ["CAKE_DATA_DIR"] = str(tmp)
    os.environ["CAKE_CONFIG"] = str(tmp / "targets.toml")
    os.environ.pop("JPY_SESSION_NAME", None)
    line = env_line(environment())
    log(line)
    bench = K8sBench(QUICK if args.quick else FULL, args.image, namespace)

    def finish() -> None:
        core.delete_namespace(namespace)
        if not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)

    took, aborted = run_guarded(bench, args.max_minutes, finish)
    print()
    print(f"**jupyter_cake on Kubernetes** ({'quick' if args.quick else 'full'} run, {took:.0f} s)  ")
    print(f"Environment: {line} | Kubernetes v1.20.2 single node on loopback")
    print()
    print(bench.table())
    if bench.use_split:
        print(f"\n- Of the cold start, `%cake use` alone took {fmt_seconds(percentile(bench.use_split, 50))} (median).")
    for error in bench.errors:
        print(f"- error: {error}")
    if aborted:
        print(f"- aborted: {aborted}")
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in bench.results.values()], indent=1))
    return 1 if aborted or bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())

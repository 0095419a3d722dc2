#!/usr/bin/env python
"""jupyter_cake on a real Kubernetes cluster: cold start (session -> first output, image present) and
warm cell round trip through the port-forward channel, side by side with the local target.

    python bench/k8s.py [--quick] [--json out.json] [--keep-data] [--image localhost/cake-python:test]

Needs the local test cluster (`sudo tests/infra/k8s-up.sh`, kubeconfig in /tmp/cake-k8s/kubeconfig;
CAKE_K8S_RUN moves it). Sessions go to a namespace of their own, deleted at the end. Prints one
markdown table (median and p90 over repetitions) to stdout; progress and errors go to stderr.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import MARK_CELL, BenchBase, BenchTimeout, RemotePlan, fmt_seconds, isolated_tmp, log_exception  # noqa: E402
from harness import end_plain_report, parse_args, percentile, plain_rows, print_report, short_error  # noqa: E402
from harness import tmp_remover  # noqa: E402
from harness import stderr_log as log  # noqa: E402
from run import env_line, environment, run_guarded  # noqa: E402
from systems import Cake, cake_shell  # noqa: E402

K8S_RUN = Path(os.environ.get("CAKE_K8S_RUN", "/tmp/cake-k8s"))
KUBECONFIG = K8S_RUN / "kubeconfig"
BLOCK = 20  # warm cells per block; blocks alternate between the systems so drift hits both alike


XFER_BYTES = 100_000_000


@dataclass
class Plan(RemotePlan):
    xfer_n: int


FULL = Plan(cold_n=5, rtt_n=200, rtt_warmup=20, xfer_n=5)
QUICK = Plan(cold_n=2, rtt_n=60, rtt_warmup=10, xfer_n=2)


class K8sBench(BenchBase):
    def __init__(self, plan: Plan, image: str, namespace: str) -> None:
        super().__init__()
        self.plan = plan
        self.namespace = namespace
        self.target = f"k8s --image {image} --option kubeconfig={KUBECONFIG} --option namespace={namespace}"
        self.cake: Cake | None = None
        self.use_split: list[float] = []

    def run(self) -> None:
        self.ip = cake_shell()
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
        self.cake.rtt_blocks(systems, lambda label: self.result("rtt", bench, label).samples, self.plan.rtt_n, BLOCK)
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
        rows = plain_rows(self.results.values())
        local, pod = self.results.get(("rtt", "local")), self.results.get(("rtt", "k8s Pod"))
        if local and pod and local.samples and pod.samples:
            # A difference of p90s is not the p90 of the overhead: only the medians are compared.
            rows.append(f"| warm overhead of the Pod vs local | k8s Pod − local | | "
                        f"{fmt_seconds(pod.median - local.median)} | |")  # fmt: skip
        return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    image = {"default": "localhost/cake-python:test", "help": "session image (present on the node)"}
    args = parse_args(argv, __doc__, quick="fewer repetitions (about a minute)", max_minutes=10.0,
                      extra=[("--image", image)])  # fmt: skip
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
    tmp = isolated_tmp("cake-bench-k8s-", [("CAKE_DATA_DIR", ".")])
    os.environ["CAKE_CONFIG"] = str(tmp / "targets.toml")
    line = env_line(environment())
    log(line)
    bench = K8sBench(QUICK if args.quick else FULL, args.image, namespace)

    took, aborted = run_guarded(bench, args.max_minutes, tmp_remover(tmp, args.keep_data, lambda: core.delete_namespace(namespace)))
    print_report("jupyter_cake on Kubernetes", args.quick, took, f"{line} | Kubernetes v1.20.2 single node on loopback",
                 bench.table())  # fmt: skip
    notes = []
    if bench.use_split:
        notes.append(f"\n- Of the cold start, `%cake use` alone took {fmt_seconds(percentile(bench.use_split, 50))} (median).")
    return end_plain_report(bench, notes, aborted, args.json)


if __name__ == "__main__":
    sys.exit(main())

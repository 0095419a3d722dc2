"""IDE-path benchmarks: what a trivial execute costs through each way an IDE reaches a Cake kernel.

    .venv/bin/python bench/ide.py [--n 200] [--json FILE]

Rows (median and p90 of ``--n`` trivial executes, ``pass``; an execute is done when both its
execute_reply and its ``status: idle`` have arrived, as a frontend waits):

- plain ipykernel, direct ZMQ (jupyter_client): the anchor, the Jupyter protocol with nothing on top;
- Cake session kernel, direct ZMQ: the session's kernel at its own ports;
- Cake kernelspec through the proxy (jupyter_client launches the kernelspec, as PyCharm, JupyterLab and
  nbclient do; VS Code's raw launch is the same ZMQ path). Goal: within ~1 ms of the row above;
- jupyter_server websocket, plain ipykernel, Cake extension off / on: the Nagle problem and its fix
  (VS Code's "existing Jupyter server" mode, PyCharm's managed server). Goal: on < 5 ms;
- jupyter_server websocket, Cake kernelspec, extension on: the whole remote-server path.

The websocket client is websocket-client, which sets TCP_NODELAY on its side as browsers and Node's
``ws`` (VS Code) do, so what is measured is the server's side. Everything runs in a temporary Jupyter /
Cake data dir that is deleted at the end; sessions are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # helpers, which ide_util uses
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ide"))
from harness import percentile  # noqa: E402
from ide_util import WsKernel, jupyter_server  # noqa: E402  (the tests' websocket client: one implementation)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KERNEL = "cake-bench"


# -- ZMQ ----------------------------------------------------------------------------------------------
def zmq_execute(kc: Any, code: str = "pass") -> float:
    start = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):  # fmt: skip
            break
    while kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass
    return time.perf_counter() - start


def sample(fn: Callable[[], float], n: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(n)]


# -- the benchmark ------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="executes per row")
    parser.add_argument("--json", default=None, help="also write the samples here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cake-bench-ide-"))
    env = dict(os.environ, CAKE_DATA_DIR=str(tmp / "cake"), CAKE_CONFIG=str(tmp / "targets.toml"),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTER_PATH=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"))  # fmt: skip
    os.environ.update(env)
    rows: list[tuple[str, list[float]]] = []
    try:
        from jupyter_client.manager import start_new_kernel

        from ide_bridge import kernelspecs

        kernelspecs.install(["local"], name=KERNEL)

        def measure(label: str, fn: Callable[[], float]) -> None:
            print(f"  {label} ...", file=sys.stderr, flush=True)
            rows.append((label, sample(fn, args.n)))

        km, kc = start_new_kernel(kernel_name="python3")
        try:
            measure("plain ipykernel, direct ZMQ", lambda: zmq_execute(kc))
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

        km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=120)
        try:
            from jupyter_client import BlockingKernelClient

            from jupyter_cake.manager import Cake

            row = next(r for r in Cake().store.sessions(live_only=True) if r.name == KERNEL)
            info = json.loads((Path(row.session_dir) / "connection.json").read_text())
            direct = BlockingKernelClient()
            direct.load_connection_info(info["connection"])
            direct.start_channels()
            direct.wait_for_ready(30)
            try:
                # Interleaved, so both rows see the same machine load.
                a: list[float] = []
                b: list[float] = []
                print("  Cake session kernel direct / through the proxy ...", file=sys.stderr, flush=True)
                for _ in range(10):
                    zmq_execute(direct), zmq_execute(kc)
                for _ in range(args.n):
                    a.append(zmq_execute(direct))
                    b.append(zmq_execute(kc))
                rows.append(("Cake session kernel, direct ZMQ", a))
                rows.append(("Cake kernelspec via the proxy (jupyter_client)", b))
            finally:
                direct.stop_channels()
        finally:
            kc.stop_channels()
            km.shutdown_kernel()

        for extension in (False, True):
            with jupyter_server(env, tmp, extension) as (base, token, _):
                kernel = WsKernel(base, token, "python3")
                try:
                    measure(f"jupyter_server websocket, plain ipykernel, nodelay {'on' if extension else 'off'}", kernel.execute)
                finally:
                    kernel.close()
                if extension:
                    kernel = WsKernel(base, token, KERNEL)
                    try:
                        measure("jupyter_server websocket, Cake kernelspec, nodelay on", kernel.execute)
                    finally:
                        kernel.close()
    finally:
        subprocess.run([PYTHON, "-m", "jupyter_cake.cli", "down", "--all"], env=env, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(label) for label, _ in rows)
    print(f"{'trivial execute (pass)':<{width}}  {'median':>9}  {'p90':>9}   n={args.n}")
    for label, samples in rows:
        print(f"{label:<{width}}  {percentile(samples, 50) * 1e3:7.2f}ms  {percentile(samples, 90) * 1e3:7.2f}ms")
    if args.json:
        Path(args.json).write_text(json.dumps({label: samples for label, samples in rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

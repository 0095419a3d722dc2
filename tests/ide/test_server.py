"""The jupyter_server path (VS Code's "existing Jupyter server", PyCharm's managed server): a real
`jupyter server`, REST to manage kernels, one websocket per kernel; Cake's extension sets TCP_NODELAY."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from ide_util import WsKernel, free_port, jupyter_server, stream_text, wait_for

from jupyter_cake.store import Store

HEAVY = ("sky", "kubernetes", "ray")


def _latency(kernel: WsKernel, n: int = 30) -> float:
    for _ in range(5):
        kernel.execute()
    return statistics.median(kernel.execute() for _ in range(n))


def test_cake_kernel_through_jupyter_server_rest_and_websocket(cake_kernel: str, ide_env: dict[str, str], tmp_path: Path) -> None:
    with jupyter_server(ide_env, tmp_path) as (base, token, log):  # the extension as installed: enabled
        assert "Cake: TCP_NODELAY on kernel websockets" in log.read_text()
        kernel = WsKernel(base, token, cake_kernel)
        try:
            [row] = [r for r in Store().sessions(live_only=True) if r.name == cake_kernel]

            # Execute and stream: outputs arrive while the cell runs.
            reply, outputs = kernel.run(
                "import time\nstate = 7\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.3)"
            )
            assert reply["status"] == "ok" and stream_text(outputs) == "step 0\nstep 1\nstep 2\n"
            assert outputs[-1][0] - outputs[0][0] > 0.4
            reply, outputs = kernel.run("from IPython.display import Markdown\nMarkdown('**remote**')")
            [result] = [m["content"] for _, m in outputs if m["msg_type"] == "execute_result"]
            assert result["data"]["text/markdown"] == "**remote**"

            # Interrupt through REST (the server sends interrupt_request: interrupt_mode "message").
            msg_id = kernel.start("time.sleep(60)")
            time.sleep(0.5)
            kernel.rest("POST", f"/api/kernels/{kernel.kernel_id}/interrupt")
            reply, _ = kernel.collect(msg_id, timeout=20)
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
            _, outputs = kernel.run("print(state)")
            assert stream_text(outputs) == "7\n"

            # Latency of a trivial execute through the server with the fix (no ~40 ms Nagle stalls).
            median = _latency(kernel)
            print(f"Cake kernel via jupyter_server, nodelay on: median {median * 1e3:.1f} ms")
            assert median < 0.025, f"{median * 1e3:.1f} ms per trivial execute through the server"

            # Restart through REST: same session (allocation), fresh kernel.
            kernel.rest("POST", f"/api/kernels/{kernel.kernel_id}/restart")
            kernel.wait_ready()
            _, outputs = kernel.run("print('state' in globals())")
            assert stream_text(outputs) == "False\n"
            assert [r.id for r in Store().sessions(live_only=True) if r.name == cake_kernel] == [row.id]
        finally:
            kernel.close()  # DELETE /api/kernels/<id>: a shutdown, so the session is released
        assert wait_for(lambda: Store().session(row.id).state == "stopped", timeout=15)


def test_nodelay_fix_removes_the_nagle_delay(ide_env: dict[str, str], tmp_path: Path) -> None:
    """The benchmark of the issue, on plain ipykernels: the same server without and with the fix."""
    medians = {}
    for extension in (False, True):
        with jupyter_server(ide_env, tmp_path, extension=extension) as (base, token, _):
            kernel = WsKernel(base, token, "python3")
            try:
                medians[extension] = _latency(kernel)
            finally:
                kernel.close()
    print(f"trivial execute via jupyter_server: nodelay off {medians[False] * 1e3:.1f} ms, on {medians[True] * 1e3:.1f} ms")
    assert medians[True] < 0.020
    # If this fails, jupyter_server sets TCP_NODELAY itself now and the extension's fix can go.
    assert medians[False] > 2 * medians[True] and medians[False] > 0.030


def test_server_extension_loads_without_heavy_imports(ide_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from jupyter_server.serverapp import ServerApp\n"
        "app = ServerApp()\n"
        f"app.initialize(argv=['--allow-root', '--no-browser', '--port={free_port()}', '--ip=127.0.0.1'])\n"
        "cls = app.web_app.settings['kernel_websocket_connection_class']\n"
        "print(cls.__name__, [c.__name__ for c in cls.__mro__][1])\n"
        "print('jupyter_cake.server' in app.extension_manager.extensions)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ide_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-3] == "NodelayZMQChannelsWebsocketConnection NodelayKernelWebsocketMixin"
    assert lines[-2:] == ["True", "[]"]

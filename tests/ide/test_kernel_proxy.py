"""Cake kernelspecs as frontends launch them: jupyter_client (PyCharm, JupyterLab, nbclient) and a raw
launch of the argv with a connection file (VS Code). Real proxies, nannies and kernels; nothing mocked."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from ide_util import alive, cake, nanny_pids, wait_for
from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.connect import write_connection_file
from jupyter_client.kernelspec import KernelSpecManager

from jupyter_cake.store import SessionRow, Store


def sessions(name: str, live: bool = True) -> list[SessionRow]:
    return [row for row in Store().sessions(live_only=live) if row.name == name]


def execute(
    kc: BlockingKernelClient, code: str, timeout: float = 30, **kwargs: Any
) -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
    """Run ``code``; return (execute_reply content, [(arrival time, iopub message)])."""
    msg_id = kc.execute(code, **kwargs)
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status":
            if msg["content"]["execution_state"] == "idle":
                break
            continue
        outputs.append((time.monotonic(), msg))
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], outputs


def stdout(outputs: list[tuple[float, dict[str, Any]]]) -> str:
    return "".join(m["content"]["text"] for _, m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


def start(kernel_name: str) -> tuple[KernelManager, BlockingKernelClient]:
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def test_jupyter_client_kernel_runs_remotely_with_streaming_rich_output_stdin_interrupt_restart_shutdown(
    cake_kernel: str, cake_data_dir: Path
) -> None:
    km, kc = start(cake_kernel)
    try:
        # kernel_info is the remote kernel's.
        kc.kernel_info()
        info = kc.get_shell_msg(timeout=10)["content"]
        assert info["status"] == "ok" and info["implementation"] == "ipython" and info["language_info"]["name"] == "python"
        [row] = sessions(cake_kernel)
        nanny_pid = row.allocation_data["pid"]
        assert nanny_pid in nanny_pids(cake_data_dir)

        # The code runs in the session's kernel, not in the proxy the frontend launched.
        reply, outputs = execute(kc, "import os\nstate = 41\nprint(os.getpid())")
        kernel_pid = int(stdout(outputs))
        assert reply["status"] == "ok" and kernel_pid != km.provisioner.process.pid
        assert Path(f"/proc/{kernel_pid}/cmdline").read_bytes().split(b"\0")[2] == b"jupyter_cake.nanny.kernel"

        # Output streams while the cell runs, instead of arriving at the end.
        _, outputs = execute(kc, "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.4)")
        assert stdout(outputs) == "tick 0\ntick 1\ntick 2\n"
        arrivals = [t for t, m in outputs if m["msg_type"] == "stream"]
        assert arrivals[-1] - arrivals[0] > 0.6

        # Rich output and errors, as from a local kernel.
        reply, outputs = execute(kc, "from IPython.display import HTML, display\ndisplay(HTML('<b>remote</b>'))\nstate + 1")
        kinds = {m["msg_type"]: m["content"] for _, m in outputs}
        assert kinds["display_data"]["data"]["text/html"] == "<b>remote</b>"
        assert kinds["execute_result"]["data"]["text/plain"] == "42"
        reply, outputs = execute(kc, "1/0")
        assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"
        assert any(m["msg_type"] == "error" for _, m in outputs)

        # Binary buffers cross the proxy intact, both ways (a comm echoes what it got, plus its own).
        payload = os.urandom(1 << 20)
        reply, _ = execute(kc, (
            "import hashlib\nfrom comm import create_comm\n"
            "def _echo(comm, msg):\n"
            "    data = bytes(msg['buffers'][0])\n"
            "    comm.send({'sha': hashlib.sha256(data).hexdigest()}, buffers=[data[::-1]])\n"
            "get_ipython().kernel.comm_manager.register_target('echo', _echo)"
        ))  # fmt: skip
        assert reply["status"] == "ok"
        comm_id = uuid.uuid4().hex
        msg = kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
        kc.session.send(kc.shell_channel.socket, msg, buffers=[payload])
        deadline = time.monotonic() + 20
        while True:
            echoed = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if echoed["msg_type"] == "comm_msg" and echoed["content"]["comm_id"] == comm_id:
                break
        assert echoed["content"]["data"]["sha"] == hashlib.sha256(payload).hexdigest()
        assert bytes(echoed["buffers"][0]) == payload[::-1]

        # stdin: input() in the remote kernel asks this frontend.
        msg_id = kc.execute("name = input('who? ')\nprint('hello', name)", allow_stdin=True)
        request = kc.get_stdin_msg(timeout=20)
        assert request["msg_type"] == "input_request" and request["content"]["prompt"] == "who? "
        kc.input("Ada")
        while True:
            msg = kc.get_iopub_msg(timeout=20)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                assert msg["content"]["text"] == "hello Ada\n"
                break

        # Interrupt (interrupt_mode "message"): the remote cell stops, the session and its state survive.
        msg_id = kc.execute("import time\ntime.sleep(60)")
        while (msg := kc.get_iopub_msg(timeout=10))["msg_type"] != "execute_input" or msg["parent_header"]["msg_id"] != msg_id:
            pass
        time.sleep(0.3)  # inside time.sleep by now, not still in the kernel's own code around the cell
        started = time.monotonic()
        km.interrupt_kernel()
        while True:
            reply = kc.get_shell_msg(timeout=20)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 10
        reply, outputs = execute(kc, "print(state)")
        assert stdout(outputs) == "41\n"

        # Restart: a fresh kernel in the same allocation (same session and nanny), state gone.
        km.restart_kernel()
        kc.wait_for_ready(timeout=60)
        reply, outputs = execute(kc, "print('state' in globals(), os.getpid() if 'os' in globals() else 'fresh')")
        assert stdout(outputs) == "False fresh\n"
        [after] = sessions(cake_kernel)
        assert after.id == row.id and after.allocation_data["pid"] == nanny_pid and nanny_pid in nanny_pids(cake_data_dir)
        assert not alive(kernel_pid)
    finally:
        kc.stop_channels()
        # Shutdown: the session's policy (down by default) releases it.
        km.shutdown_kernel()
    assert not sessions(cake_kernel)
    assert Store().session(row.id).reason == "kernel shut down by the frontend"
    assert wait_for(lambda: nanny_pid not in nanny_pids(cake_data_dir), timeout=10)


def _raw_launch(
    kernel_name: str, tmp_path: Path, label: str, argv: list[str] | None = None
) -> tuple[subprocess.Popen[str], BlockingKernelClient, Path]:
    """What VS Code does: write a connection file, substitute it into the kernelspec's argv, run it."""
    connection_file = tmp_path / f"kernel-{label}.json"
    write_connection_file(str(connection_file), ip="127.0.0.1", key=uuid.uuid4().hex.encode())
    argv = argv or KernelSpecManager().get_kernel_spec(kernel_name).argv
    argv = [a.replace("{connection_file}", str(connection_file)) for a in argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    kc = BlockingKernelClient()
    kc.load_connection_file(str(connection_file))
    return proc, kc, connection_file


def test_raw_launch_like_vscode_each_frontend_gets_its_own_session_and_sigterm_releases_it(
    cake_kernel: str, tmp_path: Path
) -> None:
    first, kc1, connection_file = _raw_launch(cake_kernel, tmp_path, "a")
    second, kc2, _ = _raw_launch(cake_kernel, tmp_path, "b")
    try:
        for kc in (kc1, kc2):
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
        _, out1 = execute(kc1, "import os\nwho = 'first'\nprint(os.getpid())")
        _, out2 = execute(kc2, "import os\nprint(os.getpid(), 'who' in globals())")
        pid1 = int(stdout(out1))
        pid2, shared = stdout(out2).split()
        assert int(pid2) != pid1 and shared == "False"  # two notebooks never share a kernel unknowingly
        assert len(sessions(cake_kernel)) == 2

        # Only the frontend's key gets in: a message signed with another key is dropped, not relayed.
        intruder = BlockingKernelClient()
        intruder.load_connection_file(str(connection_file))
        intruder.session.key = b"not-the-key"
        intruder.start_channels()
        try:
            intruder.execute("print('intruder')")
            with pytest.raises(queue.Empty):
                intruder.get_shell_msg(timeout=1)
        finally:
            intruder.stop_channels()

        # The frontend killing the kernel process (SIGTERM) is a plain shutdown: the session is released.
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
        err = first.stderr.read()
        assert "started session" in err and "dropped 1 message(s) with an invalid signature" in err
        assert wait_for(lambda: not alive(pid1), timeout=10)
        assert len(sessions(cake_kernel)) == 1
        _, out2 = execute(kc2, "print('still here')")
        assert stdout(out2) == "still here\n"

        # shutdown_request from the frontend: reply, release, exit 0.
        kc2.shutdown()
        assert second.wait(15) == 0
        assert not sessions(cake_kernel)
    finally:
        for proc, kc in ((first, kc1), (second, kc2)):
            kc.stop_channels()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()


def test_start_failure_is_shown_to_the_frontend(cake_kernel: str, tmp_path: Path, cake_data_dir: Path) -> None:
    before = nanny_pids(cake_data_dir)
    argv = KernelSpecManager().get_kernel_spec(cake_kernel).argv
    target_at = argv.index("--target") + 1

    # A target the local machine cannot serve: the reason is on stderr (what VS Code shows), exit non-zero.
    argv[target_at] = "local --gpus A100:8"
    proc, kc, _ = _raw_launch(cake_kernel, tmp_path, "gpus", argv)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "could not start a session on local · A100:8" in err and "this machine has 0 GPU(s)" in err

    # A target line with a typo: named, with the fix, before anything starts.
    argv[target_at] = "slrum/hpc"
    proc, kc, _ = _raw_launch(cake_kernel, tmp_path, "typo", argv)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "slrum" in err and "slurm" in err
    assert nanny_pids(cake_data_dir) == before

    # Through jupyter_client the frontend learns at once that the kernel died, not after a timeout.
    spec_dir = tmp_path / "kernels" / "cake-broken"
    spec_dir.mkdir(parents=True)
    spec = KernelSpecManager().get_kernel_spec(cake_kernel).to_dict()
    spec["argv"][target_at] = "local --nodes 2"
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    km = KernelManager(kernel_name="cake-broken", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))
    km.start_kernel(stderr=subprocess.PIPE)
    kc = km.client()
    kc.start_channels()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="died"):
        kc.wait_for_ready(timeout=60)
    assert time.monotonic() - started < 30
    err = km.provisioner.process.stderr.read().decode()
    assert "--nodes 2" in err and "slurm" in err
    kc.stop_channels()
    km.cleanup_resources()


def test_keep_policy_reattaches_and_a_session_ending_under_the_kernel_is_explained(
    ide_env: dict[str, str], cake_data_dir: Path
) -> None:
    name = "cake-test-keep"
    installed = cake("kernel", "install", "local", "--name", name, "--on-shutdown", "keep", env=ide_env)
    assert installed.returncode == 0, installed.stderr
    km, kc = start(name)
    try:
        execute(kc, "kept = 'yes'")
        [row] = sessions(name)
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert [r.id for r in sessions(name)] == [row.id]  # --on-shutdown keep: still running

    km, kc = start(name)
    try:
        _, outputs = execute(kc, "print(kept)")
        assert stdout(outputs) == "yes\n"  # re-attached, state intact

        # The session ends under the connected kernel (here `cake down`; idle autostop is the same).
        # A cell running at that moment ends with the reason instead of hanging; so does every later one.
        msg_id = kc.execute("import time\ntime.sleep(60)")
        assert cake("down", row.id, env=ide_env).returncode == 0
        while (reply := kc.get_shell_msg(timeout=20))["parent_header"].get("msg_id") != msg_id:
            pass
        assert reply["content"]["ename"] == "SessionGone"
        reply, outputs = execute(kc, "print('never runs')")
        assert reply["status"] == "error" and reply["ename"] == "SessionGone"
        assert "stopped by the user (cake down)" in reply["evalue"] and "Restart the kernel" in reply["evalue"]
        assert [m["content"]["ename"] for _, m in outputs] == ["SessionGone"]
        assert km.is_alive()  # not a dead kernel that the server would auto-restart onto new GPUs

        # Restarting the kernel starts a new session.
        km.restart_kernel()
        kc.wait_for_ready(timeout=60)
        _, outputs = execute(kc, "print('kept' in globals())")
        assert stdout(outputs) == "False\n"
        [fresh] = sessions(name)
        assert fresh.id != row.id
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert [r.id for r in sessions(name)] == [fresh.id]
    assert cake("down", fresh.id, env=ide_env).returncode == 0
    assert cake("kernel", "remove", name, env=ide_env).returncode == 0


def test_completion_and_inspection_answer_from_the_remote_namespace(cake_kernel: str) -> None:
    """What an IDE asks while the user types (Tab, Shift+Tab): answered by the remote kernel, so names
    that exist only there complete and show their docs."""
    km, kc = start(cake_kernel)
    try:
        execute(kc, "import os\ndef remote_only_helper(x):\n    '''Scales x for the remote job.'''\n    return x\n"
                    "remote_pid = os.getpid()")  # fmt: skip
        code = "remote_only_h"
        reply = kc.complete(code, len(code), reply=True, timeout=30)["content"]
        assert reply["status"] == "ok" and "remote_only_helper" in reply["matches"], reply
        assert (reply["cursor_start"], reply["cursor_end"]) == (0, len(code))
        inspected = kc.inspect("remote_only_helper", len("remote_only_helper"), reply=True, timeout=30)["content"]
        assert inspected["found"] and "Scales x for the remote job." in inspected["data"]["text/plain"], inspected
        _, outputs = execute(kc, "print(remote_pid == os.getpid(), remote_pid != %d)" % os.getpid())
        assert stdout(outputs) == "True True\n"  # the namespace asked is the remote kernel's
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)

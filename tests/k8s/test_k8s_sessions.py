"""Sessions in Pods on a real Kubernetes cluster (tests/infra/k8s-up.sh): what a notebook user sees."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from helpers import assert_behaves_like_local, cake_cli, open_notebook, text
from k8s_cluster import Cluster
from jupyter_cake.store import Store

pytestmark = pytest.mark.timeout(240)


def _pod_of(name: str) -> str:
    row = Store().live_session(name, "")
    assert row is not None, f"no live session {name}"
    return str(row.allocation_data["pod"])


def _wait_gone(k8s: Cluster, pod: str, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while pod in k8s.pods() and time.time() < deadline:
        time.sleep(0.3)
    return pod not in k8s.pods()


def test_a_pod_session_behaves_like_local(k8s: Cluster) -> None:
    with open_notebook() as nb:
        t0 = time.time()
        nb.run(f"%cake use {k8s.target} --cpus 0.5 --memory 1 --name k8s-a --new")
        cold = time.time() - t0
        pod = _pod_of("k8s-a")
        cell = nb.run("%%cake\nimport os, socket\nprint(socket.gethostname(), os.environ['CAKE_SESSION'].startswith('s-'))")
        assert text(cell) == f"{pod} True\n"  # the cell ran in the Pod

        started = time.time()
        nb.run("%%cake\nimport sys, time\nfor i in range(8):\n    print(i, flush=True); print('e', file=sys.stderr, flush=True); time.sleep(0.2)")
        streams = [(t, m) for t, m in nb.client.received if m["header"]["msg_type"] == "stream"]
        assert streams[0][0] - started < 1.0, "the first line arrived late: output did not stream"
        assert streams[-1][0] - streams[0][0] > 1.0, "all output arrived at the end"
        out = "".join(m["content"]["text"] for _, m in streams if m["content"]["name"] == "stdout")
        assert out == "".join(f"{i}\n" for i in range(8))

        assert_behaves_like_local(nb, interrupt_slack=3.0)

        status = cake_cli("status").stdout
        line = next(ln for ln in status.splitlines() if "k8s-a" in ln)
        assert f"pod {k8s.namespace}/{pod} on cake-node" in line
        print(f"cold start {cold:.1f} s")
        nb.run("%cake down")
        assert pod not in k8s.pods()  # down waits until the Pod is really gone


def _forwarder_pid(name: str) -> int:
    row = Store().live_session(name, "")
    assert row is not None
    return int((Path(row.session_dir) / "forward.pid").read_text())


def test_detach_restart_attach_and_a_dropped_forward_is_reopened(k8s: Cluster) -> None:
    with open_notebook() as nb:  # closed after, like a notebook kernel restart: the session and its forwarder stay
        nb.run(f"%cake use {k8s.target} --name k8s-b --new")
        cell = nb.run("%%cake --detach\nimport time\nfor i in range(5):\n    print(f'step {i}', flush=True)\n"
                      "    time.sleep(0.3)\nresult = 'kept'")  # fmt: skip
        detached = re.search(r"run (r-[0-9a-f]+) detached", text(cell))
        assert detached, text(cell)
        run_id = detached.group(1)
    with open_notebook() as nb:
        assert "re-attached" in text(nb.run(f"%cake use {k8s.target} --name k8s-b"))
        assert text(nb.run(f"%cake attach {run_id}")) == "".join(f"step {i}\n" for i in range(5))
        assert text(nb.run("%%cake\nprint(result)")) == "kept\n"

        os.kill(_forwarder_pid("k8s-b"), signal.SIGKILL)  # the port-forward drops
        time.sleep(1.5)  # silent long enough for the next cell to check the channel
        assert text(nb.run("%%cake\nprint(result * 2)", timeout=60)) == "keptkept\n"
        pod = _pod_of("k8s-b")
        nb.run("%cake down")
        assert pod not in k8s.pods()


def test_a_pod_that_cannot_schedule_shows_why_in_place_then_fails_and_is_deleted(k8s: Cluster) -> None:
    with open_notebook() as nb:
        t0 = time.time()
        error = nb.fails(f"%cake use {k8s.target} --gpus 99 --name k8s-99 --new --timeout 4")
        assert 4 <= time.time() - t0 < 30
        assert "Insufficient nvidia.com/gpu" in error and "was deleted" in error
        shown = [o for o in nb.nb.cells[-1].outputs if o.output_type == "display_data"]
        assert len(shown) == 1  # one line, updated in place while waiting
        assert re.search(r"Pending \(Unschedulable: .*Insufficient nvidia.com/gpu.*\), waited [0-9]+ s", shown[0].data["text/plain"])
        assert k8s.pods() == []
        assert Store().live_session("k8s-99", "") is None


def test_deleting_the_pod_from_outside_fails_the_running_cell_and_marks_the_session_dead(k8s: Cluster) -> None:
    with open_notebook() as nb:
        nb.run(f"%cake use {k8s.target} --name k8s-c --new")
        pod = _pod_of("k8s-c")
        threading.Timer(1.0, lambda: k8s.core.delete_namespaced_pod(pod, k8s.namespace)).start()
        nb.fails_with("%%cake\nimport time\ntime.sleep(60)", "has stopped", "Pod was deleted", pod, within=30)
        assert Store().live_session("k8s-c", "") is None
        assert _wait_gone(k8s, pod)


def test_an_idle_session_deletes_its_pod(k8s: Cluster) -> None:
    with open_notebook() as nb:  # closed after: nobody watches, the Pod must go by itself
        nb.run(f"%cake use {k8s.target} --name k8s-idle --new --idle-minutes 0.05")
        pod = _pod_of("k8s-idle")
    assert _wait_gone(k8s, pod, 40), "the idle session's Pod is still there"
    status = cake_cli("status", "--all").stdout
    line = next(ln for ln in status.splitlines() if "k8s-idle" in ln)
    assert "idle for 0.05 minutes" in line


def test_a_cell_that_runs_out_of_memory_fails_saying_oomkilled_and_the_session_is_dead(k8s: Cluster) -> None:
    with open_notebook() as nb:
        nb.run(f"%cake use {k8s.target} --memory 0.25 --name k8s-oom --new")
        pod = _pod_of("k8s-oom")
        oom = "%%cake\nx = bytearray(1024**3)\nx[::4096] = b'1' * (len(x) // 4096)\nprint('survived')"
        nb.fails_with(oom, "OOMKilled", "256Mi", "--memory", within=30)
        assert Store().live_session("k8s-oom", "") is None
        assert _wait_gone(k8s, pod)


def test_an_idle_pod_left_behind_while_this_machine_was_away_is_deleted_by_the_next_cake_command(k8s: Cluster) -> None:
    with open_notebook() as nb:
        nb.run(f"%cake use {k8s.target} --name k8s-away --new --idle-minutes 0.05")
        pod = _pod_of("k8s-away")
        os.kill(_forwarder_pid("k8s-away"), signal.SIGKILL)  # as if the laptop went to sleep
    deadline = time.time() + 40
    while k8s.core.read_namespaced_pod(pod, k8s.namespace).status.phase != "Succeeded":
        assert time.time() < deadline, "the idle session's container did not exit"
        time.sleep(0.3)
    # The container has exited (its CPUs, memory and GPUs are free); the finished Pod object waits for Cake.
    status = cake_cli("status", "--all").stdout
    line = next(ln for ln in status.splitlines() if "k8s-away" in ln)
    assert "idle for 0.05 minutes" in line
    assert _wait_gone(k8s, pod, 5)


def test_gpus_become_limits_and_a_node_selector_and_the_session_lands_on_the_gpu_node(k8s: Cluster) -> None:
    # The node advertises one GPU of type t4, as a device plugin and a node labeller would.
    k8s.core.patch_node_status("cake-node", {"status": {"capacity": {"nvidia.com/gpu": "1"}}})
    k8s.core.patch_node("cake-node", {"metadata": {"labels": {"cake.test/gpu-type": "t4"}}})
    deadline = time.time() + 20
    while (k8s.core.read_node("cake-node").status.allocatable or {}).get("nvidia.com/gpu") != "1":
        assert time.time() < deadline, "the node never showed its GPU as allocatable"
        time.sleep(0.2)
    with open_notebook() as nb:
        nb.run(f"%cake use {k8s.target} --gpus t4:1 --option gpu_label=cake.test/gpu-type --name k8s-gpu --new")
        pod = k8s.core.read_namespaced_pod(_pod_of("k8s-gpu"), k8s.namespace)
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        assert pod.spec.node_selector == {"cake.test/gpu-type": "t4"} and pod.spec.node_name == "cake-node"
        assert text(nb.run("%%cake\nprint('on the GPU node')")) == "on the GPU node\n"
        nb.run("%cake down")
        # A type no node has: the scheduler's reason (no node matches the selector) is the error.
        error = nb.fails(f"%cake use {k8s.target} --gpus a100:1 --option gpu_label=cake.test/gpu-type "
                         "--name k8s-a100 --new --timeout 3")  # fmt: skip
        assert "didn't match Pod's node affinity" in error and "was deleted" in error
        assert k8s.pods() == []

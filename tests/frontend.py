"""A frontend at the Jupyter protocol, for tests and benchmarks of what a notebook sees: a real ipykernel
(the notebook's own kernel, with Cake's magics loaded by the caller) driven by jupyter_client the way
JupyterLab drives it: it keeps every iopub message, sends comm messages when a widget changes, and
answers input_request on stdin."""

from __future__ import annotations

import queue
import time
from typing import Any

from jupyter_client import KernelManager


class Frontend:
    """One notebook's kernel, as a frontend sees it: every iopub message of each request, in order."""

    def __init__(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel()
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.messages: list[dict[str, Any]] = []  # all iopub, in arrival order

    def execute(self, code: str, answers: list[str] | None = None, timeout: float = 120) -> list[dict[str, Any]]:
        """Run a cell (stdin allowed); answer each input_request with the next of ``answers``, keeping the
        requests in ``self.prompts``. Returns the cell's iopub messages; raises if the cell failed."""
        answers = list(answers or [])
        self.prompts: list[dict[str, Any]] = []
        msg_id = self.kc.execute(code, allow_stdin=answers != [])
        return self._until_idle(msg_id, answers, timeout, expect_reply=True)

    def comm_msg(self, comm_id: str, data: dict[str, Any], timeout: float = 60) -> list[dict[str, Any]]:
        """What JupyterLab's widget manager sends when the user changes a widget; returns its iopub."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)
        return self._until_idle(msg["header"]["msg_id"], [], timeout, expect_reply=False)

    def _until_idle(self, msg_id: str, answers: list[str], timeout: float, expect_reply: bool) -> list[dict[str, Any]]:
        own: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers:
                try:
                    request = self.kc.get_stdin_msg(timeout=0.01)
                    self.prompts.append(request["content"])
                    self.kc.input(answers.pop(0))
                except queue.Empty:
                    pass
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            self.messages.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            own.append(msg)
        else:
            raise AssertionError(f"no idle status within {timeout} s; got {[m['msg_type'] for m in own]}")
        if expect_reply:
            reply = self.kc.get_shell_msg(timeout=timeout)
            errors = [m["content"] for m in own if m["msg_type"] == "error"]
            assert reply["content"]["status"] == "ok", errors or reply["content"]
        return own

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

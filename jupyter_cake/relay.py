"""Remote outputs -> local outputs, so the notebook cannot tell a remote cell from a local one.

Runs in the local kernel's main thread (the magic's wait loop), which is where IPython expects
display calls, so parent headers, display ids and ``clear_output`` all behave as for local code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jupyter_cake.session import Output
from jupyter_cake.session.wire import COMM_TYPES

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RemoteError(Exception):
    """A remote cell raised. ``ename``/``evalue`` are the remote exception's; the message carries the
    remote traceback; in IPython only the remote traceback is shown, not the local machinery."""

    def __init__(self, ename: str, evalue: str, traceback: list[str], where: str = "") -> None:
        self.ename = ename
        self.evalue = evalue
        self.remote_traceback = traceback
        self.where = where
        plain = _ANSI.sub("", "\n".join(traceback))
        super().__init__(f"{ename}: {evalue} (raised in {where})\n{plain}" if where else f"{ename}: {evalue}\n{plain}")

    def _render_traceback_(self) -> list[str]:
        header = f"\x1b[0;31mRemoteError\x1b[0m: {self.ename} raised in {self.where}" if self.where else "RemoteError"
        return [header, *self.remote_traceback]


class RemoteResult:
    """The remote cell's ``Out``: displayed locally with every mime type the remote produced."""

    def __init__(self, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.metadata = dict(metadata)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<remote result>"))


class Relay:
    """Callable sink: publish each output locally; keep the result and error for the magic.

    ``on_comm`` takes the remote kernel's comm messages (widgets, progress bars), which the magics mirror
    into the local kernel; without one they are dropped. An input_request (remote ``input()``, ``getpass``,
    pdb) is asked here, with the local ``input``/``getpass`` (in a notebook kernel: the frontend's prompt;
    in ``cake run``: the terminal), and the answer goes back to the remote kernel."""

    def __init__(self, where: str = "", on_comm: Callable[[Output], None] | None = None) -> None:
        self.where = where
        self.on_comm = on_comm
        self.result: RemoteResult | None = None
        self.error: RemoteError | None = None

    def __call__(self, output: Output) -> None:
        kind = output["msg_type"]
        content = output["content"]
        if kind in COMM_TYPES:
            if self.on_comm is not None:
                self.on_comm(output)
            return
        if kind == "input_request":
            self._flush()
            answer_prompt(output)
            return
        if kind == "stream":
            stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
            stream.write(content.get("text", ""))
            stream.flush()  # don't wait for the local kernel's 0.2 s batching
            return
        if kind in ("display_data", "update_display_data"):
            from IPython.display import publish_display_data

            self._flush()
            kwargs: dict[str, Any] = {"update": True} if kind == "update_display_data" else {}
            publish_display_data(
                content.get("data", {}), content.get("metadata") or {}, transient=content.get("transient") or {}, **kwargs
            )
            return
        if kind == "clear_output":
            from IPython.display import clear_output

            self._flush()
            clear_output(wait=bool(content.get("wait")))
            return
        if kind == "execute_result":
            self.result = RemoteResult(content.get("data", {}), content.get("metadata") or {})
            return
        if kind == "error":
            self.error = RemoteError(
                content.get("ename", "Error"), content.get("evalue", ""), list(content.get("traceback") or []), self.where
            )

    @staticmethod
    def _flush() -> None:
        sys.stdout.flush()
        sys.stderr.flush()


def answer_prompt(output: Output) -> None:
    """Ask the user an input_request output's prompt here and send the answer to the remote kernel. The
    local ``input``/``getpass`` are looked up at call time: in a notebook kernel ipykernel puts its own
    (which ask the frontend; getpass's does not echo) in place only while a cell runs."""
    import builtins
    import getpass

    content = output["content"]
    prompt = content.get("prompt", "")
    try:
        answer = getpass.getpass(prompt) if content.get("password") else builtins.input(prompt)
    except Exception:
        output["answer"]("")  # e.g. EOF: the remote code must not wait for a reply that never comes
        raise
    output["answer"](answer)


def journal_text(entries: Iterable[Mapping[str, Any]]) -> str:
    """Plain-text rendering of a run's journal, for `cake logs` / `%cake logs`."""
    parts: list[str] = []
    for entry in entries:
        kind, content = entry["msg_type"], entry["content"]
        if kind == "stream":
            parts.append(content.get("text", ""))
        elif kind in ("display_data", "update_display_data", "execute_result"):
            text = content.get("data", {}).get("text/plain")
            if text:
                parts.append(text + "\n")
        elif kind == "error":
            parts.append(_ANSI.sub("", "\n".join(content.get("traceback") or [])) + "\n")
    return "".join(parts)

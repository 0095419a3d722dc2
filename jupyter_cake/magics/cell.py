"""Running a ``%%cake`` cell: pick its session (the current one, or its own --target, with Ray if
asked), push variables, execute, stream outputs under the in-cell run header, honour --timeout and
--detach, then pull variables and hand back the cell's result or the remote exception.
"""

from __future__ import annotations

import os
import queue
import sys
from typing import Any

from jupyter_cake import widget
from jupyter_cake.errors import RunTimeout
from jupyter_cake.magics.arguments import CellOptions
from jupyter_cake.magics.comms import twins_for
from jupyter_cake.magics.context import Context
from jupyter_cake.magics.follow import Follower
from jupyter_cake.magics.variables import pull, push
from jupyter_cake.relay import Relay
from jupyter_cake.targets import resolve_target


def run_cell(ctx: Context, options: CellOptions, cell: str) -> Any:
    target = resolve_target(options.target) if options.target is not None else None
    current = None if target else ctx.require_current()
    if options.ray and not (target or current.target).ray:  # type: ignore[union-attr]
        import dataclasses  # the same target with Ray: a session of its own, started if needed

        target, current = dataclasses.replace(target or current.target, ray=True), None  # type: ignore[union-attr]
    # The in-cell run header (jupyter_cake/widget.py): only for interactive frontends.
    label = (target or current.target).describe()  # type: ignore[union-attr]
    header = None if options.detach else widget.start(ctx.shell, label)
    follower = Follower(header)
    exit_state = "error"
    try:
        handle = ctx.session_for(target) if target else current
        assert handle is not None
        if options.push:
            push(ctx.shell, handle, options.push)
        twins = twins_for(ctx.comm_twins, handle, idle=True)  # before the run: restoring asks the kernel
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        run_id, future = handle.start_run(cell, None if options.detach else sink.put, detach=options.detach,
                                          source=_source(ctx.shell), allow_stdin=_can_ask(ctx.shell, options.detach))  # fmt: skip
        if options.detach:
            future.result()
            print(f"[cake] run {run_id} detached on session {handle.id}; `%cake attach {run_id}` to follow it")
            return None
        if header is not None:
            header.running(run_id, handle.interrupt)
        relay = Relay(where=f"session {handle.id}, run {run_id}", on_comm=twins)
        try:
            outcome = follower.follow(handle, future, sink, relay, options.timeout, run_id)
        except RunTimeout:
            exit_state = "timeout"
            raise
        except KeyboardInterrupt:
            exit_state = "cancelled"
            raise
        handle.finish_run(outcome)
        exit_state = outcome.status
        if relay.error is not None and relay.error.ename == "KeyboardInterrupt":
            exit_state = "cancelled"
    finally:
        if header is not None:
            header.finish(exit_state)
    if relay.error is not None:
        if relay.error.ename == "KeyboardInterrupt" and outcome.status != "ok" and follower.interrupted:
            raise KeyboardInterrupt(f"remote run {run_id} interrupted")
        raise relay.error
    if options.pull:
        pull(ctx.shell, handle, options.pull)
    return relay.result


def _can_ask(shell: Any, detach: bool) -> bool:
    """Whether the remote cell may ask for input: where this cell could (the frontend said so in its
    request; a terminal IPython has a terminal). A detached run may: its prompt waits for `%cake attach`."""
    if detach:
        return True
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return sys.stdin.isatty()
    return bool(getattr(kernel, "_allow_stdin", False))  # ipykernel's: set from each execute_request


def _source(shell: Any) -> str:
    """Where the run came from, for `%cake runs`: the notebook and, where the frontend says, the cell id."""
    notebook = os.environ.get("JPY_SESSION_NAME", "")
    try:
        cell_id = shell.kernel.get_parent().get("metadata", {}).get("cellId", "")
    except AttributeError:
        cell_id = ""
    return f"{notebook}#{cell_id}" if cell_id else notebook

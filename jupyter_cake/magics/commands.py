"""The line sub-commands, ``%cake <command> args...``: what each one does, and the table
:func:`run_command` dispatches on. Their arguments arrive split (jupyter_cake/magics/arguments.py).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from jupyter_cake import views
from jupyter_cake.errors import CakeError, SessionGone
from jupyter_cake.magics.arguments import HELP, split_use_flags, variable_names
from jupyter_cake.magics.comms import twins_for
from jupyter_cake.magics.context import Context
from jupyter_cake.magics.follow import Follower
from jupyter_cake.magics.variables import pull, push
from jupyter_cake.manager import Handle
from jupyter_cake.relay import Relay
from jupyter_cake.targets import resolve_target


def cmd_use(ctx: Context, args: list[str]) -> None:
    spec, flags = split_use_flags(args)
    target = resolve_target(spec)
    if flags.get("dryrun"):  # SkyPilot's plan and price, nothing launched
        return cmd_plan(ctx, spec)
    ctx.current = ctx.session_for(target, name=flags["name"], new=flags["new"], timeout=flags["timeout"])


def cmd_help(ctx: Context, args: list[str]) -> None:
    print(HELP)


def cmd_status(ctx: Context, args: list[str]) -> None:
    print(views.status_table(ctx.core, show_all="--all" in args))


def cmd_plan(ctx: Context, args: list[str]) -> None:
    from jupyter_cake.backends.sky.plan import plan_text

    if not args:
        raise CakeError("Plan which target? e.g. `%cake plan aws --gpus T4:1` (SkyPilot's choice and $/hour).")
    print(plan_text(resolve_target(args)))


def cmd_targets(ctx: Context, args: list[str]) -> None:
    print(views.targets_table())


def cmd_runs(ctx: Context, args: list[str]) -> None:
    print(views.runs_table(ctx.core, limit=200 if "--all" in args else 20))


def cmd_logs(ctx: Context, args: list[str]) -> None:
    if not args:
        raise CakeError("Which run? `%cake logs RUN` (ids are in `%cake runs`).")
    print(views.logs_text(ctx.core, args[0]), end="")


def cmd_attach(ctx: Context, args: list[str]) -> Any:
    run = ctx.core.find_run(args[0]) if args else _latest_run(ctx)
    relay = Relay(where=f"run {run.id}")
    sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handle, future = ctx.core.attach(run, sink.put)
    if handle is None:
        for entry in ctx.core.journal(run):  # the session has ended: its journal files remain
            relay(entry)
        print(f"[cake] run {run.id} ({run.state}); its session has ended, output replayed from the journal")
    else:
        relay.on_comm = twins_for(ctx.comm_twins, handle, idle=False)  # the run may still be going on
        outcome = Follower().follow(handle, future, sink, relay, None, run.id)
        handle.finish_run(outcome)
    if relay.error is not None:
        raise relay.error
    return relay.result


def cmd_push(ctx: Context, args: list[str]) -> None:
    names = variable_names(args, "push", "Which variables? `%cake push df,model` sends them to the current session.")
    push(ctx.shell, ctx.require_current(), names)


def cmd_pull(ctx: Context, args: list[str]) -> None:
    names = variable_names(args, "pull", "Which variables? `%cake pull result` brings them from the current session.")
    pull(ctx.shell, ctx.require_current(), names)


def cmd_ray(ctx: Context, args: list[str]) -> None:
    from jupyter_cake.ray.session import info_text

    print(info_text(_handle_arg(ctx, args)))


def cmd_interrupt(ctx: Context, args: list[str]) -> None:
    handle = _handle_arg(ctx, args)
    handle.interrupt()
    print(f"[cake] interrupt sent to session {handle.id}")


def cmd_down(ctx: Context, args: list[str]) -> None:
    rows = ctx.core.store.sessions(live_only=True) if "--all" in args else None
    if rows is None:
        rows = [ctx.core.find_session(args[0])] if args else [ctx.require_current().row]
    for row in rows:
        ctx.core.down(row)
        if ctx.current is not None and ctx.current.id == row.id:
            ctx.current = None
        print(f"[cake] session {row.id} ({row.name}) is down")


def _latest_run(ctx: Context) -> Any:
    runs = ctx.core.store.runs(session_id=ctx.current.id if ctx.current else None, limit=1)
    if not runs:
        raise CakeError("No runs yet to attach to. `%cake attach RUN` takes an id from `%cake runs`.")
    return runs[0]


def _handle_arg(ctx: Context, args: list[str]) -> Handle:
    """The session named by the first argument, else the current one."""
    if not args:
        return ctx.require_current()
    row = ctx.core.find_session(args[0])
    handle = ctx.core.connect(row)
    if handle is None:
        raise SessionGone(f"Session {row.id} has ended ({row.reason or 'stopped'}).")
    return handle


COMMANDS: dict[str, Callable[[Context, list[str]], Any]] = {
    "use": cmd_use, "plan": cmd_plan, "push": cmd_push, "pull": cmd_pull, "status": cmd_status,
    "targets": cmd_targets, "runs": cmd_runs, "attach": cmd_attach, "logs": cmd_logs,
    "interrupt": cmd_interrupt, "down": cmd_down, "ray": cmd_ray, "help": cmd_help,
}  # fmt: skip


def run_command(ctx: Context, command: str, args: list[str]) -> Any:
    handler = COMMANDS.get(command)
    if handler is None:
        raise CakeError(f"Unknown command `%cake {command}`. Commands: {', '.join(COMMANDS)}. See `%cake help`.")
    return handler(ctx, args)

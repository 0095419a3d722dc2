"""``%cake`` / ``%%cake``: the notebook front door.

    %load_ext jupyter_cake
    %cake use local --idle-minutes 30        start or re-attach a session; it becomes the current one
    %%cake [--push a,b] [--pull c] [--detach] [--timeout S] [--target ...]
    %cake push a,b | pull c                  move variables without running a cell
    %cake status | targets | runs | attach RUN | logs RUN | interrupt | down [SESSION] | help
    %cake use <target> --ray                 a Ray cluster in the session; `%cake ray` shows it
"""

from __future__ import annotations

import queue
import shlex
import time
from collections.abc import Sequence
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jupyter_cake import views, widget
from jupyter_cake.errors import CakeError, RunTimeout, SessionGone
from jupyter_cake.manager import Cake, Handle
from jupyter_cake.relay import Relay
from jupyter_cake.targets import Target, resolve_target

INTERRUPT_GRACE_S = 5.0  # after an interrupt, how long to wait for the remote cell to stop
POLL_S = 0.05
LIVENESS_CHECK_S = 2.0

HELP = __doc__ + """
Targets use SkyPilot's infra syntax (local, slurm/<cluster>/<partition>, k8s/<context>, aws/<region>, ...)
plus --gpus NAME:N --cpus N[+] --memory GB[+] --nodes N --image IMG --env K=V --workdir DIR
--idle-minutes M, or a name from the targets file (`%cake targets` shows where it is).
`%cake use` also takes --name NAME (share a session by name), --new (never re-attach), --timeout S,
--dryrun (show SkyPilot's plan and $/hour instead of launching; same as `%cake plan <target>`).
SkyPilot: clouds always go through it; slurm/ and k8s/ do with --via sky (or via = "sky" in a named
target), and --task task.yaml takes resources, envs, setup, workdir and file_mounts from a SkyPilot task.
"""


def _split_use_flags(tokens: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Separate the session flags of `%cake use` from the target spec that follows the target syntax."""
    rest: list[str] = []
    flags: dict[str, Any] = {"name": None, "new": False, "timeout": None}
    it = iter(tokens)
    for token in it:
        key, eq, value = token.partition("=")
        if key in ("--name", "--timeout"):
            if not eq:
                value = next(it, "")
            if not value:
                raise CakeError(f"{key} needs a value, e.g. `%cake use local {key} {'gpu-work' if key == '--name' else '300'}`.")
            flags[key[2:]] = value
        elif token == "--new":
            flags["new"] = True
        elif token == "--dryrun":
            flags["dryrun"] = True
        else:
            rest.append(token)
    if flags["timeout"] is not None:
        flags["timeout"] = _seconds(flags["timeout"], "--timeout")
    return rest, flags


def _seconds(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise CakeError(f"{flag} takes a number of seconds greater than 0, not {text!r}.")
    return value


def _names(text: str | None, flag: str) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise CakeError(f"{flag} takes comma-separated variable names; {', '.join(map(repr, bad))} is not one.")
    return names


class _StatusLine:
    """Progress of a starting session: transient messages (a queue wait ticking up) replace each
    other in one display, updated in place; lasting ones are printed."""

    def __init__(self) -> None:
        self.display: Any = None

    def __call__(self, text: str, transient: bool = False) -> None:
        from IPython.display import display

        bundle = {"text/plain": f"[cake] {text}"}
        if self.display is not None:
            self.display.update(bundle, raw=True)
            if not transient:
                self.display = None
        elif transient:
            self.display = display(bundle, raw=True, display_id=True)
        else:
            print(f"[cake] {text}", flush=True)


@magics_class
class CakeMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._cake: Cake | None = None
        self.current: Handle | None = None
        self._interrupted = False  # the user pressed stop during the current cell
        self._header: widget.RunHeader | None = None  # the in-cell run header of the running cell

    @property
    def core(self) -> Cake:
        if self._cake is None:  # the store is opened on first use, not at %load_ext
            self._cake = Cake()
        return self._cake

    # -- dispatch ------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--target", "-t", default=None, help="run this cell on another target (started if needed)")
    @argument("--push", default=None, help="local variables to send before the cell, e.g. df,model")
    @argument("--pull", default=None, help="remote variables to bring back after the cell")
    @argument("--detach", action="store_true", help="return a run id at once; `%%cake attach RUN` later")
    @argument("--timeout", default=None, help="interrupt the remote cell after this many seconds")
    @argument("--ray", action="store_true", help="run on the session's target with a Ray cluster (RAY_ADDRESS set)")
    @line_cell_magic
    def cake(self, line: str, cell: str | None = None) -> Any:
        """Run a cell on the current Cake session, or manage sessions (`%cake help`)."""
        if cell is not None:
            return self._cell(line, cell)
        tokens = shlex.split(line, comments=True)
        command, args = (tokens[0], tokens[1:]) if tokens else ("help", [])
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise CakeError(f"Unknown command `%cake {command}`. Commands: {', '.join(views.COMMANDS)}. See `%cake help`.")
        return handler(args)

    # -- %cake use -----------------------------------------------------------------------------------
    def _cmd_use(self, args: list[str]) -> None:
        spec, flags = _split_use_flags(args)
        target = resolve_target(spec)
        if flags.get("dryrun"):  # SkyPilot's plan and price, nothing launched
            return self._cmd_plan(spec)
        self.current = self._session_for(target, name=flags["name"], new=flags["new"], timeout=flags["timeout"])

    def _session_for(
        self, target: Target, name: str | None = None, new: bool = False, timeout: float | None = None
    ) -> Handle:
        start = time.monotonic()
        line = _StatusLine()
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout else {}
        handle, started = self.core.use(target, name=name, new=new, progress=line, **kwargs)
        took = time.monotonic() - start
        verb = "started" if started else "re-attached to"
        where = handle.backend.describe(handle.allocation)
        line(f"{verb} session {handle.id} on {target.describe()}{f' [{where}]' if where else ''} ({took:.2f} s)")
        return handle

    # -- %%cake --------------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> Any:
        try:
            # Unknown flags are the target's resources: `%%cake --target local --cpus 4 --push x`.
            args, resources = self.cake.parser.parse_known_args(shlex.split(line, comments=True))
        except Exception as exc:  # UsageError from argparse, or a shlex quoting error
            raise CakeError(f"%%cake {line}: {exc}. Options: --target, --push, --pull, --detach, --timeout.") from None
        if resources and not args.target:
            raise CakeError(
                f"%%cake got {' '.join(resources)!r}, which only makes sense with a target: "
                f"`%%cake --target <target> {' '.join(resources)}`. Cell options: --push, --pull, --detach, --timeout."
            )
        timeout = _seconds(args.timeout, "--timeout") if args.timeout else None
        push, pull = _names(args.push, "--push"), _names(args.pull, "--pull")
        if args.detach and pull:
            raise CakeError("--pull needs the cell's end, which --detach doesn't wait for. Pull in a later cell.")
        target = resolve_target([*shlex.split(args.target), *resources]) if args.target else None
        current = None if target else self._require_current()
        if args.ray and not (target or current.target).ray:  # type: ignore[union-attr]
            import dataclasses  # the same target with Ray: a session of its own, started if needed

            target, current = dataclasses.replace(target or current.target, ray=True), None  # type: ignore[union-attr]
        # The in-cell run header (jupyter_cake/widget.py): only for interactive frontends.
        label = (target or current.target).describe()  # type: ignore[union-attr]
        self._header = None if args.detach else widget.start(self.shell, label)
        exit_state = "error"
        try:
            handle = self._session_for(target) if target else current
            assert handle is not None
            if push:
                self._push(handle, push)
            sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
            run_id, future = handle.start_run(cell, None if args.detach else sink.put,
                                              detach=args.detach, source=self._source())  # fmt: skip
            if args.detach:
                future.result()
                print(f"[cake] run {run_id} detached on session {handle.id}; `%cake attach {run_id}` to follow it")
                return None
            if self._header is not None:
                self._header.running(run_id, handle.interrupt)
            relay = Relay(where=f"session {handle.id}, run {run_id}")
            try:
                outcome = self._follow(handle, future, sink, relay, timeout, run_id)
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
            if self._header is not None:
                self._header.finish(exit_state)
                self._header = None
        if relay.error is not None:
            if relay.error.ename == "KeyboardInterrupt" and outcome.status != "ok" and self._interrupted:
                raise KeyboardInterrupt(f"remote run {run_id} interrupted")
            raise relay.error
        if pull:
            self._pull(handle, pull)
        return relay.result

    def _follow(
        self, handle: Handle, future: Any, sink: queue.SimpleQueue[Any], relay: Relay, timeout: float | None,
        run_id: str,
    ) -> Any:  # fmt: skip
        """Relay outputs until the run ends; Ctrl-C (the notebook's stop button) interrupts the remote
        cell and keeps relaying so its traceback and last outputs still arrive."""
        try:
            return self._relay_until_done(handle, future, sink, relay, timeout, run_id)
        except BaseException:
            future.cancel()  # stop waiting on the engine loop too
            raise

    def _relay_until_done(
        self, handle: Handle, future: Any, sink: queue.SimpleQueue[Any], relay: Relay, timeout: float | None,
        run_id: str,
    ) -> Any:  # fmt: skip
        self._interrupted = False
        deadline = time.monotonic() + timeout if timeout else None
        give_up: float | None = None
        timed_out = False
        last_check = time.monotonic()
        finished = object()
        future.add_done_callback(lambda _: sink.put(finished))  # wakes the loop the moment the run ends
        while True:
            try:
                item = sink.get(timeout=POLL_S)
                if item is not finished:
                    relay(item)
                    continue
            except queue.Empty:
                pass
            except KeyboardInterrupt:
                if self._interrupted:
                    raise  # a second Ctrl-C: stop waiting
                self._interrupted = True
                handle.interrupt()
                give_up = time.monotonic() + INTERRUPT_GRACE_S
                continue
            if future.done():
                while True:
                    try:
                        item = sink.get_nowait()
                    except queue.Empty:
                        break
                    if item is not finished:
                        relay(item)
                break
            now = time.monotonic()
            if self._header is not None:
                self._header.tick()
            handle.check_probe()  # the session may end under a running cell (allocation lost)
            if now - last_check > LIVENESS_CHECK_S:
                last_check = now
                handle.probe()
            if deadline is not None and now > deadline and not timed_out:
                timed_out = True
                handle.interrupt()
                give_up = now + INTERRUPT_GRACE_S
            if give_up is not None and now > give_up:
                raise CakeError(
                    f"Run {run_id} did not stop within {INTERRUPT_GRACE_S:g} s of the interrupt; it may still be "
                    f"running on session {handle.id}. `%cake down {handle.id}` stops the session."
                )
        outcome = future.result()
        if timed_out:
            handle.finish_run(outcome)
            raise RunTimeout(f"Run {run_id} exceeded --timeout {timeout:g} s and was interrupted; the session is still usable.")
        return outcome

    def _require_current(self) -> Handle:
        if self.current is None:
            raise CakeError(
                "No Cake session yet. Start one first, e.g. `%cake use local` (or `%cake use <target>`), "
                "or give the cell a target: `%%cake --target local`."
            )
        return self.current

    def _source(self) -> str:
        import os

        notebook = os.environ.get("JPY_SESSION_NAME", "")
        try:
            cell_id = self.shell.kernel.get_parent().get("metadata", {}).get("cellId", "")
        except AttributeError:
            cell_id = ""
        return f"{notebook}#{cell_id}" if cell_id else notebook

    # -- variables -----------------------------------------------------------------------------------
    def _push(self, handle: Handle, names: list[str]) -> None:
        from jupyter_cake import engine
        from jupyter_cake.nanny.kernel import dumps_frames

        handle.ensure_alive()
        ns = self.shell.user_ns
        missing = [n for n in names if n not in ns]
        if missing:
            raise CakeError(f"--push: {', '.join(map(repr, missing))} is not defined in this notebook.")
        frames: dict[str, list[Any]] = {}
        for name in names:
            try:
                frames[name] = dumps_frames(ns[name])
            except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's to fix
                raise CakeError(
                    f"--push: {name!r} ({type(ns[name]).__name__}) cannot be pickled: {exc}. "
                    "Push something picklable, or create it in a %%cake cell."
                ) from None
        engine.run(handle.remote.push(frames))

    def _pull(self, handle: Handle, names: list[str]) -> None:
        from jupyter_cake import engine

        handle.ensure_alive()
        try:
            values = engine.run(handle.remote.pull(names))
        except CakeError as exc:
            raise CakeError(f"--pull: {exc}. The cell itself ran; nothing was pulled.") from None
        self.shell.user_ns.update(values)

    # -- management commands -------------------------------------------------------------------------
    def _cmd_help(self, args: list[str]) -> None:
        print(HELP)

    def _cmd_status(self, args: list[str]) -> None:
        print(views.status_table(self.core, show_all="--all" in args))

    def _cmd_plan(self, args: list[str]) -> None:
        from jupyter_cake.backends.sky.plan import plan_text

        if not args:
            raise CakeError("Plan which target? e.g. `%cake plan aws --gpus T4:1` (SkyPilot's choice and $/hour).")
        print(plan_text(resolve_target(args)))

    def _cmd_targets(self, args: list[str]) -> None:
        print(views.targets_table())

    def _cmd_runs(self, args: list[str]) -> None:
        print(views.runs_table(self.core, limit=200 if "--all" in args else 20))

    def _cmd_logs(self, args: list[str]) -> None:
        if not args:
            raise CakeError("Which run? `%cake logs RUN` (ids are in `%cake runs`).")
        print(views.logs_text(self.core, args[0]), end="")

    def _cmd_attach(self, args: list[str]) -> Any:
        run = self.core.find_run(args[0]) if args else self._latest_run()
        relay = Relay(where=f"run {run.id}")
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        handle, future = self.core.attach(run, sink.put)
        if handle is None:
            for entry in self.core.journal(run):  # the session has ended: its journal files remain
                relay(entry)
            print(f"[cake] run {run.id} ({run.state}); its session has ended, output replayed from the journal")
        else:
            outcome = self._follow(handle, future, sink, relay, None, run.id)
            handle.finish_run(outcome)
        if relay.error is not None:
            raise relay.error
        return relay.result

    def _cmd_push(self, args: list[str]) -> None:
        names = _names(",".join(args), "%cake push")
        if not names:
            raise CakeError("Which variables? `%cake push df,model` sends them to the current session.")
        self._push(self._require_current(), names)

    def _cmd_pull(self, args: list[str]) -> None:
        names = _names(",".join(args), "%cake pull")
        if not names:
            raise CakeError("Which variables? `%cake pull result` brings them from the current session.")
        self._pull(self._require_current(), names)

    def _latest_run(self) -> Any:
        runs = self.core.store.runs(session_id=self.current.id if self.current else None, limit=1)
        if not runs:
            raise CakeError("No runs yet to attach to. `%cake attach RUN` takes an id from `%cake runs`.")
        return runs[0]

    def _cmd_ray(self, args: list[str]) -> None:
        from jupyter_cake.ray.session import info_text

        print(info_text(self._handle_arg(args)))

    def _cmd_interrupt(self, args: list[str]) -> None:
        handle = self._handle_arg(args)
        handle.interrupt()
        print(f"[cake] interrupt sent to session {handle.id}")

    def _cmd_down(self, args: list[str]) -> None:
        rows = self.core.store.sessions(live_only=True) if "--all" in args else None
        if rows is None:
            rows = [self.core.find_session(args[0])] if args else [self._require_current().row]
        for row in rows:
            self.core.down(row)
            if self.current is not None and self.current.id == row.id:
                self.current = None
            print(f"[cake] session {row.id} ({row.name}) is down")

    def _handle_arg(self, args: list[str]) -> Handle:
        if not args:
            return self._require_current()
        row = self.core.find_session(args[0])
        handle = self.core.connect(row)
        if handle is None:
            raise SessionGone(f"Session {row.id} has ended ({row.reason or 'stopped'}).")
        return handle


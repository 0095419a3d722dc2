"""The ``cake`` command: the same sessions and runs as the magics, from a terminal.

    cake status [--all]        sessions, idle time, autostop countdown
    cake targets               named targets and installed backends
    cake plan TARGET [resources]  SkyPilot's choice and $/hour for a target, without launching it
    cake runs [--all]          recent runs
    cake logs RUN [-f]         a run's output (from the journal); -f follows a live run
    cake down [SESSION|--all]  stop sessions and release their allocations
    cake run FILE [ARGS] --target T [--workdir DIR] [--detach]
                               run a local script on a session; output streams here, exit code is the script's
    cake kernel install T [resources] [--name N]   a kernelspec: any Jupyter frontend gets a kernel on T
    cake kernel list | cake kernel remove NAME...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from jupyter_cake.errors import CakeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cake", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="list sessions")
    status.add_argument("--all", action="store_true", help="include stopped and failed sessions")
    sub.add_parser("targets", help="list targets")
    plan = sub.add_parser("plan", help="SkyPilot's choice and $/hour for a target, without launching")
    plan.add_argument("tokens", nargs=argparse.REMAINDER, help="a target line, e.g. aws --gpus T4:1")
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--all", action="store_true", help="up to 200 runs instead of 20")
    runs.add_argument("--session", default=None, help="only runs of this session")
    logs = sub.add_parser("logs", help="show a run's output")
    logs.add_argument("run", help="run id (or a unique prefix)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming until the run ends")
    down = sub.add_parser("down", help="stop sessions")
    down.add_argument("session", nargs="?", help="session id or name")
    down.add_argument("--all", action="store_true", help="stop every live session")
    run = sub.add_parser(
        "run", help="run a local script on a session",
        usage="cake run [OPTIONS] FILE [ARGS...] [OPTIONS] [-- ARGS...]",
        description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    run.add_argument("tokens", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    kernel = sub.add_parser("kernel", help="kernelspecs that make a whole kernel remote (VS Code, PyCharm, Jupyter)")
    ksub = kernel.add_subparsers(dest="kernel_command", required=True, metavar="install|list|remove")
    install = ksub.add_parser(
        "install", help="install a Cake kernelspec", usage="cake kernel install TARGET [resources] [OPTIONS]",
        description=KERNEL_INSTALL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    install.add_argument("tokens", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    ksub.add_parser("list", help="list Cake kernelspecs")
    remove = ksub.add_parser("remove", help="remove Cake kernelspecs")
    remove.add_argument("names", nargs="+", metavar="NAME")
    return parser


RUN_HELP = """Run a local script on a Cake session: stdout/stderr stream here live, and cake exits with the
script's exit code (128+N when a signal N killed it). Ctrl-C cancels the remote process.

options (also accepted after FILE; put script arguments of the same name after `--`):
  --target T, -t T     where: local, slurm/<cluster>[/<partition>], k8s/<context>, <cloud>, or a named target
  --gpus/--cpus/--memory/--nodes/--image/--env/--idle-minutes/--option   target resources
  --workdir DIR        local directory the script runs in / that is synced (default: the current directory)
  --sync auto|copy|none  copy: pack DIR and unpack it on the session; none: use the remote files as they are;
                       auto (default): run in place on the local target, copy elsewhere
  --detach             print the run id and return; `cake logs -f RUN` follows it
  --ray                submit through the Ray Jobs API of a Ray cluster in the session (started if needed);
                       the job's log streams here, Ctrl-C stops the job, cake exits with its status
  --name NAME          session name (default: the target's); --new: always a new session
  --down               stop the session when the run ends (default: keep it warm for the next run)
  --timeout S          how long to wait for a new session to start
"""

KERNEL_INSTALL_HELP = """Install a kernelspec whose kernel runs on a Cake session. Every Jupyter frontend (VS Code,
PyCharm, JupyterLab, nbclient, jupyter console) lists it; restarting the kernel keeps the allocation.

  cake kernel install slurm/hpc/gpu --gpus A100:1 --name hpc-a100

options:
  --name NAME          kernelspec name (default: derived from the target, e.g. cake-local)
  --display-name TEXT  name shown in kernel pickers (default: "Python 3 (Cake: <target and GPUs>)")
  --user               install for this user (default)
  --sys-prefix         install into this Python environment (sys.prefix)
  --prefix DIR         install into DIR/share/jupyter/kernels
  --on-shutdown down|keep  what a kernel shutdown does to the session (default: down)
"""


def _split_flags(
    tokens: Sequence[str], value_flags: Sequence[str], bool_flags: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """Take known flags out of a token list; the rest (a target line) keeps its order."""
    flags: dict[str, Any] = {}
    rest: list[str] = []
    it = iter(tokens)
    for token in it:
        name, eq, value = token.partition("=")
        if name in value_flags:
            if not eq:
                value = next(it, "")
            if not value:
                raise CakeError(f"{name} needs a value.")
            flags[name.lstrip("-").replace("-", "_")] = value
        elif token in bool_flags:
            flags[token.lstrip("-").replace("-", "_")] = True
        else:
            rest.append(token)
    return flags, rest


def _kernel_command(args: argparse.Namespace) -> int:
    from ide_bridge import kernelspecs
    from jupyter_cake.views import table

    if args.kernel_command == "install":
        flags, target = _split_flags(
            args.tokens, ("--name", "--display-name", "--prefix", "--on-shutdown"), ("--user", "--sys-prefix")
        )
        if sum(bool(flags.get(k)) for k in ("user", "sys_prefix", "prefix")) > 1:
            raise CakeError("Give only one of --user, --sys-prefix and --prefix DIR.")
        prefix = sys.prefix if flags.get("sys_prefix") else flags.get("prefix")
        spec = kernelspecs.install(
            target, flags.get("name"), flags.get("display_name"), user=prefix is None, prefix=prefix,
            on_shutdown=flags.get("on_shutdown", "down"),
        )  # fmt: skip
        print(f"Installed kernelspec {spec.name!r} ({spec.display_name}) in {spec.resource_dir}")
        print("Pick it in VS Code, PyCharm or JupyterLab, or: jupyter console --kernel " + spec.name)
    elif args.kernel_command == "list":
        specs = kernelspecs.list_specs()
        if not specs:
            print("No Cake kernelspecs. Install one with `cake kernel install local` (or another target).")
        else:
            rows = [(s.name, s.display_name, s.target, s.on_shutdown, s.resource_dir) for s in specs]
            print(table(("NAME", "DISPLAY NAME", "TARGET", "ON SHUTDOWN", "LOCATION"), rows))
    elif args.kernel_command == "remove":
        for spec in kernelspecs.remove(args.names):
            print(f"Removed kernelspec {spec.name!r} ({spec.resource_dir})")
    return 0


def _follow(cake: Any, ref: str) -> int:
    from jupyter_cake.relay import journal_text

    run = cake.find_run(ref)

    def sink(output: dict[str, Any]) -> None:
        target = sys.stderr if output["content"].get("name") == "stderr" else sys.stdout
        target.write(journal_text([output]))
        target.flush()

    handle, future = cake.attach(run, sink)
    if handle is None:
        sys.stdout.write(journal_text(cake.journal(run)))
        return 0 if run.state == "ok" else 1
    try:
        outcome = future.result()
    except KeyboardInterrupt:
        future.cancel()
        return 130
    handle.finish_run(outcome)
    return 0 if outcome.status == "ok" else 1


def run_command(args: argparse.Namespace) -> int:
    from jupyter_cake import views
    from jupyter_cake.manager import Cake

    if args.command == "targets":
        print(views.targets_table())
        return 0
    if args.command == "plan":
        from jupyter_cake.backends.sky.plan import plan_text
        from jupyter_cake.targets import resolve_target

        if not args.tokens:
            raise CakeError("Plan which target? e.g. `cake plan aws --gpus T4:1`.")
        print(plan_text(resolve_target(args.tokens)))
        return 0
    if args.command == "run":
        from jupyter_cake import runner

        try:
            return runner.run(runner.parse_run_args(args.tokens))
        except KeyboardInterrupt:  # before the run started (e.g. while the workdir was sent): nothing runs
            print("cake: interrupted", file=sys.stderr)
            return 130
    if args.command == "kernel":
        return _kernel_command(args)
    cake = Cake()
    if args.command == "status":
        print(views.status_table(cake, show_all=args.all))
    elif args.command == "runs":
        session = cake.find_session(args.session).id if args.session else None
        print(views.runs_table(cake, limit=200 if args.all else 20, session_id=session))
    elif args.command == "logs":
        if args.follow:
            return _follow(cake, args.run)
        sys.stdout.write(views.logs_text(cake, args.run))
    elif args.command == "down":
        if args.all:
            rows = cake.store.sessions(live_only=True)
        elif args.session:
            rows = [cake.find_session(args.session)]
        else:
            raise CakeError("Which session? `cake down SESSION` (ids are in `cake status`), or `cake down --all`.")
        for row in rows:
            # A start killed half-way is released by what names its allocation; say so, it is news.
            note = cake.reap_dead_start(row, strict=True)
            if note is None:
                cake.down(row)
            print(f"session {row.id} ({row.name}) is down" + (f": {note}" if note else ""))
        if not rows:
            print("no live sessions")
    return 0


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """argparse would take the script's and the target's options for its own: `cake run` and
    `cake kernel install` get their tokens verbatim (their own parsers know what is whose)."""
    tokens = list(argv)
    wants_help = bool({"-h", "--help"} & set(tokens[1:2] if tokens[:1] == ["run"] else tokens[2:3]))
    if tokens[:1] == ["run"] and len(tokens) > 1 and not wants_help:
        return argparse.Namespace(command="run", tokens=tokens[1:])
    if tokens[:2] == ["kernel", "install"] and len(tokens) > 2 and not wants_help:
        return argparse.Namespace(command="kernel", kernel_command="install", tokens=tokens[2:])
    return _parser().parse_args(tokens)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        code = run_command(args)
    except CakeError as exc:
        print(f"cake: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()

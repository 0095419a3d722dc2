"""The ``cake`` command: the same sessions and runs as the magics, from a terminal.

    cake status [--all]        sessions, idle time, autostop countdown
    cake targets               named targets and installed backends
    cake runs [--all]          recent runs
    cake logs RUN [-f]         a run's output (from the journal); -f follows a live run
    cake down [SESSION|--all]  stop sessions and release their allocations
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
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--all", action="store_true", help="up to 200 runs instead of 20")
    runs.add_argument("--session", default=None, help="only runs of this session")
    logs = sub.add_parser("logs", help="show a run's output")
    logs.add_argument("run", help="run id (or a unique prefix)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep streaming until the run ends")
    down = sub.add_parser("down", help="stop sessions")
    down.add_argument("session", nargs="?", help="session id or name")
    down.add_argument("--all", action="store_true", help="stop every live session")
    return parser


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
            cake.down(row)
            print(f"session {row.id} ({row.name}) is down")
        if not rows:
            print("no live sessions")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = run_command(args)
    except CakeError as exc:
        print(f"cake: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()

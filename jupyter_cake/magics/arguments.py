"""How ``%cake`` / ``%%cake`` lines are read: the cell's magic_arguments, the split of a line into a
sub-command and its arguments, the flags of ``%cake use``, and the checks on seconds and variable names.

Pure on purpose: nothing here starts a session, prints or touches the notebook's namespace, so every
usage error is raised (as a CakeError that says how to fix it) before any action begins.
"""

from __future__ import annotations

import shlex
from argparse import ArgumentParser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from IPython.core.magic_arguments import argument, magic_arguments

from jupyter_cake.errors import CakeError

USAGE = """``%cake`` / ``%%cake``: the notebook front door.

    %load_ext jupyter_cake
    %cake use local --idle-minutes 30        start or re-attach a session; it becomes the current one
    %%cake [--push a,b] [--pull c] [--detach] [--timeout S] [--target ...]
    %cake push a,b | pull c                  move variables without running a cell
    %cake status | targets | runs | attach RUN | logs RUN | interrupt | down [SESSION] | help
    %cake use <target> --ray                 a Ray cluster in the session; `%cake ray` shows it
"""

HELP = USAGE + """
Targets use SkyPilot's infra syntax (local, slurm/<cluster>/<partition>, k8s/<context>, aws/<region>, ...)
plus --gpus NAME:N --cpus N[+] --memory GB[+] --nodes N --image IMG --env K=V --workdir DIR
--idle-minutes M, or a name from the targets file (`%cake targets` shows where it is).
`%cake use` also takes --name NAME (share a session by name), --new (never re-attach), --timeout S,
--dryrun (show SkyPilot's plan and $/hour instead of launching; same as `%cake plan <target>`).
SkyPilot: clouds always go through it; slurm/ and k8s/ do with --via sky (or via = "sky" in a named
target), and --task task.yaml takes resources, envs, setup, workdir and file_mounts from a SkyPilot task.
"""

# In source order, as they would stand as a decorator stack above the magic (magic_arguments() first).
_CELL_ARGUMENTS = (
    magic_arguments(),
    argument("--target", "-t", default=None, help="run this cell on another target (started if needed)"),
    argument("--push", default=None, help="local variables to send before the cell, e.g. df,model"),
    argument("--pull", default=None, help="remote variables to bring back after the cell"),
    argument("--detach", action="store_true", help="return a run id at once; `%%cake attach RUN` later"),
    argument("--timeout", default=None, help="interrupt the remote cell after this many seconds"),
    argument("--ray", action="store_true", help="run on the session's target with a Ray cluster (RAY_ADDRESS set)"),
)


def cell_arguments(func: Callable[..., Any]) -> Any:
    """The ``%%cake`` options as IPython magic_arguments: gives ``func.parser`` and the help ``%cake?``
    shows. Applied bottom-up, exactly as the same decorators written above ``func`` would be.

    Returns Any, as magic_arguments does: the result carries ``.parser``, which no Callable type has."""
    for decorate in reversed(_CELL_ARGUMENTS):
        func = decorate(func)
    return func


@dataclass(frozen=True)
class CellOptions:
    """A ``%%cake`` line, checked."""

    target: list[str] | None  # the target spec and its resources, when --target was given
    push: list[str]
    pull: list[str]
    detach: bool
    timeout: float | None
    ray: bool


def parse_cell_line(parser: ArgumentParser, line: str) -> CellOptions:
    """Read a ``%%cake`` line with the parser of :func:`cell_arguments`."""
    try:
        # Unknown flags are the target's resources: `%%cake --target local --cpus 4 --push x`.
        args, resources = parser.parse_known_args(shlex.split(line, comments=True))
    except Exception as exc:  # UsageError from argparse, or a shlex quoting error
        raise CakeError(f"%%cake {line}: {exc}. Options: --target, --push, --pull, --detach, --timeout.") from None
    if resources and not args.target:
        raise CakeError(
            f"%%cake got {' '.join(resources)!r}, which only makes sense with a target: "
            f"`%%cake --target <target> {' '.join(resources)}`. Cell options: --push, --pull, --detach, --timeout."
        )
    timeout = seconds(args.timeout, "--timeout") if args.timeout else None
    push, pull = names(args.push, "--push"), names(args.pull, "--pull")
    if args.detach and pull:
        raise CakeError("--pull needs the cell's end, which --detach doesn't wait for. Pull in a later cell.")
    target = [*shlex.split(args.target), *resources] if args.target else None
    return CellOptions(target=target, push=push, pull=pull, detach=args.detach, timeout=timeout, ray=args.ray)


def split_command(line: str) -> tuple[str, list[str]]:
    """``%cake <command> args...``; an empty line asks for help."""
    tokens = shlex.split(line, comments=True)
    return (tokens[0], tokens[1:]) if tokens else ("help", [])


def split_use_flags(tokens: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
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
        flags["timeout"] = seconds(flags["timeout"], "--timeout")
    return rest, flags


def variable_names(args: Sequence[str], command: str, missing: str) -> list[str]:
    """The variables of `%cake push` / `%cake pull` (space- or comma-separated); ``missing`` is the
    error when there are none."""
    found = names(",".join(args), f"%cake {command}")
    if not found:
        raise CakeError(missing)
    return found


def seconds(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise CakeError(f"{flag} takes a number of seconds greater than 0, not {text!r}.")
    return value


def names(text: str | None, flag: str) -> list[str]:
    if not text:
        return []
    found = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in found if not n.isidentifier()]
    if bad:
        raise CakeError(f"{flag} takes comma-separated variable names; {', '.join(map(repr, bad))} is not one.")
    return found

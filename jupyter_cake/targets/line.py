"""The target line: ``slurm/hpc/gpu --gpus A100:1 --cpus 8+`` (or a named target plus overrides) to a Target.

``_tokenize`` and ``_scan`` split the text into flags, ``_line_fields`` parses their values, and
``_parse_target`` puts them over a named target or an infra. ``parse_target`` takes named targets from
the caller; ``resolve_target`` reads them from the user's ``targets.toml``. This is the top of the
package: it is the only module that uses both the flags and the named targets file.
"""

from __future__ import annotations

import pathlib
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from jupyter_cake.targets.config import _named_fields, config_path, load_named_targets
from jupyter_cake.targets.errors import TargetError, _closest
from jupyter_cake.targets.fields import _as_tuples, _parse_field
from jupyter_cake.targets.infra import _parse_infra
from jupyter_cake.targets.pairs import _parse_pair
from jupyter_cake.targets.target import Target

# Flag -> Target field. "--option K=V" is how canonical() spells backend
# options so that targets from named entries still round-trip.
_LINE_OPTIONS: dict[str, str] = {
    "--infra": "infra",
    "--gpus": "gpus",
    "--cpus": "cpus",
    "--memory": "memory",
    "--nodes": "nodes",
    "--image": "image",
    "--env": "env",
    "--workdir": "workdir",
    "--idle-minutes": "idle_minutes",
    "--option": "options",
    "--via": "via",
    "--task": "task",
    "--disk": "disk",
    "--ray": "ray",
    "--spot": "spot",
}
# Flags that take no value: present means true.
_SWITCHES = ("--ray", "--spot")
_REPEATABLE = ("--env", "--option")
_EXAMPLES: dict[str, str] = {
    "--infra": "slurm/hpc/gpu", "--gpus": "A100:1", "--cpus": "8+", "--memory": "32",
    "--nodes": "2", "--image": "python:3.12-slim", "--env": "HF_HOME=/scratch/hf",
    "--workdir": "/scratch/me", "--idle-minutes": "30", "--option": "account=proj42",
    "--via": "sky", "--task": "task.yaml", "--disk": "100",
}


def _tokenize(args: str | Sequence[str]) -> list[str]:
    if isinstance(args, str):
        try:
            return shlex.split(args)
        except ValueError as exc:  # shlex: "No closing quotation" / "No escaped character"
            raise TargetError(
                f"Could not read the target line {args!r}: {str(exc).lower()}. "
                "Close every quote, or escape a lone quote with a backslash."
            ) from None
    tokens = list(args)
    if not all(isinstance(t, str) for t in tokens):
        raise TargetError(f"Target arguments must all be text, got {tokens!r}. Pass a string or a list of strings.")
    return tokens


def _scan(tokens: Sequence[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Split option tokens into single-valued flags and repeatable ones."""
    singles: dict[str, str] = {}
    repeats: dict[str, list[str]] = {flag: [] for flag in _REPEATABLE}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-"):
            raise TargetError(
                f"Unexpected argument {token!r}: only the first argument can be a target or infra. "
                "Pass everything else as an option, like --gpus A100:1."
            )
        flag, eq, value = token.partition("=")
        if flag not in _LINE_OPTIONS:
            raise _unknown_option(flag)
        if flag in _SWITCHES and not eq:
            value = "true"
        elif not eq:
            if i >= len(tokens) or tokens[i].startswith("--"):
                raise TargetError(f"Option {flag} needs a value. Write it like {flag} {_EXAMPLES[flag]}.")
            value = tokens[i]
            i += 1
        if flag in repeats:
            repeats[flag].append(value)
        elif flag in singles:
            raise TargetError(
                f"Option {flag} was given twice ({singles[flag]!r} and {value!r}). Give it only once."
            )
        else:
            singles[flag] = value
    return singles, repeats


def _unknown_option(flag: str) -> TargetError:
    close = _closest(flag, list(_LINE_OPTIONS))
    hint = f" Did you mean {close}?" if close else ""
    return TargetError(f"Unknown option {flag!r}.{hint} Valid options: {', '.join(_LINE_OPTIONS)}.")


def _line_fields(singles: Mapping[str, str], repeats: Mapping[str, list[str]]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        _LINE_OPTIONS[flag]: _parse_field(_LINE_OPTIONS[flag], value, flag)
        for flag, value in singles.items()
        if flag != "--infra"
    }
    # Later --env K=... wins over an earlier one, as with `docker run -e`.
    fields["env"] = dict(_parse_pair(item, "--env") for item in repeats["--env"])
    fields["options"] = dict(_parse_pair(item, "--option") for item in repeats["--option"])
    return fields


def parse_target(
    args: str | Sequence[str],
    named: Mapping[str, Mapping[str, object]] | None = None,
) -> Target:
    """Parse a target line like ``slurm/hpc/gpu --gpus A100:1 --cpus 8+``."""
    return _parse_target(args, named or {}, None)


def _parse_target(
    args: str | Sequence[str],
    named: Mapping[str, Mapping[str, object]],
    source: pathlib.Path | None,
) -> Target:
    tokens = _tokenize(args)
    positional = tokens[0] if tokens and not tokens[0].startswith("-") else None
    singles, repeats = _scan(tokens[1:] if positional is not None else tokens)
    if positional is not None and "--infra" in singles:
        raise TargetError(
            f"The infra was given twice ({positional!r} and --infra {singles['--infra']!r}). Give it only once."
        )
    spec = positional if positional is not None else singles.get("--infra")
    line = _line_fields(singles, repeats)

    # A named target wins over an infra of the same spelling: the user made it.
    if spec is not None and spec in named:
        fields = _named_fields(spec, named[spec], source)
        fields["name"] = spec
    else:
        if spec is None and "--task" in singles:
            # `--task task.yaml` alone: the task's own resources say where (read lazily: pyyaml).
            from jupyter_cake.targets.taskfile import task_infra

            spec = task_infra(singles["--task"])
        infra = "local" if spec is None else _parse_infra(spec, list(named))
        fields = {"infra": infra, "env": {}, "options": {}}

    for key, value in line.items():
        if key in ("env", "options"):
            fields[key] = {**fields[key], **value}  # merge; the line wins per key
        else:
            fields[key] = value
    return Target(**_as_tuples(fields))


def resolve_target(args: str | Sequence[str]) -> Target:
    """Parse a target line against the user's named targets file."""
    path = config_path()
    return _parse_target(args, load_named_targets(path), path)

"""The sbatch script of a Cake session, generated from a template with every user value validated
or quoted.

Two kinds of values reach the script and each has one rule:
- ``#SBATCH`` directives are read by sbatch, not by a shell, but a newline would start a new line of
  script: their values must match a strict pattern (or, for free-form extra options, contain no line
  break), else the target is refused with a message saying which value and why.
- Environment values (``--env``, often tokens) never appear in the script, which Slurm keeps and shows
  (``scontrol write batch_script``, the session's job.sbatch): ``env_upload`` writes them over the SSH
  channel, before sbatch, into a 0600 file in the session directory, as ``export`` lines quoted with
  ``shlex.quote`` (so they reach the kernel verbatim, whatever they contain), and the script sources that
  file first, so ``setup`` commands and the nanny's first line already see them.
The only unquoted shell text is the target's ``setup`` option, which is shell by definition and comes
from the user's own targets file.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field

from jupyter_cake import addons
from jupyter_cake.addons import NodePlan
from jupyter_cake.backends.shipping import nanny_archive as shipped_nanny
from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Quantity, Target

REMOTE_HOME = ".cache/jupyter-cake"  # relative to the login directory (the user's home)
ENV_FILE = "env.sh"  # in the remote session directory, 0600: the target's --env values as export lines

# Matched with fullmatch, never match + '$': '$' also matches before a trailing newline, so "gpu\n"
# would pass and its newline would end the #SBATCH line. ASCII: Slurm's names are plain ASCII.
_SAFE = {
    "partition": re.compile(r"[A-Za-z0-9_.,-]+", re.ASCII),
    "account": re.compile(r"[A-Za-z0-9_.-]+", re.ASCII),
    "qos": re.compile(r"[A-Za-z0-9_.-]+", re.ASCII),
    "time": re.compile(r"[0-9][0-9:-]*", re.ASCII),
    "constraint": re.compile(r"[A-Za-z0-9_.&|,\[\]*()-]+", re.ASCII),
}
# What each pattern allows, in words, for the message that refuses a value.
_ALLOWED = {
    "partition": "letters, digits and _.,-",
    "account": "letters, digits and _.-",
    "qos": "letters, digits and _.-",
    "time": "a Slurm time limit of digits, ':' and '-', like 08:00:00 or 1-00:00:00",
    "constraint": "letters, digits and _.&|,[]*()-",
}


@dataclass(frozen=True)
class JobSpec:
    session_id: str
    python: str = "python3"
    partition: str | None = None
    gres: str | None = None
    cpus: int | None = None
    mem_mb: int | None = None
    nodes: int = 1
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    setup: str | None = None
    idle_minutes: float = 0.0
    workdir: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    plan: NodePlan = field(default_factory=NodePlan)  # what the target's add-ons (e.g. --ray) add

    @property
    def session_dir(self) -> str:
        """Where the nanny keeps its files, relative to the remote home (journal survives the job)."""
        return f"{REMOTE_HOME}/sessions/{self.session_id}"


def _checked(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not _SAFE[name].fullmatch(value):
        raise CakeError(
            f"The Slurm {name} {value!r} contains characters Slurm doesn't allow there (allowed: {_ALLOWED[name]}). "
            f"Fix the target's {name}."
        )
    return value


def _whole_cpus(cpus: Quantity | None) -> int | None:
    """Slurm's --cpus-per-task is a whole number: a fraction is refused, not silently rounded (2.5 used
    to become 2, and 0.5 became 0, which dropped the request altogether)."""
    if cpus is None:
        return None
    if cpus.value.is_integer():
        return int(cpus.value)
    more = "+" if cpus.or_more else ""
    up, down = math.ceil(cpus.value), math.floor(cpus.value)
    choices = f"--cpus {up}{more}" + (f" (or {down}{more})" if down >= 1 else "")
    raise CakeError(f"--cpus {cpus}: Slurm allocates whole CPUs; use {choices}.")


def _memory_mib(memory: Quantity | None) -> int | None:
    """--memory is in GB (GiB, as everywhere in Cake); Slurm's --mem takes whole MiB. A fraction of a
    MiB is rounded up, so the job gets at least what was asked for; under 1 MiB is refused (it used to
    round down to 0, which dropped the request altogether)."""
    if memory is None:
        return None
    mib = memory.value * 1024
    if abs(mib - round(mib)) < 1e-6:  # float noise such as 1.1 * 1024: not a real fraction of a MiB
        mib = round(mib)
    if mib < 1:
        raise CakeError(
            f"--memory {memory}: that is {mib:.2g} MiB, and Slurm's smallest memory request is 1 MiB. "
            "--memory is in GB: ask for more, e.g. --memory 1 for 1 GB."
        )
    return math.ceil(mib)


def _extra_options(text: str | None) -> tuple[str, ...]:
    """Free-form sbatch options from the targets file: a JSON list of strings, or one string."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        value = [text]
    options = [value] if isinstance(value, str) else value
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise CakeError(f"sbatch options must be a list of strings, e.g. sbatch = [\"--exclusive\"], not {text!r}.")
    for option in options:
        if "\n" in option or "\r" in option or not option.startswith("-"):
            raise CakeError(f"The sbatch option {option!r} must be one line starting with '-', e.g. \"--exclusive\".")
    return tuple(options)


def job_spec(target: Target, session_id: str, idle_minutes: float) -> JobSpec:
    options = target.options_dict()
    parts = target.infra_parts
    gres = None
    if target.gpus is not None:
        gres = f"gpu:{target.gpus.name}:{target.gpus.count}" if target.gpus.name else f"gpu:{target.gpus.count}"
    return JobSpec(
        session_id=session_id,
        python=options.get("python", "python3"),
        partition=_checked("partition", parts[2] if len(parts) > 2 else options.get("partition")),
        gres=gres,
        cpus=_whole_cpus(target.cpus),
        mem_mb=_memory_mib(target.memory),
        nodes=target.nodes,
        time=_checked("time", options.get("time")),
        account=_checked("account", options.get("account")),
        qos=_checked("qos", options.get("qos")),
        constraint=_checked("constraint", options.get("constraint")),
        extra=_extra_options(options.get("sbatch")),
        env=target.env,
        setup=options.get("setup"),
        idle_minutes=idle_minutes,
        workdir=target.workdir,
        plan=addons.node_plan(target),
    )


def env_upload(spec: JobSpec) -> tuple[list[str], bytes] | None:
    """(argv, stdin) that writes the session's env file on the login node, or None without --env. The
    values travel on stdin (never argv: `ps` shows that); umask 077 makes the file 0600 and any directory
    it creates 0700, and the file is written under a temporary name and renamed, so a job never sources
    half of it."""
    if not spec.env:
        return None
    q = shlex.quote
    text = "".join(f"export {key}={q(value)}\n" for key, value in spec.env)
    write = 'umask 077 && mkdir -p "$1" && cat > "$1/.$2.tmp" && mv -f "$1/.$2.tmp" "$1/$2"'
    return ["sh", "-c", write, "sh", spec.session_dir, ENV_FILE], text.encode()


def nanny_archive() -> tuple[str, str]:
    """The nanny plus the add-ons' node-side modules (a Ray head starts beside the nanny); see shipping."""
    return shipped_nanny("shipped to the node by the Slurm backend", addons.node_files())


def job_name(session_id: str) -> str:
    """The Slurm job name of a session: how a job whose id was never learned (a killed start) is found."""
    return f"cake-{session_id}"


def render(spec: JobSpec, archive: str, archive_hash: str) -> str:
    q = shlex.quote
    directives = [
        f"--job-name={job_name(spec.session_id)}",
        f"--output={spec.session_dir}/slurm-%j.out",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
    ]
    if spec.partition:
        directives.append(f"--partition={spec.partition}")
    if spec.cpus:
        directives.append(f"--cpus-per-task={spec.cpus}")
    if spec.mem_mb:
        directives.append(f"--mem={spec.mem_mb}M")
    if spec.gres:
        directives.append(f"--gres={spec.gres}")
    for name in ("time", "account", "qos", "constraint"):
        value = getattr(spec, name)
        if value:
            directives.append(f"--{name}={value}")
    directives.extend(spec.extra)
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), ""]
    lines.append("# Cake session " + spec.session_id + ": starts the nanny (which starts the kernel) in this allocation.")
    lines.append("set -u")
    if spec.env:
        # Only the names here: the values are in a 0600 file Cake wrote before submitting (env_upload).
        env_path = f"\"$HOME\"/{q(spec.session_dir + '/' + ENV_FILE)}"
        lines.append(f"# Environment from the target ({', '.join(key for key, _ in spec.env)}): values in {ENV_FILE}, never here.")
        lines.append(f'. {env_path} || {{ echo "cake-error: cannot read {ENV_FILE} (the --env values) in the session directory" >&2; exit 3; }}')
    if spec.setup:
        lines.append("# Site setup from the target's `setup` option (shell, from your targets file).")
        lines.append(spec.setup)
    lines += [
        f"CAKE_HOME=\"$HOME\"/{q(REMOTE_HOME)}",
        f"SESSION_DIR=\"$HOME\"/{q(spec.session_dir)}",
        f"NANNY=\"$CAKE_HOME/nanny-{archive_hash}\"",
        f"PYTHON={q(spec.python)}",
        'fail() { echo "cake-error: $*" >&2; exit 3; }',
        'command -v "$PYTHON" >/dev/null 2>&1 || fail "no $PYTHON on $(hostname); set the target option python = \\"/path/to/python3\\" or a setup command such as \\"module load python\\""',
        '"$PYTHON" -c "import ipykernel, cloudpickle" 2>/dev/null || fail "$PYTHON on $(hostname) lacks ipykernel or cloudpickle; install them with: $PYTHON -m pip install --user ipykernel cloudpickle"',
        'if [ ! -d "$NANNY" ]; then',
        '  mkdir -p "$CAKE_HOME" && tmp=$(mktemp -d "$CAKE_HOME/.nanny.XXXXXX") || fail "cannot write to $CAKE_HOME"',
        "  base64 -d > \"$tmp/nanny.tgz\" <<'CAKE_NANNY_ARCHIVE'",
        *(archive[i : i + 76] for i in range(0, len(archive), 76)),
        "CAKE_NANNY_ARCHIVE",
        '  tar -xzf "$tmp/nanny.tgz" -C "$tmp" && rm -f "$tmp/nanny.tgz"',
        '  mv -T "$tmp" "$NANNY" 2>/dev/null || rm -rf "$tmp"  # another job may have unpacked it first',
        "fi",
    ]
    workdir = f"--workdir {q(spec.workdir)} " if spec.workdir else ""
    services = "".join(f" {q(arg)}" for arg in spec.plan.nanny_args())  # e.g. the Ray head's spec (JSON)
    lines += spec.plan.batch.lines
    lines += [
        "# srun: the nanny runs as a job step, bound to the allocation's CPUs and GPUs.",
        f"exec srun --ntasks=1 --nodes=1 {spec.plan.batch.nanny_step}--kill-on-bad-exit=1 \\",
        '  env CAKE_NANNY_ROOT="$NANNY" PYTHONPATH="$NANNY${PYTHONPATH:+:$PYTHONPATH}" \\',
        f'  "$PYTHON" -m jupyter_cake.nanny --session-dir "$SESSION_DIR" --idle-minutes {spec.idle_minutes:g} {workdir}\\',
        '  --release-command "[\\"scancel\\", \\"$SLURM_JOB_ID\\"]"' + services,
        "",
    ]
    return "\n".join(lines)

"""Targets: where a cell runs and with which resources.

A target is typed by the user on a magic line such as::

    %cake use slurm/hpc/gpu --gpus A100:1 --cpus 8+ --memory 32 --env HF_HOME=/scratch/hf

or named in ``targets.toml`` and referred to by name.  This module turns that
text into an immutable, validated :class:`Target`.  Everything here is
stdlib-only on purpose: it is imported by the kernel extension on every start,
so it must stay cheap and must never pull in a backend SDK.

Every problem is reported as a :class:`TargetError` whose message says what
was wrong and how to fix it, because these messages are shown verbatim in a
notebook cell, not in a log.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import pathlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_cake.errors import CakeError

__all__ = [
    "TargetError",
    "Gpus",
    "Quantity",
    "Target",
    "parse_gpus",
    "parse_quantity",
    "parse_infra",
    "parse_target",
    "config_path",
    "load_named_targets",
    "resolve_target",
]


class TargetError(CakeError, ValueError):
    """A user-facing problem with a target; the message explains the fix."""


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

# SkyPilot's cloud names, as they appear as the first infra segment.
CLOUDS: tuple[str, ...] = (
    "aws", "gcp", "azure", "lambda", "runpod", "oci", "ibm", "scp", "cudo",
    "fluidstack", "paperspace", "do", "nebius", "vast", "hyperbolic", "vsphere",
    "seeweb", "primeintellect", "shadeform", "coreweave",
)
_KINDS: tuple[str, ...] = ("local", "slurm", "k8s", "ssh", *CLOUDS)
# "kubernetes" is accepted on input but stored as "k8s" so equal requests
# compare equal.
_KIND_ALIASES: dict[str, str] = {"kubernetes": "k8s"}
_INFRA_FORMS = (
    "local, slurm/<cluster>[/<partition>], k8s[/<context>], ssh/<pool> or "
    "<cloud>[/<region>[/<zone>]]"
)

MAX_GPUS = 1024
MAX_NODES = 4096

# Plain ASCII sets: these strings end up in scheduler flags and file names.
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
# Kubernetes contexts are often ARNs ("arn:aws:eks:...:cluster/name").
_CONTEXT_RE = re.compile(r"[A-Za-z0-9._:@-]+(?:/[A-Za-z0-9._:@-]+)*", re.ASCII)
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_OPTION_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*", re.ASCII)
_COUNT_RE = re.compile(r"[0-9]+", re.ASCII)
# Exponents are allowed so that repr() of any float we print parses back.
_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

_GPUS_FIX = "Use NAME:COUNT like A100:2, NAME like A100 for one GPU, or COUNT like 2 for any GPU type."
_QUANTITY_FIX = {
    "cpus": "Use a positive number of CPUs like 8, or 8+ for at least 8.",
    "memory": "Use a positive number of GB like 32, or 32+ for at least 32 GB.",
}


def _format_number(value: float) -> str:
    """Shortest text for a number that float() reads back exactly."""
    value = float(value)  # callers may hand in an int (e.g. Quantity(8))
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _field_error(label: str, value: object, why: str, fix: str) -> TargetError:
    # One shape for every field so messages read the same everywhere.
    return TargetError(f"Invalid {label} value {value!r}: {why}. {fix}")


def _closest(word: str, choices: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


# --------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpus:
    """A GPU request; ``name`` None means any GPU type."""

    name: str | None
    count: int

    def __str__(self) -> str:
        return f"{self.name}:{self.count}" if self.name else str(self.count)


@dataclass(frozen=True)
class Quantity:
    """A CPU or memory (GB) amount; ``or_more`` means "at least"."""

    value: float
    or_more: bool = False

    def __post_init__(self) -> None:
        # Quantity(8) and Quantity(8.0) must serialise identically.
        object.__setattr__(self, "value", float(self.value))

    def __str__(self) -> str:
        return _format_number(self.value) + ("+" if self.or_more else "")


def parse_gpus(text: str) -> Gpus:
    """Parse ``A100:2``, ``A100`` (one GPU) or ``2`` (any type)."""
    return _parse_gpus(text, "--gpus")


def _parse_gpus(text: object, label: str) -> Gpus:
    if not isinstance(text, str):
        raise _field_error(label, text, "it is not a number or text", _GPUS_FIX)
    raw = text.strip()
    if not raw:
        raise _field_error(label, text, "no GPU was given", _GPUS_FIX)
    parts = raw.split(":")
    if len(parts) > 2:
        raise _field_error(label, text, "it has more than one ':'", _GPUS_FIX)
    if len(parts) == 1:
        # A bare number is a count of any GPU type, anything else a type name.
        if _COUNT_RE.fullmatch(raw):
            return _make_gpus(None, raw, text, label)
        return _make_gpus(raw, "1", text, label)
    return _make_gpus(parts[0], parts[1], text, label)


def _make_gpus(name: str | None, count_text: str, text: str, label: str) -> Gpus:
    if name is not None and not _NAME_RE.fullmatch(name):
        why = "the GPU name is missing" if not name else "the GPU name may only use letters, digits, '.', '_' and '-'"
        raise _field_error(label, text, why, _GPUS_FIX)
    if not _COUNT_RE.fullmatch(count_text):
        raise _field_error(label, text, "the GPU count must be a whole number", _GPUS_FIX)
    count = int(count_text)
    if not 1 <= count <= MAX_GPUS:
        raise _field_error(label, text, f"the GPU count must be between 1 and {MAX_GPUS}", _GPUS_FIX)
    return Gpus(name, count)


def parse_quantity(text: str, what: str) -> Quantity:
    """Parse ``8`` or ``8+``; ``what`` is ``"cpus"`` or ``"memory"`` (GB)."""
    what = what.lstrip("-")
    return _parse_quantity(text, what, f"--{what}")


def _parse_quantity(text: object, what: str, label: str) -> Quantity:
    fix = _QUANTITY_FIX.get(what, "Use a positive number like 8, or 8+ for at least 8.")
    if not isinstance(text, str):
        raise _field_error(label, text, "it is not a number or text", fix)
    raw = text.strip()
    or_more = raw.endswith("+")
    number = raw[:-1].strip() if or_more else raw
    if not _NUMBER_RE.fullmatch(number):
        raise _field_error(label, text, "it is not a positive number", fix)
    value = float(number)
    # "1e999" matches the pattern but overflows to inf.
    if not math.isfinite(value) or value <= 0:
        raise _field_error(label, text, "it must be greater than 0", fix)
    return Quantity(value, or_more)


def _parse_nodes(value: object, label: str) -> int:
    fix = f"Use a whole number of nodes from 1 to {MAX_NODES}, like 2."
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and _COUNT_RE.fullmatch(value.strip()):
        count = int(value.strip())
    else:
        raise _field_error(label, value, "it is not a whole number", fix)
    if not 1 <= count <= MAX_NODES:
        raise _field_error(label, value, f"it must be between 1 and {MAX_NODES}", fix)
    return count


def _parse_minutes(value: object, label: str) -> float:
    fix = "Use a positive number of minutes like 30 (fractions such as 0.5 are fine)."
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        minutes = float(value)
    elif isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        minutes = float(value.strip())
    else:
        raise _field_error(label, value, "it is not a positive number", fix)
    if not math.isfinite(minutes) or minutes <= 0:
        raise _field_error(label, value, "it must be greater than 0", fix)
    return minutes


def _parse_flag(value: object, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise _field_error(label, value, "it is not true or false", "Write true or false (on the command line: just the flag).")


# How a target reaches its infra: "direct" uses Cake's own backend for slurm/ and k8s/ infra;
# "sky" provisions through SkyPilot. Clouds exist only through SkyPilot.
VIA_CHOICES = ("direct", "sky")


def _parse_via(value: object, label: str) -> str:
    if isinstance(value, str) and value.strip() in VIA_CHOICES:
        return value.strip()
    raise _field_error(
        label, value, f"it must be one of {', '.join(VIA_CHOICES)}",
        "Use --via sky to provision through SkyPilot, or --via direct for Cake's own Slurm/Kubernetes backend.",
    )


def _parse_disk(value: object, label: str) -> int:
    fix = "Give the disk size in GB as a whole number, like 100."
    text = _number_text(value)
    if not isinstance(text, str) or not _COUNT_RE.fullmatch(text.strip()) or int(text) < 1:
        raise _field_error(label, value, "it is not a whole number of GB", fix)
    return int(text)


def _parse_text(value: object, label: str, example: str) -> str:
    # Stored verbatim: backends pass it as one argv item, never through a shell.
    if not isinstance(value, str) or not value.strip():
        raise _field_error(label, value, "it must be non-empty text", f"Give something like {example}.")
    return value


def _number_text(value: object) -> object:
    """TOML and JSON give numbers; the text parsers expect their text form."""
    if isinstance(value, bool):
        return value  # left as is so the parser rejects it
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return _format_number(value)
    return value


# --------------------------------------------------------------------------
# Infra
# --------------------------------------------------------------------------


def parse_infra(text: str) -> str:
    """Validate an infra string and return its canonical spelling."""
    return _parse_infra(text, ())


def _parse_infra(text: object, named: Sequence[str]) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TargetError(f"Invalid infra {text!r}: it must be non-empty text. Use {_INFRA_FORMS}.")
    raw = text.strip()
    head, sep, rest = raw.partition("/")
    kind = head.lower()
    kind = _KIND_ALIASES.get(kind, kind)
    parts = rest.split("/") if sep else []
    if kind == "local":
        return _infra_local(raw, parts)
    if kind == "slurm":
        return _infra_segments(raw, kind, parts, ("cluster", "partition"), 1, "slurm/hpc/gpu")
    if kind == "ssh":
        return _infra_segments(raw, kind, parts, ("pool",), 1, "ssh/my-pool")
    if kind == "k8s":
        return _infra_k8s(raw, rest if sep else None)
    if kind in CLOUDS:
        # Cloud regions and zones are lowercase in every SkyPilot cloud.
        lowered = [p.lower() for p in parts]
        return _infra_segments(raw, kind, lowered, ("region", "zone"), 0, "aws/us-east-1")
    raise _unknown_infra(raw, head, sep + rest, named)


def _infra_local(raw: str, parts: list[str]) -> str:
    if parts:
        raise TargetError(f"Invalid infra {raw!r}: local takes no cluster or region. Use just local.")
    return "local"


def _infra_segments(
    raw: str, kind: str, parts: list[str], labels: tuple[str, ...], required: int, example: str
) -> str:
    if not required <= len(parts) <= len(labels):
        # Optional segments nest, as in SkyPilot's docs: aws[/<region>[/<zone>]].
        optional = labels[required:]
        form = kind + "".join(f"/<{label}>" for label in labels[:required])
        form += "".join(f"[/<{label}>" for label in optional) + "]" * len(optional)
        raise TargetError(f"Invalid infra {raw!r}: expected {form}. Use something like {example}.")
    for label, part in zip(labels, parts):
        if not _NAME_RE.fullmatch(part):
            raise TargetError(
                f"Invalid {label} {part!r} in infra {raw!r}: use only letters, digits, '.', '_' "
                f"and '-', like {example}."
            )
    return "/".join((kind, *parts))


def _infra_k8s(raw: str, context: str | None) -> str:
    if context is None:
        return "k8s"
    if not _CONTEXT_RE.fullmatch(context):
        raise TargetError(
            f"Invalid Kubernetes context {context!r} in infra {raw!r}: use a context name from "
            "`kubectl config get-contexts`, like k8s/my-context."
        )
    return f"k8s/{context}"


def _unknown_infra(raw: str, head: str, tail: str, named: Sequence[str]) -> TargetError:
    # Prefer a close named target (whole text), else fix only the first segment.
    suggestion = _closest(raw, named) if named else None
    if suggestion is None:
        kind = _closest(head.lower(), [*_KINDS, *_KIND_ALIASES])
        suggestion = kind + tail if kind else None
    what = "infra or named target" if named else "infra"
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    names = f"; named targets: {', '.join(sorted(named))}" if named else ""
    return TargetError(
        f"Unknown {what} {raw!r}.{hint} Use {_INFRA_FORMS}, where <cloud> is one of "
        f"{', '.join(CLOUDS)}{names}."
    )


# --------------------------------------------------------------------------
# Key=value collections (env, backend options)
# --------------------------------------------------------------------------


def _parse_pair(text: str, label: str) -> tuple[str, str]:
    """Split ``K=V`` from the command line; V may contain anything, even '='."""
    key, eq, value = text.partition("=")
    if not eq:
        raise TargetError(
            f"{label} expects KEY=VALUE but got {text!r}. Use {label} {text}=VALUE "
            f"(or {text}= for an empty value)."
        )
    return _check_key(key, label), value


def _check_key(key: object, label: str) -> str:
    # Env names must be valid shell variable names; option names may also use
    # '.' and '-' (e.g. "gres-flags") but never '=' or spaces, so --option K=V
    # in canonical() splits back unambiguously.
    is_env = label.endswith("env")
    pattern = _ENV_KEY_RE if is_env else _OPTION_KEY_RE
    if not isinstance(key, str) or not pattern.fullmatch(key):
        allowed = "letters, digits and '_'" if is_env else "letters, digits, '_', '.' and '-'"
        example = "HF_HOME" if is_env else "account"
        raise TargetError(
            f"Invalid {label} name {key!r}: a name must start with a letter or '_' and use only "
            f"{allowed}. Rename it, e.g. {example}."
        )
    return key


def _scalar_text(value: object, label: str, key: str) -> str:
    """Values from TOML or JSON may be numbers or booleans; store them as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_number(value) if math.isfinite(value) else str(value)
    raise TargetError(
        f"Invalid {label} value for {key!r}: {value!r} is not text or a number. Quote it as a string."
    )


def _option_text(value: object) -> str:
    # Backend options are free-form; structured TOML values become JSON text.
    if isinstance(value, (str, bool, int, float)):
        return _scalar_text(value, "option", "")
    return json.dumps(value, default=str, sort_keys=True)


def _parse_mapping(value: object, label: str, strict_values: bool = True) -> dict[str, str]:
    """Validate an env/options table from TOML or from_dict."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in value
    ):
        items = [(p[0], p[1]) for p in value]
    else:
        raise TargetError(f"Invalid {label} value {value!r}: it must be a table. Write it like {{ HF_HOME = \"/scratch/hf\" }}.")
    result: dict[str, str] = {}
    for key, item in items:
        key = _check_key(key, label)
        result[key] = _scalar_text(item, label, key) if strict_values else _option_text(item)
    return result


# --------------------------------------------------------------------------
# Target
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where code runs plus the resources it asked for; immutable and hashable."""

    infra: str
    name: str | None = None
    gpus: Gpus | None = None
    cpus: Quantity | None = None
    memory: Quantity | None = None
    nodes: int = 1
    image: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    idle_minutes: float | None = None
    options: tuple[tuple[str, str], ...] = ()
    via: str | None = None  # "sky" or "direct"; None: the infra's default (see backend_name)
    task: str | None = None  # a SkyPilot task YAML (resources, envs, setup, workdir, file_mounts)
    ray: bool = False  # start a Ray cluster in the allocation and point RAY_ADDRESS at it
    spot: bool = False  # spot/preemptible instances, where the infra has them (SkyPilot)
    disk: int | None = None  # boot disk in GB (SkyPilot)

    def __post_init__(self) -> None:
        # Sorting here makes equality and canonical() independent of the order
        # the user (or a caller building a Target directly) listed things in.
        object.__setattr__(self, "env", tuple(sorted((str(k), str(v)) for k, v in self.env)))
        object.__setattr__(self, "options", tuple(sorted((str(k), str(v)) for k, v in self.options)))
        cloud = self.cloud
        if cloud == "local" and (self.via == "sky" or self.task is not None):
            raise TargetError(
                "The local target runs on this machine and never goes through SkyPilot. "
                "Drop --via sky / --task, or name an infra SkyPilot can launch (aws, k8s/<context>, slurm/<cluster>)."
            )
        if self.via == "direct" and cloud not in ("local", "slurm", "k8s"):
            raise TargetError(
                f"Cake has no direct backend for {cloud!r}: clouds are reached through SkyPilot. "
                "Drop --via direct (or write --via sky)."
            )
        if self.via == "direct" and self.task is not None:
            raise TargetError("A SkyPilot task file (--task) needs SkyPilot; drop --via direct.")

    @property
    def infra_parts(self) -> tuple[str, ...]:
        # A k8s context may itself contain '/', so it stays one part.
        if self.infra.startswith("k8s/"):
            return tuple(self.infra.split("/", 1))
        return tuple(self.infra.split("/"))

    @property
    def cloud(self) -> str:
        return self.infra_parts[0]

    @property
    def backend_name(self) -> str:
        """Which backend serves this target. slurm/ and k8s/ go direct unless ``via = "sky"`` (or a
        SkyPilot task file) asks for SkyPilot; every cloud and ssh node pool goes through SkyPilot."""
        kind = self.cloud
        if kind == "local":
            return "local"
        if self.via == "sky" or self.task is not None:
            return "sky"
        if kind in ("slurm", "k8s"):
            return "slurm" if kind == "slurm" else "kubernetes"
        return "sky"

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def options_dict(self) -> dict[str, str]:
        return dict(self.options)

    def canonical(self) -> str:
        """Text that parse_target() turns back into this target (minus name)."""
        tokens = [self.infra]
        for flag, resource in (
            ("--gpus", self.gpus), ("--cpus", self.cpus), ("--memory", self.memory),
        ):
            if resource is not None:
                tokens += [flag, str(resource)]
        if self.nodes != 1:
            tokens += ["--nodes", str(self.nodes)]
        if self.image is not None:
            tokens += ["--image", self.image]
        for key, value in self.env:
            tokens += ["--env", f"{key}={value}"]
        if self.workdir is not None:
            tokens += ["--workdir", self.workdir]
        if self.idle_minutes is not None:
            tokens += ["--idle-minutes", _format_number(self.idle_minutes)]
        for key, value in self.options:
            tokens += ["--option", f"{key}={value}"]
        for flag, text in (("--via", self.via), ("--task", self.task), ("--disk", self.disk)):
            if text is not None:
                tokens += [flag, str(text)]
        tokens += [flag for flag, on in (("--ray", self.ray), ("--spot", self.spot)) if on]
        return " ".join(shlex.quote(token) for token in tokens)

    def to_dict(self) -> dict[str, object]:
        return {
            "infra": self.infra,
            "name": self.name,
            "gpus": None if self.gpus is None else {"name": self.gpus.name, "count": self.gpus.count},
            "cpus": _quantity_dict(self.cpus),
            "memory": _quantity_dict(self.memory),
            "nodes": self.nodes,
            "image": self.image,
            "env": dict(self.env),
            "workdir": self.workdir,
            "idle_minutes": self.idle_minutes,
            "options": dict(self.options),
            "via": self.via,
            "task": self.task,
            "ray": self.ray,
            "spot": self.spot,
            "disk": self.disk,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Target:
        """Rebuild (and re-validate) a target saved with to_dict().

        Unknown keys are ignored so state written by a newer Cake still loads.
        """
        if not isinstance(d, Mapping):
            raise TargetError(f"A saved target must be a mapping, not {type(d).__name__}. Re-create it with %cake use.")
        fields: dict[str, Any] = {"infra": _parse_infra(d.get("infra", "local"), ())}
        name = d.get("name")
        if name is not None and not isinstance(name, str):
            raise _field_error("name", name, "it must be text", "Use the name of a target from targets.toml.")
        fields["name"] = name
        for key in _FIELD_PARSERS:
            if key != "infra" and d.get(key) is not None:
                fields[key] = _parse_field(key, d[key], key)
        if d.get("options") is not None:
            fields["options"] = _parse_mapping(d["options"], "option", strict_values=False)
        return cls(**_as_tuples(fields))

    def describe(self) -> str:
        """Short label for status tables, e.g. ``slurm/hpc/gpu · A100:1 · 8+ CPU``."""
        parts = [self.infra if self.name is None else f"{self.name} ({self.infra})"]
        if self.gpus is not None:
            parts.append(str(self.gpus) if self.gpus.name else f"{self.gpus.count} GPU")
        if self.cpus is not None:
            parts.append(f"{self.cpus} CPU")
        if self.memory is not None:
            parts.append(f"{self.memory} GB")
        if self.nodes != 1:
            parts.append(f"{self.nodes} nodes")
        return " · ".join(parts)


def _quantity_dict(q: Quantity | None) -> dict[str, object] | None:
    return None if q is None else {"value": q.value, "or_more": q.or_more}


def _gpus_field(value: object, label: str) -> Gpus:
    if isinstance(value, Gpus):
        return _make_gpus(value.name, str(value.count), str(value), label)
    if isinstance(value, Mapping):  # the to_dict() form
        count = value.get("count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise _field_error(label, dict(value), "the count must be a whole number", _GPUS_FIX)
        name = value.get("name")
        if name is not None and not isinstance(name, str):
            raise _field_error(label, dict(value), "the GPU name must be text", _GPUS_FIX)
        return _make_gpus(name, str(count), f"{name}:{count}" if name else str(count), label)
    return _parse_gpus(_number_text(value), label)


def _quantity_field(value: object, what: str, label: str) -> Quantity:
    if isinstance(value, Quantity):
        value = str(value)
    elif isinstance(value, Mapping):  # the to_dict() form
        number = _number_text(value.get("value"))
        if not isinstance(number, str):
            return _parse_quantity(number, what, label)  # rejects it with the usual message
        value = number + ("+" if value.get("or_more") is True else "")
    return _parse_quantity(_number_text(value), what, label)


# Field name -> parser taking (value, label). Shared by the command line,
# named targets and from_dict so all three accept and reject the same things.
_FIELD_PARSERS: dict[str, Any] = {
    "infra": lambda v, label: _parse_infra(v, ()),
    "gpus": _gpus_field,
    "cpus": lambda v, label: _quantity_field(v, "cpus", label),
    "memory": lambda v, label: _quantity_field(v, "memory", label),
    "nodes": _parse_nodes,
    "image": lambda v, label: _parse_text(v, label, "python:3.12-slim"),
    "env": lambda v, label: _parse_mapping(v, label),
    "workdir": lambda v, label: _parse_text(v, label, "/scratch/me/project"),
    "idle_minutes": _parse_minutes,
    "via": _parse_via,
    "task": lambda v, label: _parse_text(v, label, "task.yaml"),
    "ray": _parse_flag,
    "spot": _parse_flag,
    "disk": _parse_disk,
}


def _parse_field(field: str, value: object, label: str) -> object:
    return _FIELD_PARSERS[field](value, label)


def _as_tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """Turn env/options dicts into the sorted pair tuples Target stores."""
    out = dict(fields)
    for key in ("env", "options"):
        if key in out:
            out[key] = tuple(sorted(out[key].items()))
    return out


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

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


def _named_fields(name: str, table: object, source: pathlib.Path | None) -> dict[str, Any]:
    """Validate one [targets.NAME] table; errors say which target and file."""
    try:
        if not isinstance(table, Mapping):
            raise TargetError(f"it must be a table, not {table!r}.")
        fields: dict[str, Any] = {"infra": "local", "env": {}, "options": {}}
        for key, value in table.items():
            field = str(key).replace("-", "_")
            if field in _FIELD_PARSERS:
                fields[field] = _parse_field(field, value, str(key))
            else:  # anything else is a backend option (account, qos, namespace, ...)
                fields["options"][_check_key(key, "option")] = _option_text(value)
        return fields
    except TargetError as exc:
        where = source if source is not None else config_path()
        raise TargetError(f"Named target {name!r} in {where} is invalid: {exc}") from None


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
            from jupyter_cake.backends.sky.taskfile import task_infra

            spec = task_infra(singles["--task"])
        infra = "local" if spec is None else _parse_infra(spec, list(named))
        fields = {"infra": infra, "env": {}, "options": {}}

    for key, value in line.items():
        if key in ("env", "options"):
            fields[key] = {**fields[key], **value}  # merge; the line wins per key
        else:
            fields[key] = value
    return Target(**_as_tuples(fields))


# --------------------------------------------------------------------------
# Named targets file
# --------------------------------------------------------------------------


def config_path() -> pathlib.Path:
    """``$CAKE_CONFIG`` if set, else ``<jupyter config dir>/cake/targets.toml``."""
    override = os.environ.get("CAKE_CONFIG")
    if override:
        return pathlib.Path(override).expanduser()
    # Imported here so that importing this module stays cheap.
    from jupyter_core.paths import jupyter_config_dir

    return pathlib.Path(jupyter_config_dir()) / "cake" / "targets.toml"


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


_TOML_WHERE_RE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def _toml_error(path: pathlib.Path, exc: ValueError, text: str) -> TargetError:
    message = str(exc)
    match = _TOML_WHERE_RE.search(message)
    reason = message[: match.start()] if match else message
    line = getattr(exc, "lineno", None)
    if line is None and match:
        line = int(match.group(1)) if match.group(1) else text.count("\n") + 1
    where = f" on line {line}" if line else ""
    return TargetError(
        f"{path} is not valid TOML{where}: {reason.rstrip('.')}. "
        "Fix that line (see https://toml.io) or point CAKE_CONFIG at another file."
    )


def load_named_targets(path: pathlib.Path | None = None) -> dict[str, dict[str, object]]:
    """Read ``[targets.NAME]`` tables; a missing file simply means none.

    Only the file's shape is checked here; each target's fields are validated
    when it is used, so one broken entry does not block all the others.
    """
    path = config_path() if path is None else pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TargetError(
            f"Could not read the Cake targets file {path} ({exc.strerror}). "
            "Fix its permissions or point CAKE_CONFIG at another file."
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError(f"{path} is not UTF-8 text. Save it as UTF-8 TOML.") from None
    try:
        doc = _toml_loads(text)
    except ValueError as exc:  # TOMLDecodeError subclasses ValueError
        raise _toml_error(path, exc, text) from None
    targets = doc.get("targets", {})
    if not isinstance(targets, dict):
        raise TargetError(f"In {path}, 'targets' must be a table. Write each target as [targets.NAME].")
    result: dict[str, dict[str, object]] = {}
    for name, table in targets.items():
        if not isinstance(table, dict):
            raise TargetError(
                f"In {path}, targets.{name} must be a table. Write it as [targets.{name}] with infra = \"...\" below."
            )
        result[name] = dict(table)
    return result


def resolve_target(args: str | Sequence[str]) -> Target:
    """Parse a target line against the user's named targets file."""
    path = config_path()
    return _parse_target(args, load_named_targets(path), path)

"""Resource values: the ``Gpus`` and ``Quantity`` types and the parsers of each resource field.

One parser per field (``--gpus``, ``--cpus``/``--memory``, ``--nodes``, ``--idle-minutes``, ``--via``,
``--disk``, the switches and free text), each taking the raw value and the label to name in its error,
so the command line, ``targets.toml`` and saved state share them (see ``fields``). Nothing here knows
about infra strings or the magic line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jupyter_cake.targets.errors import _field_error
from jupyter_cake.targets.text import _NAME_RE, _format_number, _number_text

MAX_GPUS = 1024
MAX_NODES = 4096

# Plain ASCII sets: these strings end up in scheduler flags and file names.
_COUNT_RE = re.compile(r"[0-9]+", re.ASCII)
# Exponents are allowed so that repr() of any float we print parses back.
_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

_GPUS_FIX = "Use NAME:COUNT like A100:2, NAME like A100 for one GPU, or COUNT like 2 for any GPU type."
_QUANTITY_FIX = {
    "cpus": "Use a positive number of CPUs like 8, or 8+ for at least 8.",
    "memory": "Use a positive number of GB like 32, or 32+ for at least 32 GB.",
}


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

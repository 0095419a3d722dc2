"""Targets: where a cell runs and with which resources.

A target is typed by the user on a magic line such as::

    %cake use slurm/hpc/gpu --gpus A100:1 --cpus 8+ --memory 32 --env HF_HOME=/scratch/hf

or named in ``targets.toml`` and referred to by name.  This package turns that
text into an immutable, validated :class:`Target`.  Everything here is
stdlib-only on purpose: it is imported by the kernel extension on every start,
so it must stay cheap and must never pull in a backend SDK.

Every problem is reported as a :class:`TargetError` whose message says what
was wrong and how to fix it, because these messages are shown verbatim in a
notebook cell, not in a log.

The modules import downward only, in this order: ``errors`` and ``text``
(shared wording and spelling), ``resources``, ``infra`` and ``pairs`` (one
kind of value each), ``fields`` (the field -> parser table), ``target`` (the
Target type), ``config`` (``targets.toml``), ``line`` (the magic line, the
top); ``taskfile`` (a SkyPilot task's infra) is imported lazily by ``line``.
This module only re-exports, so every ``from jupyter_cake.targets import ...``
keeps working.
"""

from __future__ import annotations

from jupyter_cake.targets.config import config_path, load_named_targets
from jupyter_cake.targets.errors import TargetError
from jupyter_cake.targets.infra import CLOUDS as CLOUDS
from jupyter_cake.targets.infra import check_host_name, parse_infra
from jupyter_cake.targets.line import parse_target, resolve_target
from jupyter_cake.targets.resources import MAX_GPUS as MAX_GPUS
from jupyter_cake.targets.resources import MAX_NODES as MAX_NODES
from jupyter_cake.targets.resources import VIA_CHOICES as VIA_CHOICES
from jupyter_cake.targets.resources import Gpus, Quantity, parse_gpus, parse_quantity
from jupyter_cake.targets.target import Target

__all__ = [
    "TargetError",
    "Gpus",
    "Quantity",
    "Target",
    "parse_gpus",
    "parse_quantity",
    "parse_infra",
    "check_host_name",
    "parse_target",
    "config_path",
    "load_named_targets",
    "resolve_target",
]

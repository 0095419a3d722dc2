"""The table from each ``Target`` field to its parser, shared by every way a target is written.

The command line, a named target in ``targets.toml`` and ``Target.from_dict`` all validate through
``_FIELD_PARSERS``, so all three accept and reject exactly the same values with the same messages. The
``_gpus_field`` and ``_quantity_field`` adapters additionally accept the typed values and the
``to_dict()`` form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jupyter_cake.targets.errors import _field_error
from jupyter_cake.targets.infra import _parse_infra
from jupyter_cake.targets.pairs import _parse_mapping
from jupyter_cake.targets.resources import (
    _GPUS_FIX,
    Gpus,
    Quantity,
    _make_gpus,
    _parse_disk,
    _parse_flag,
    _parse_gpus,
    _parse_minutes,
    _parse_nodes,
    _parse_quantity,
    _parse_text,
    _parse_via,
)
from jupyter_cake.targets.text import _number_text


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

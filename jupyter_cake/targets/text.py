"""Spelling rules shared by more than one kind of field: names, and numbers written back as text.

Infra segments and GPU types both follow ``_NAME_RE``; quantities, idle minutes, backend options and
``Target.canonical()`` all print numbers with ``_format_number`` so what Cake writes parses back to the
same value; ``_number_text`` turns TOML/JSON numbers into the text the field parsers read. They live
apart from both users so that resources, infra and key=value parsing need not import each other.
"""

from __future__ import annotations

import math
import re

# Plain ASCII sets: these strings end up in scheduler flags and file names.
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)


def _format_number(value: float) -> str:
    """Shortest text for a number that float() reads back exactly."""
    value = float(value)  # callers may hand in an int (e.g. Quantity(8))
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _number_text(value: object) -> object:
    """TOML and JSON give numbers; the text parsers expect their text form."""
    if isinstance(value, bool):
        return value  # left as is so the parser rejects it
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return _format_number(value)
    return value

"""The one exception of the targets package and the helpers that word its messages.

Every problem with a target is a :class:`TargetError` whose message says what was wrong and how to fix
it, because these messages are shown verbatim in a notebook cell, not in a log. ``_field_error`` gives
every field's complaint the same shape and ``_closest`` finds the "did you mean" suggestion. This is the
lowest module of the package (it imports nothing else of it), so every other module can raise from here
without an import circle.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from jupyter_cake.errors import CakeError


class TargetError(CakeError, ValueError):
    """A user-facing problem with a target; the message explains the fix."""


def _field_error(label: str, value: object, why: str, fix: str) -> TargetError:
    # One shape for every field so messages read the same everywhere.
    return TargetError(f"Invalid {label} value {value!r}: {why}. {fix}")


def _closest(word: str, choices: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None

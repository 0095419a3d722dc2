"""Exceptions every front door understands.

``CakeError`` is an expected, user-facing failure: its message says what went wrong and how to fix it,
and front doors show it without a Python traceback. Anything else is a bug and shows in full.
"""

from __future__ import annotations


class CakeError(Exception):
    """A failure the user can act on; the message names the cause and the fix."""


class BackendUnavailable(CakeError):
    """The target parses, but the backend that serves it is not installed or not built yet."""


class SessionGone(CakeError):
    """The session's nanny no longer answers (idle autostop, ``cake down``, or the allocation ended)."""


class SessionUnreachable(CakeError):
    """The session cannot be reached right now (a network outage), but nothing says it ended: it was NOT
    stopped and can be re-attached. Deliberately not a SessionGone: whoever sees it must keep the session."""


class ChannelRefused(CakeError):
    """The channel to a session was refused for a reason no retry can fix (e.g. the node's SSH host key
    changed): shown to the user as it is, never taken for a session that merely doesn't answer."""


class RunTimeout(CakeError):
    """A run exceeded its ``--timeout`` and was interrupted."""


def _render_message(self: BaseException) -> list[str]:
    """IPython shows this instead of a traceback: the message is the whole story for expected errors."""
    return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


CakeError._render_traceback_ = _render_message  # type: ignore[attr-defined]

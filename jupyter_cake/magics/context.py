"""What the line commands and ``%%cake`` cells of one notebook kernel share: the Cake engine (opened
on first use), the current session, and starting or re-attaching a session with its progress shown.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.manager import Cake, Handle
from jupyter_cake.targets import Target


class StatusLine:
    """Progress of a starting session: transient messages (a queue wait ticking up) replace each
    other in one display, updated in place; lasting ones are printed."""

    def __init__(self) -> None:
        self.display: Any = None

    def __call__(self, text: str, transient: bool = False) -> None:
        from IPython.display import display

        bundle = {"text/plain": f"[cake] {text}"}
        if self.display is not None:
            self.display.update(bundle, raw=True)
            if not transient:
                self.display = None
        elif transient:
            self.display = display(bundle, raw=True, display_id=True)
        else:
            print(f"[cake] {text}", flush=True)


class Context:
    """The state of the magics in one kernel; CakeMagics holds one."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._cake: Cake | None = None
        self.current: Handle | None = None
        self.comm_twins: dict[str, Any] = {}  # session id -> its remote comms' local twins (comms.py)

    @property
    def core(self) -> Cake:
        if self._cake is None:  # the store is opened on first use, not at %load_ext
            self._cake = Cake()
        return self._cake

    def session_for(
        self, target: Target, name: str | None = None, new: bool = False, timeout: float | None = None
    ) -> Handle:
        start = time.monotonic()
        line = StatusLine()
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout else {}
        handle, started = self.core.use(target, name=name, new=new, progress=line, **kwargs)
        took = time.monotonic() - start
        verb = "started" if started else "re-attached to"
        where = handle.backend.describe(handle.allocation)
        line(f"{verb} session {handle.id} on {target.describe()}{f' [{where}]' if where else ''} ({took:.2f} s)")
        return handle

    def require_current(self) -> Handle:
        if self.current is None:
            raise CakeError(
                "No Cake session yet. Start one first, e.g. `%cake use local` (or `%cake use <target>`), "
                "or give the cell a target: `%%cake --target local`."
            )
        return self.current

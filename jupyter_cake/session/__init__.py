"""Async client of one remote session: the kernel (Jupyter protocol) and its nanny (control + journal).

Everything here runs on the engine loop (``jupyter_cake.engine``). Outputs are handed to a *sink*, a
plain callable, as ``Output`` dicts: the same shape whether they arrive live over iopub or are replayed
from the nanny's journal, so the relay cannot tell the difference either.

``RemoteSession`` is assembled from parts that import downward only:

- ``wire``: sending and signing messages, the reader loops, and the routing tables they fill;
- ``connection``: connect / wait until ready / close, and the nanny's control requests (liveness);
- ``runs``: execute, attach and replay from the journal, interrupt, ``Outcome``;
- ``transfer``: push / pull of variables over a comm.
"""

from __future__ import annotations

# Private names stay importable where the single module had them (``as`` marks a re-export);
# ``_Route`` is what ``start_run`` returns.
from jupyter_cake.session.connection import NANNY_TIMEOUT_S
from jupyter_cake.session.runs import IOPUB_GRACE_S, Outcome, Runs
from jupyter_cake.session.runs import _output_from_journal as _output_from_journal
from jupyter_cake.session.transfer import Transfer
from jupyter_cake.session.wire import Output, Sink
from jupyter_cake.session.wire import _Route as _Route

__all__ = ["IOPUB_GRACE_S", "NANNY_TIMEOUT_S", "Outcome", "Output", "RemoteSession", "Sink"]


class RemoteSession(Runs, Transfer):
    """One connected session: ``connect`` (or ``connect_nanny_only``), then run cells and move variables."""

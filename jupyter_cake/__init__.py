"""Cake: run notebook cells, whole kernels and scripts on remote GPUs, with output streamed back live.

``%load_ext jupyter_cake`` registers the ``%cake`` / ``%%cake`` magics. Importing this package is
cheap on purpose (it is loaded into every notebook kernel): heavy modules load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    from jupyter_cake.magics import CakeMagics

    ipython.register_magics(CakeMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo: sessions outlive the kernel on purpose (re-attach after a restart)."""


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt side panel lives (for `jupyter labextension develop`; wheels install it)."""
    return [{"src": "labextension", "dest": "jupyter-cake"}]

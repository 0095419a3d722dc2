"""Cake's jupyter_server extension (``jupyter_cake.server``), enabled on install by
``etc/jupyter/jupyter_server_config.d/jupyter_cake.json``.

Loading it must stay cheap and never import SkyPilot, Kubernetes or Ray (DESIGN seam 4): jupyter_server
imports this module for every server start, so the app class is imported only when the server asks.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from jupyter_cake.server.app import CakeServerApp

    return [{"module": "jupyter_cake.server", "app": CakeServerApp}]

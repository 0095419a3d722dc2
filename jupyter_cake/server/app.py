"""The Cake server extension app.

Today it does one thing for every kernel the server runs (Cake kernelspecs and plain ones alike): it
turns off Nagle's algorithm on kernel websockets. jupyter_server never sets TCP_NODELAY on them, so a
small frame written right after another waits for the peer's delayed ACK: about 40 ms on each trivial
execute from VS Code's "existing Jupyter server" mode or PyCharm's managed server (measured 48-52 ms vs
9 ms over direct ZMQ; 3.8-7 ms with the fix). See ``bench/ide.py``.

It also serves the REST and websocket API of the JupyterLab side panel under ``/cake/api/`` (see
``handlers.py``); what the handlers import stays light (no SkyPilot, Kubernetes or Ray).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool


class NodelayKernelWebsocketMixin:
    """Mixed in front of whatever kernel websocket connection class the server is configured with
    (the default ZMQ one, the gateway's, or a user's), so only the socket option changes."""

    websocket_handler: Any
    log: Any

    def connect(self) -> Any:
        # Called from the handler's open(): the websocket handshake is done, so the stream exists.
        try:
            self.websocket_handler.set_nodelay(True)
        except (AssertionError, AttributeError, OSError) as exc:  # closed already, or not a TCP stream
            self.log.debug("cake: could not set TCP_NODELAY on a kernel websocket: %s", exc)
        return super().connect()  # type: ignore[misc]


def nodelay_connection_class(base: type) -> type:
    """``base`` with TCP_NODELAY on its websocket; ``base`` itself if it has it already."""
    if issubclass(base, NodelayKernelWebsocketMixin):
        return base
    return type(f"Nodelay{base.__name__}", (NodelayKernelWebsocketMixin, base), {"__module__": __name__})


class CakeServerApp(ExtensionApp):
    name = "jupyter_cake"
    load_other_extensions = True

    kernel_ws_nodelay = Bool(
        True,
        config=True,
        help="Set TCP_NODELAY on kernel websockets (removes ~40 ms of Nagle delay per message exchange).",
    )

    def initialize_settings(self) -> None:
        if self.kernel_ws_nodelay:
            self._install_nodelay()

    def _install_nodelay(self) -> None:
        assert self.serverapp is not None
        base = self.settings.get("kernel_websocket_connection_class") or self.serverapp.kernel_websocket_connection_class
        cls = nodelay_connection_class(base)
        # The handler reads the class from the web app's settings at each websocket connection.
        self.settings["kernel_websocket_connection_class"] = cls
        self.serverapp.kernel_websocket_connection_class = cls  # type: ignore[assignment]
        self.log.info("Cake: TCP_NODELAY on kernel websockets (%s)", cls.__name__)

    def initialize_handlers(self) -> None:
        """The side panel's REST + websocket API under ``<base_url>/cake/api/``."""
        from jupyter_cake.server.handlers import handlers
        from jupyter_cake.server.monitor import Monitor

        assert self.serverapp is not None
        self.serverapp.web_app.settings.setdefault("cake_monitor", Monitor())
        self.handlers.extend(handlers(""))

"""REST and websocket API of the side panel, under ``<base_url>/cake/api/``.

    GET  health                              the extension is loaded (the panel's "is it enabled?" probe)
    GET  targets                             built-in + named targets, each with a health check
    GET  sessions[?all=0]                    sessions (live first, then recent ended ones)
    POST sessions {target, name?, owner?}    start (or re-use) a session on a target
    GET  sessions/<id>                       one session, with a fresh nanny ping
    POST sessions/<id>/stop | DELETE sessions/<id>   stop it (cake down)
    GET  runs[?session=&state=a,b&limit=&offset=]    runs, newest first
    GET  runs/<id>                           one run
    GET  runs/<id>/output                    its journaled output as text
    POST runs/<id>/interrupt | runs/<id>/cancel      interrupt it (the session survives)
    WS   ws                                  state changes + output of subscribed runs

Every handler is authenticated (``@tornado.web.authenticated``; POST/DELETE also pass jupyter_server's
XSRF check for cookie-authenticated browsers), then authorized by jupyter_server's Authorizer on the
resource ``cake`` (read-only roles, JupyterHub's granular scopes): "read" for every GET and the websocket,
"execute" for what runs or interrupts code (starting a session: its target may carry ``--env`` and setup
shell; interrupting a run), "write" for stopping a session. A refusal is a 403 before anything is read
from the request body. Blocking engine calls run in a thread executor.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import tornado.web
import tornado.websocket
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler

from jupyter_cake import __version__
from jupyter_cake.errors import CakeError
from jupyter_cake.server import api
from jupyter_cake.server.monitor import Monitor, dumps

ID = r"(?P<ident>[A-Za-z0-9_\-]+)"

# The one resource name an Authorizer (or a JupyterHub role's scopes) sees for all of Cake's API, and
# the actions it is asked for (README, "JupyterLab side panel").
AUTH_RESOURCE = "cake"
READ, WRITE, EXECUTE = "read", "write", "execute"

Method = TypeVar("Method", bound=Callable[..., Coroutine[Any, Any, None]])


def authorize(action: str) -> Callable[[Method], Method]:
    """jupyter_server's ``@authorized`` for ``action`` on Cake (a 403 when its Authorizer says no). The
    action is always explicit, not derived from the HTTP method: POST defaults to "write", while starting
    a session or interrupting a run executes code."""
    return cast("Callable[[Method], Method]", authorized(action, AUTH_RESOURCE))


def allowed(action: str) -> Callable[[Method], Method]:
    """Authenticated (a 403 otherwise, as jupyter_server's own API handlers), then authorized for ``action``."""

    def decorate(method: Method) -> Method:
        return cast("Method", tornado.web.authenticated(authorize(action)(method)))

    return decorate


class CakeHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def monitor(self) -> Monitor:
        monitor: Monitor = self.settings["cake_monitor"]
        return monitor

    async def blocking(self, fn: Callable[..., Any], *args: Any, reader: bool = True) -> Any:
        """Run ``fn`` off the event loop: reads on the panel's reader thread, actions on the default
        executor (a session start takes seconds and must not hold up the readers)."""
        try:
            if reader:
                return await self.monitor.call(fn, *args)
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except api.NotFound as exc:
            raise tornado.web.HTTPError(404, reason=str(exc)) from None
        except CakeError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc).replace("\n", " ")[:500]) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # jupyter_server's JSON error (message + reason), where our own errors put their message in the
        # reason and jupyter_server's (a refused authorization) in log_message; and the status, for the panel.
        error = kwargs.get("exc_info", (None, None, None))[1]
        http = error if isinstance(error, tornado.web.HTTPError) else tornado.web.HTTPError(status_code)
        self.set_header("Content-Type", "application/json")
        reply = {"message": http.log_message or self._reason, "reason": http.reason, "status": status_code}
        self.finish(json.dumps(reply))

    def body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, reason="The request body must be JSON.") from None
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, reason="The request body must be a JSON object.")
        return data

    def reply(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))


class HealthHandler(CakeHandler):
    @allowed(READ)
    async def get(self) -> None:
        self.reply({"ok": True, "version": __version__})


class TargetsHandler(CakeHandler):
    @allowed(READ)
    async def get(self) -> None:
        self.reply(await self.blocking(api.targets))


class SessionsHandler(CakeHandler):
    @allowed(READ)
    async def get(self) -> None:
        include_ended = self.get_query_argument("all", "1") not in ("0", "false")

        def read() -> list[dict[str, Any]]:
            return [api.session_json(r) for r in api.list_sessions(self.monitor.cake, include_ended)]

        self.reply({"sessions": await self.blocking(read)})

    @allowed(EXECUTE)
    async def post(self) -> None:
        data = self.body()
        spec = str(data.get("target") or "").strip()
        if not spec:
            raise tornado.web.HTTPError(400, reason="Which target? Send {\"target\": \"local\"} (or a named target).")
        name = data.get("name") or None
        owner = str(data.get("owner") or "")
        if owner and not os.path.isabs(owner):
            # A notebook's API path -> what its kernel sees as JPY_SESSION_NAME (jupyter_server's
            # SessionManager.get_kernel_env), so `%cake use <target>` there re-attaches to this session.
            cwd = self.settings["kernel_manager"].cwd_for_path(owner)
            owner = os.path.join(cwd, os.path.basename(owner))
        result = await self.blocking(api.start_session, spec, name, owner, reader=False)
        self.monitor.poke()
        self.set_status(201 if result["started"] else 200)
        self.reply(result)


class SessionHandler(CakeHandler):
    @allowed(READ)
    async def get(self, ident: str) -> None:
        def read() -> dict[str, Any]:
            cake = self.monitor.cake
            row = api.get_session(cake, ident)
            if row.state == "running":
                self.monitor.ping(row)
            ping, at = self.monitor.pings.get(ident, (None, None))
            fresh = cake.store.session(ident) or row
            return api.session_json(fresh, ping if fresh.state == "running" else None, at)

        self.reply({"session": await self.blocking(read)})

    @allowed(WRITE)
    async def delete(self, ident: str) -> None:
        await self.stop(ident)

    async def stop(self, ident: str) -> None:
        result = await self.blocking(api.stop_session, ident, reader=False)
        self.monitor.poke()
        self.reply(result)


class SessionStopHandler(SessionHandler):
    @allowed(WRITE)
    async def post(self, ident: str) -> None:
        await self.stop(ident)


class RunsHandler(CakeHandler):
    @allowed(READ)
    async def get(self) -> None:
        session = self.get_query_argument("session", None) or None
        states = [s for s in self.get_query_argument("state", "").split(",") if s]
        try:
            limit = int(self.get_query_argument("limit", "50"))
            offset = int(self.get_query_argument("offset", "0"))
        except ValueError:
            raise tornado.web.HTTPError(400, reason="limit and offset must be integers.") from None
        runs = await self.blocking(lambda: api.list_runs(self.monitor.cake, session, states, limit, offset))
        self.reply({"runs": runs, "limit": limit, "offset": offset})


class RunHandler(CakeHandler):
    @allowed(READ)
    async def get(self, ident: str) -> None:
        run = await self.blocking(lambda: api.get_run(self.monitor.cake, ident))
        self.reply({"run": api.run_json(run)})


class RunOutputHandler(CakeHandler):
    @allowed(READ)
    async def get(self, ident: str) -> None:
        self.reply(await self.blocking(lambda: api.run_output(self.monitor.cake, ident)))


class RunInterruptHandler(CakeHandler):
    @allowed(EXECUTE)
    async def post(self, ident: str) -> None:
        result = await self.blocking(api.interrupt_run, ident, reader=False)
        self.monitor.poke()
        self.reply(result)


class LiveHandler(tornado.websocket.WebSocketHandler, JupyterHandler):
    """One websocket per panel. Client -> server: {"type": "subscribe"|"unsubscribe", "run": ID}.
    Server -> client: snapshot, session, session_removed, run, output (see monitor.py)."""

    auth_resource = AUTH_RESOURCE

    @property
    def monitor(self) -> Monitor:
        monitor: Monitor = self.settings["cake_monitor"]
        return monitor

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Like @tornado.web.authenticated, but a 403 instead of a redirect to the login page.
        if self.current_user is None:
            raise tornado.web.HTTPError(403, reason="Not authenticated: send the token or log in.")
        await self.upgrade(*args, **kwargs)

    @authorize(READ)
    async def upgrade(self, *args: Any, **kwargs: Any) -> None:
        # Authorized before the upgrade (as jupyter_server's kernel websocket does in pre_get): a refused
        # client gets a plain 403 and never a socket, so never a message.
        await super().get(*args, **kwargs)

    def check_origin(self, origin_to_satisfy_tornado: str = "") -> bool:
        # Jupyter's origin policy (allow_origin etc.), not tornado's plain same-origin check.
        return bool(JupyterHandler.check_origin(self, origin_to_satisfy_tornado))

    def get_compression_options(self) -> dict[str, Any] | None:
        return {}

    async def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        await self.monitor.add(self.push)

    def push(self, message: dict[str, Any]) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            self.monitor.remove(self.push)
            return
        self.write_message(dumps(message))

    async def on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
            kind, run_id = data.get("type"), str(data.get("run") or "")
        except (ValueError, AttributeError):
            return
        if kind == "subscribe" and run_id:
            await self.monitor.subscribe(self.push, run_id)
        elif kind == "unsubscribe":
            self.monitor.unsubscribe(self.push, run_id)

    def on_close(self) -> None:
        self.monitor.remove(self.push)


def handlers(base: str) -> list[tuple[str, type]]:
    def route(path: str) -> str:
        return f"{base.rstrip('/')}/cake/api/{path}"

    return [
        (route("health"), HealthHandler),
        (route("targets"), TargetsHandler),
        (route("sessions"), SessionsHandler),
        (route(f"sessions/{ID}"), SessionHandler),
        (route(f"sessions/{ID}/stop"), SessionStopHandler),
        (route("runs"), RunsHandler),
        (route(f"runs/{ID}"), RunHandler),
        (route(f"runs/{ID}/output"), RunOutputHandler),
        (route(f"runs/{ID}/(?:interrupt|cancel)"), RunInterruptHandler),
        (route("ws"), LiveHandler),
    ]

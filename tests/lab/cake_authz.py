"""Authorizers for the authorization tests (test_authz.py): loaded by the `jupyter lab` server those tests
start (``--ServerApp.authorizer_class=cake_authz.<Class>``, this folder on its PYTHONPATH), the way an admin
plugs in their own policy. Every other resource stays allowed, so the server itself works as usual.

Each ask is appended to the file named by ``CAKE_TEST_AUTHZ_LOG`` (one JSON object a line: method, path,
action, resource), so that the tests see which action each endpoint asked for, not only its answer.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_server.auth.authorizer import Authorizer

RESOURCE = "cake"


class RecordingAuthorizer(Authorizer):
    """Allows everything, records each ask; subclasses refuse some actions on the cake resource."""

    def allows(self, action: str) -> bool:
        return True

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        log = os.environ.get("CAKE_TEST_AUTHZ_LOG")
        if log:
            request = handler.request
            ask = {"method": request.method, "path": request.path, "action": action, "resource": resource}
            with open(log, "a") as out:
                out.write(json.dumps(ask) + "\n")
        return resource != RESOURCE or self.allows(action)


class RefuseCake(RecordingAuthorizer):
    """No action at all on Cake: what a user without any Cake scope gets."""

    def allows(self, action: str) -> bool:
        return False


class ReadOnlyCake(RecordingAuthorizer):
    """Cake's read action only: see targets, sessions and runs (and follow them live), start or stop nothing."""

    def allows(self, action: str) -> bool:
        return action == "read"

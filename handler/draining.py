"""Stopping without dropping anyone: after SIGTERM, `twostage serve` answers every new request 503 with
`Retry-After` and `Connection: close` for `drain_s` seconds, then stops listening and lets in-flight
requests finish. A client on a kept-alive connection hears that the server is going away instead of
having its next request reset; a load balancer sees /health go 503 and stops sending."""

from __future__ import annotations

import threading

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class Draining:
    """Set once, when the process has been asked to stop."""

    def __init__(self):
        self._event = threading.Event()

    def start(self) -> None:
        self._event.set()

    @property
    def active(self) -> bool:
        return self._event.is_set()


class RefuseWhileDraining:
    def __init__(self, app: ASGIApp, draining: Draining):
        self.app, self.draining = app, draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.draining.active:
            return await self.app(scope, receive, send)
        message = "the server is shutting down; retry on a new connection"
        body = {"error": "shutting_down", "message": message, "details": [{"field": "server", "message": message}]}
        headers = {"Retry-After": "1", "Connection": "close"}
        await JSONResponse(body, 503, headers=headers)(scope, receive, send)

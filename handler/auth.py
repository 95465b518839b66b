"""Bearer API key for `twostage serve` (TWOSTAGE_API_KEY), as TEI and infinity take one.

On Lambda the API Gateway authorises callers (IAM or JWT, template.yaml's Auth); this key is for the
container that is reached directly. /health, /openapi.json and /docs stay open for probes and clients.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs"})


class BearerAuth:
    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key):
            return await self.app(scope, receive, send)
        challenge = 'Bearer realm="twostage"' + (', error="invalid_token"' if header else "")
        message = "invalid API key" if header else "an API key is required: Authorization: Bearer <key>"
        body = {
            "error": "unauthorized",
            "message": message,
            "details": [{"field": "authorization", "message": message}],
        }
        await JSONResponse(body, 401, headers={"WWW-Authenticate": challenge})(scope, receive, send)

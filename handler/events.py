"""API Gateway HTTP API (payload v2) events, as Lambda receives them: for `twostage query`, the benchmarks,
and the priming request before a SnapStart snapshot (handler/ahead_of_time.py)."""

from __future__ import annotations

import json
import time


def http_api_event(method: str, path: str, body: dict | None = None) -> dict:
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "localhost", "user-agent": "twostage-cli"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "twostage-cli",
            },
            "requestId": f"cli-{int(now * 1000)}",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }

"""One JSON log line and one CloudWatch Embedded Metric Format (EMF) line per request.

The log line carries the request id (Lambda's invocation id, or X-Request-Id / a new one under `twostage
serve`), route, status, per-stage timings, candidate count and whether the answer was refused. Under
Lambda with the JSON log format (template.yaml) the runtime's formatter writes it; elsewhere `JsonLines`
does, with the same fields. The EMF line (printed to stdout, where CloudWatch turns it into metrics)
holds latency per stage, refusals, errors and cold starts, dimensioned by route, in the namespace
TWOSTAGE_METRICS_NAMESPACE (or Powertools' POWERTOOLS_METRICS_NAMESPACE; the template sets one per stack).
Written directly: importing Powertools' Logger and Metrics would lengthen every cold start (docs/results.md §11).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("twostage.request")
_COLD = {"start": True}  # the first request of this process is the cold start's


class JsonLines(logging.Formatter):
    """JSON log lines with the fields Lambda's JSON format writes (timestamp, level, message, logger,
    requestId) plus each record's `extra` fields."""

    RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        line |= {k: v for k, v in vars(record).items() if k not in self.RESERVED and not k.startswith("_")}
        if record.exc_info:
            line["errorType"] = record.exc_info[0].__name__
            line["stackTrace"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def use_json_logs(level: str) -> None:
    """JSON lines on stderr for every logger (twostage serve)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def emf_line(
    route: str, status: int, timings: dict[str, float], refused: bool | None, cold: bool, namespace: str = "twostage"
) -> str:
    metrics = {f"{name.removesuffix('_ms')}_ms": value for name, value in timings.items()}
    counts = {"requests": 1, "errors": int(status >= 500), "refusals": int(bool(refused)), "cold_starts": int(cold)}
    units = [{"Name": name, "Unit": "Milliseconds"} for name in metrics]
    units += [{"Name": name, "Unit": "Count"} for name in counts]
    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": [["route"]], "Metrics": units}],
        },
        "route": route,
        **metrics,
        **counts,
    }
    return json.dumps(document)


def mark_cold_start() -> None:
    """The next request is a cold start's (after a SnapStart restore: the priming request took the first)."""
    _COLD["start"] = True


def request_id(scope: Scope) -> str:
    """Lambda's invocation id (Mangum puts the context in the scope), else the caller's X-Request-Id, else new."""
    context = scope.get("aws.context")
    if context is not None and getattr(context, "aws_request_id", None):
        return context.aws_request_id
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and 0 < len(value) <= 200:
            return value.decode("latin-1")
    return str(uuid.uuid4())


class RequestLog:
    """Times each HTTP request and writes its log and EMF lines; routes add what they know (timings,
    candidates, refused) to `request.state.log`. Echoes the request id as X-Request-Id."""

    def __init__(self, app: ASGIApp, metrics: bool = True, namespace: str = "twostage"):
        self.app, self.metrics, self.namespace = app, metrics, namespace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {"code": 500}
        rid = request_id(scope)
        scope.setdefault("state", {})["log"] = {}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            self._write(scope, rid, status["code"], (time.perf_counter() - started) * 1000)

    def _write(self, scope: Scope, rid: str, status: int, elapsed_ms: float) -> None:
        found = scope["state"].get("log", {})
        timings = found.get("timings") or {}
        cold, _COLD["start"] = _COLD["start"], False
        fields = {
            "requestId": rid,
            "route": scope["path"],
            "method": scope["method"],
            "status": status,
            "duration_ms": round(elapsed_ms, 2),
            "cold_start": cold,
            **found,
        }
        log.info("request", extra=fields)
        if self.metrics and scope["path"] in ("/search", "/rerank", "/v2/rerank"):
            stages = {"total_ms": round(elapsed_ms, 2)} | {k: v for k, v in timings.items() if k != "total_ms"}
            line = emf_line(scope["path"], status, stages, found.get("refused"), cold, self.namespace)
            print(line, file=sys.stdout, flush=True)

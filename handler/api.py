"""The ASGI app: /search, Cohere-compatible /rerank, /health and the OpenAPI document.

Starlette plus pydantic bodies: FastAPI's import would lengthen every cold start for the same routes
(docs/results.md §8).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, nullcontext
from pathlib import PurePath

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from handler.admission import Admission, stop_on_disconnect
from handler.auth import BearerAuth
from handler.batching import Overloaded
from handler.bodies import BadRequest, parse_json, read_json, validate
from handler.cpu import this_cpu
from handler.draining import Draining, RefuseWhileDraining
from handler.errors import ArtifactError, Cancelled, InvalidRequest, Stage1Unavailable, TooMuchWork
from handler.observability import RequestLog
from handler.openapi import DOCS_HTML, Limits, openapi_document
from handler.pipeline import Retriever
from handler.rerank_formats import Deployment, format_for
from handler.results import SearchAnswer
from handler.schemas import ErrorResponse, HealthResponse, ModelInfo, SearchRequest, SearchResponse
from handler.settings import Settings

log = logging.getLogger(__name__)
VERSION = "0.1.0"
RETRY_AFTER_S = 1
INLINE_BODY_BYTES = 64 * 1024  # bodies up to this are checked on the event loop (microseconds)


def _error(status: int, error: str, details: list[dict], headers: dict | None = None) -> JSONResponse:
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or error
    body = ErrorResponse(error=error, message=message, details=details)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def json_response(body: BaseModel, exclude_none: bool = False) -> Response:
    return Response(body.model_dump_json(exclude_none=exclude_none), media_type="application/json")


async def _on_bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return _error(exc.status, exc.error, exc.details)


async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # keeps Starlette's headers: a 405 carries Allow
    return _error(exc.status_code, "http_error", [{"field": "path", "message": str(exc.detail)}], exc.headers)


async def _on_overload(request: Request, exc: Overloaded) -> JSONResponse:
    details = [{"field": "server", "message": f"busy ({exc}); retry later"}]
    return _error(503, "overloaded", details, {"Retry-After": str(RETRY_AFTER_S)})


async def _on_timeout(request: Request, exc: TimeoutError) -> JSONResponse:
    return _error(504, "timeout", [{"field": "server", "message": str(exc)}])


async def _on_invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
    return _error(422, "invalid_request", [{"field": exc.field, "message": exc.message}])


async def _on_too_much_work(request: Request, exc: TooMuchWork) -> JSONResponse:
    return _error(413, "too_much_work", [{"field": exc.field, "message": exc.message}])


async def _on_stage1_unavailable(request: Request, exc: Stage1Unavailable) -> JSONResponse:
    details = [{"field": "server", "message": f"stage 1 is unavailable ({exc}); retry later"}]
    return _error(503, "stage1_unavailable", details, {"Retry-After": str(RETRY_AFTER_S)})


async def _on_cancelled(request: Request, exc: Cancelled) -> JSONResponse:
    return _error(499, "client_closed_request", [{"field": "client", "message": str(exc)}])  # nobody reads it


EXCEPTION_HANDLERS = {
    BadRequest: _on_bad_request,
    HTTPException: _on_http_error,
    Overloaded: _on_overload,
    TimeoutError: _on_timeout,
    InvalidRequest: _on_invalid,
    TooMuchWork: _on_too_much_work,
    Cancelled: _on_cancelled,
    Stage1Unavailable: _on_stage1_unavailable,
}
INTERNAL_ERROR = {"error": "internal_error", "message": "internal error", "details": []}


class CrashBarrier:
    """An unexpected error becomes one logged 500 here. Left to Starlette's ServerErrorMiddleware it is
    re-raised after the response: a second traceback, and uvicorn closes the keep-alive connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await JSONResponse(INTERNAL_ERROR, status_code=500)(scope, receive, send)


def _public_source(source: str) -> str:
    """An HF id as is; a local path by its last part (/health must not show the build host's paths)."""
    return PurePath(source).name if source.startswith(("/", ".", "~")) or "\\" in source else source


def _health(retriever: Retriever, settings: Settings, problems: dict[str, str]) -> HealthResponse:
    def model(m, conventions: dict) -> ModelInfo:
        return ModelInfo(
            source=_public_source(m.source),
            sha256=m.sha256,
            quantization=m.quantization,
            max_length=m.max_length,
            conventions=conventions,
        )

    bi, cross = retriever.recall.encoder.manifest, retriever.rerank.cross.manifest
    bi_conventions = {"pooling": bi.pooling, "normalize": bi.normalize}
    bi_conventions |= {"query_prompt": bi.query_prompt, "passage_prompt": bi.passage_prompt}
    # "uncalibrated": the score is the reranker's raw sigmoid and no floor came with it
    calibration = retriever.rerank.calibration
    cross_conventions = {"head": cross.head, "calibrated": calibration.calibrated, "calibrated_on": calibration.source}
    return HealthResponse(
        status="broken" if problems else "ok",
        problems={PurePath(path).name: problem for path, problem in problems.items()},
        bi=model(bi, bi_conventions),
        cross=model(cross, cross_conventions),
        index=retriever.recall.stage1.describe(),
        floor=retriever.rerank.floor,
        floor_source=retriever.rerank.floor_source,
        load_ms=retriever.load_ms,
        defaults={"recall_k": settings.recall.recall_k, "top_k": settings.top_k},
        cpu=this_cpu().as_dict(),
    )


def limits_of(settings: Settings, filterable: dict[str, str]) -> Limits:
    return Limits(
        max_query_chars=settings.limits.max_query_chars,
        max_documents=settings.limits.max_documents,
        max_document_chars=settings.limits.max_document_chars,
        max_body_bytes=settings.limits.max_body_bytes,
        max_rerank_tokens=settings.rerank.max_rerank_tokens,
        bearer=settings.api_key is not None,
        filterable=tuple(sorted(filterable.items())),
    )


def _search_log(answer: SearchAnswer) -> dict:
    """What a /search request's log line carries (`best_score` is the trace `calibrate --traces` reads)."""
    return {
        "mode": answer.mode,
        "recall_k": answer.recall_k,
        "top_k": answer.top_k,
        "candidates": answer.candidates,
        "reranked": answer.reranked,
        "first_pass": answer.first_pass,
        "deadline_cut": answer.deadline_cut,
        "results": len(answer.results),
        "refused": answer.refused,
        "best_score": None if answer.best_score is None else round(answer.best_score, 6),
        "timings": answer.timings,
    }


def create_app(retriever: Retriever, settings: Settings, draining: Draining | None = None) -> Starlette:
    # CPU: one request runs the models at a time, a few wait; the GPU batcher keeps its own queue.
    limits = settings.limits
    admission = None if settings.batcher.batching else Admission(limits.max_concurrent, limits.max_pending)
    calibration = retriever.rerank.calibration
    deployment = Deployment(
        _public_source(retriever.rerank.cross.manifest.source), calibration.calibrated, calibration.source
    )

    @asynccontextmanager
    async def admitted(request: Request):
        """Model calls block: they run in the thread pool (where concurrent requests meet in the batcher),
        admitted by the gate, and stop between stages once the client has gone."""
        async with stop_on_disconnect(request) as stop, admission.slot() if admission else nullcontext():
            yield stop

    async def run(request: Request, prepare, work):
        """`prepare(raw)` parses and checks the body, `work(prepared, stop)` runs the models. A small body
        is checked at once (a bad one answers 4xx without queueing); a large one off the event loop and
        inside the gate, so no body's validation holds up /health or the requests already admitted."""
        raw = await read_json(request, limits)
        if len(raw) <= INLINE_BODY_BYTES:
            prepared = prepare(raw)
            async with admitted(request) as stop:
                return await run_in_threadpool(work, prepared, stop)
        async with admitted(request) as stop:
            prepared = await run_in_threadpool(prepare, raw)
            return await run_in_threadpool(work, prepared, stop)

    def prepare_search(raw: bytes):
        body = validate(parse_json(raw), SearchRequest, limits)
        asked = (body.recall_k, body.top_k, body.mode, body.floor, body.deadline_ms, body.cascade_keep, body.filter)
        return retriever.resolve(body.query, *asked)

    async def search(request: Request) -> Response:
        answer = await run(request, prepare_search, retriever.answer)
        request.state.log.update(_search_log(answer))
        return json_response(SearchResponse.model_validate(answer, from_attributes=True))

    def prepare_rerank(path: str):
        def prepare(raw: bytes):
            parsed = parse_json(raw)
            dialect = format_for(path, parsed)
            return dialect, validate(parsed, dialect.request, limits)

        return prepare

    def rerank_documents(prepared, stop):
        dialect, body = prepared
        cut = getattr(body, "max_tokens_per_doc", None)
        ranked = retriever.rerank_documents(body.query, body.texts, max_tokens_per_doc=cut, stop=stop)
        return dialect, body, ranked

    async def rerank(request: Request) -> Response:
        """Every dialect of rerank_formats.py: Cohere v2 and Infinity, Cohere v1, TEI."""
        dialect, body, ranked = await run(request, prepare_rerank(request.url.path), rerank_documents)
        request.state.log.update(documents=len(body.texts), body=dialect.name)
        return JSONResponse(dialect.answer(body, ranked, deployment))

    async def health(request: Request) -> Response:
        problems = await run_in_threadpool(retriever.problems)
        response = json_response(_health(retriever, settings, problems))
        response.status_code = 503 if problems else 200
        return response

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(VERSION, limits_of(settings, retriever.recall.stage1.filterable)))

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    async def on_broken_artifact(request: Request, exc: ArtifactError) -> JSONResponse:
        """A file that fails at request time (damaged after init): this answer and /health say 503."""
        log.error("artifact failed during a request: %s", exc)
        retriever.broken[exc.path] = exc.problem
        return _error(503, "unavailable", [{"field": "server", "message": "an artifact is damaged; see /health"}])

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        retriever.close()  # after uvicorn has let in-flight requests finish: drain the batcher

    routes = [
        Route("/search", search, methods=["POST"]),
        Route("/rerank", rerank, methods=["POST"]),
        Route("/v1/rerank", rerank, methods=["POST"]),  # Cohere's v1 SDK (cohere.Client)
        Route("/v2/rerank", rerank, methods=["POST"]),  # the path Cohere's SDK (ClientV2) posts to
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    middleware = [
        Middleware(RequestLog, metrics=settings.metrics, namespace=settings.metrics_namespace),
        Middleware(CrashBarrier),
    ]
    if draining is not None:
        middleware.append(Middleware(RefuseWhileDraining, draining=draining))
    if settings.api_key is not None:
        middleware.append(Middleware(BearerAuth, key=settings.api_key.get_secret_value()))
    handlers = EXCEPTION_HANDLERS | {ArtifactError: on_broken_artifact}
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware, lifespan=lifespan)
    # `/search/` is a 404, not a redirect whose Location is built from the caller's Host header
    app.router.redirect_slashes = False
    return app


def lambda_handler(retriever: Retriever, settings: Settings):
    """The app behind Mangum, as Lambda calls it (API Gateway REST/HTTP API and Function URL events)."""
    from mangum import Mangum

    return Mangum(create_app(retriever, settings), lifespan="off")

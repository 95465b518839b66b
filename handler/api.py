"""The ASGI app: /search, Cohere-compatible /rerank, /health and the OpenAPI document.

Starlette plus pydantic bodies: FastAPI would add ≈ 0.2 s to every cold start for the same routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager, nullcontext
from pathlib import PurePath
from typing import TypeVar

from pydantic import BaseModel, ValidationError
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
from handler.cpu import this_cpu
from handler.errors import Cancelled, InvalidRequest, Stage1Unavailable, TooMuchWork
from handler.observability import RequestLog
from handler.openapi import DOCS_HTML, Limits, openapi_document
from handler.pipeline import Retriever
from handler.results import Reranked
from handler.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    RerankRequest,
    RerankResponse,
    RerankResult,
    SearchRequest,
    SearchResponse,
    TEIRerankRequest,
    TEIRerankResult,
)
from handler.settings import Settings
from handler.verify import ArtifactError

log = logging.getLogger(__name__)
VERSION = "0.1.0"
RETRY_AFTER_S = 1
UTF8_BOM = b"\xef\xbb\xbf"
Body = TypeVar("Body", bound=BaseModel)


class BadRequest(Exception):
    """A request that is not what the route accepts; `details` name the fields at fault."""

    def __init__(self, details: list[dict], status: int = 422, error: str = "invalid_request"):
        self.details, self.status, self.error = details, status, error


class FieldError(BadRequest):
    def __init__(self, field: str, message: str, status: int = 422, error: str = "invalid_request"):
        super().__init__([{"field": field, "message": message}], status, error)


def _error(status: int, error: str, details: list[dict], headers: dict | None = None) -> JSONResponse:
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or error
    body = ErrorResponse(error=error, message=message, details=details)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_name(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _check_content_type(request: Request) -> None:
    """JSON only: a text/plain or form POST is also a CORS "simple request" a browser sends unasked."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise FieldError(
            "content-type", f"must be application/json, not {media or 'missing'}", 415, "unsupported_media_type"
        )


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body, refused (413) past max_body_bytes before it is read, or as soon as it grows past it,
    and (408) when it does not arrive within body_timeout_s."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FieldError("body", f"larger than {limit} bytes", 413, "body_too_large")
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise FieldError("body", f"larger than {limit} bytes", 413, "body_too_large")
    except TimeoutError:
        raise FieldError("body", f"not received within {settings.body_timeout_s:g} s", 408, "body_timeout") from None
    return bytes(body)


async def read_json(request: Request, settings: Settings) -> bytes:
    _check_content_type(request)
    raw = (await read_body(request, settings)).removeprefix(UTF8_BOM)  # RFC 8259 lets a parser ignore it
    if not raw.strip():
        raise FieldError("body", "a JSON body is required")
    return raw


async def parse_body(request: Request, model: type[Body], settings: Settings) -> Body:
    return validate(await read_json(request, settings), model)


def validate(raw: bytes, model: type[Body]) -> Body:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise FieldError("body", "body is not valid JSON", 400, "invalid_json") from None
        raise BadRequest([{"field": _field_name(e["loc"]), "message": e["msg"]} for e in errors]) from None


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


def _check_query(query: str, settings: Settings, field: str = "query") -> None:
    if len(query) > settings.max_query_chars:
        raise FieldError(field, f"longer than {settings.max_query_chars} characters")


def _check_documents(texts: list[str], settings: Settings) -> None:
    if len(texts) > settings.max_documents:
        raise FieldError("documents", f"at most {settings.max_documents} documents")
    too_long = next((i for i, t in enumerate(texts) if len(t) > settings.max_document_chars), None)
    if too_long is not None:
        raise FieldError(f"documents.{too_long}", f"longer than {settings.max_document_chars} characters")


def _rerank_response(body: RerankRequest, ranked: list[Reranked], calibrated: bool) -> RerankResponse:
    results = [
        RerankResult(
            index=r.index,
            relevance_score=r.score,
            document={"text": r.text} if body.return_documents else None,
        )
        for r in ranked
    ]
    # calibrated false: relevance_score is the reranker's raw sigmoid, not a fitted probability
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}, "calibrated": calibrated}
    return RerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)


def _is_tei(raw: bytes) -> bool:
    """TEI's body names its passages `texts`; Cohere's `documents`."""
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and "texts" in body and "documents" not in body


def _tei_response(body: TEIRerankRequest, ranked: list[Reranked]) -> Response:
    results = [
        TEIRerankResult(
            index=r.index, score=r.logit if body.raw_scores else r.score, text=r.text if body.return_text else None
        ).model_dump(exclude_none=True)
        for r in ranked
    ]
    return JSONResponse(results)


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

    bi, cross = retriever.encoder.manifest, retriever.cross.manifest
    bi_conventions = {"pooling": bi.pooling, "normalize": bi.normalize}
    bi_conventions |= {"query_prompt": bi.query_prompt, "passage_prompt": bi.passage_prompt}
    # "uncalibrated": the score is the reranker's raw sigmoid and no floor came with it
    cross_conventions = {"head": cross.head, "calibrated": retriever.calibration.calibrated}
    return HealthResponse(
        status="broken" if problems else "ok",
        problems={PurePath(path).name: problem for path, problem in problems.items()},
        bi=model(bi, bi_conventions),
        cross=model(cross, cross_conventions),
        index=retriever.stage1.describe(),
        floor=retriever.floor,
        floor_source=retriever.floor_source,
        load_ms=retriever.load_ms,
        defaults={"recall_k": settings.recall_k, "top_k": settings.top_k},
        cpu=this_cpu().as_dict(),
    )


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_query_chars=settings.max_query_chars,
        max_documents=settings.max_documents,
        max_document_chars=settings.max_document_chars,
        max_body_bytes=settings.max_body_bytes,
        max_rerank_tokens=settings.max_rerank_tokens,
        bearer=settings.api_key is not None,
    )


def create_app(retriever: Retriever, settings: Settings) -> Starlette:
    # CPU: one request runs the models at a time, a few wait; the GPU batcher keeps its own queue.
    admission = None if settings.batching else Admission(settings.max_concurrent, settings.max_pending)

    async def run_models(request: Request, work, *args, **kwargs):
        """Model calls block: they run in the thread pool (where concurrent requests meet in the batcher),
        admitted by the gate, and stop between stages once the client has gone."""
        async with stop_on_disconnect(request) as stop, admission.slot() if admission else nullcontext():
            return await run_in_threadpool(work, *args, **kwargs, stop=stop)

    async def search(request: Request) -> Response:
        body = await parse_body(request, SearchRequest, settings)
        _check_query(body.query, settings)
        retriever.resolve(body.query, body.recall_k, body.top_k, body.mode)  # a bad value is a 422 before queueing
        asked = (body.query, body.recall_k, body.top_k, body.floor, body.mode)
        answer = await run_models(request, retriever.search, *asked, deadline_ms=body.deadline_ms)
        request.state.log.update(
            mode=answer.mode,
            recall_k=answer.recall_k,
            top_k=answer.top_k,
            candidates=answer.candidates,
            reranked=answer.reranked,
            deadline_cut=answer.deadline_cut,
            results=len(answer.results),
            refused=answer.refused,
            # the trace `twostage calibrate --traces` picks a floor from (an uncalibrated reranker's first step)
            best_score=None if answer.best_score is None else round(answer.best_score, 6),
            timings=answer.timings,
        )
        return json_response(SearchResponse.model_validate(answer, from_attributes=True))

    async def rerank(request: Request) -> Response:
        """Cohere v2's body (`documents`) at /rerank and /v2/rerank; TEI's (`texts`) at /rerank."""
        raw = await read_json(request, settings)
        tei = request.url.path == "/rerank" and _is_tei(raw)
        body = validate(raw, TEIRerankRequest if tei else RerankRequest)
        _check_query(body.query, settings)
        texts = body.texts if tei else body.texts()
        _check_documents(texts, settings)
        request.state.log.update(documents=len(texts), body="tei" if tei else "cohere")
        if tei:
            return _tei_response(body, await run_models(request, retriever.rerank, body.query, texts))
        ranked = await run_models(
            request, retriever.rerank, body.query, texts, body.top_n, max_tokens_per_doc=body.max_tokens_per_doc
        )
        return json_response(_rerank_response(body, ranked, retriever.calibration.calibrated), exclude_none=True)

    async def health(request: Request) -> Response:
        problems = await run_in_threadpool(retriever.problems)
        response = json_response(_health(retriever, settings, problems))
        response.status_code = 503 if problems else 200
        return response

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(VERSION, limits_of(settings)))

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
        Route("/v2/rerank", rerank, methods=["POST"]),  # the path Cohere's SDK (ClientV2) posts to
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    middleware = [Middleware(RequestLog, metrics=settings.metrics), Middleware(CrashBarrier)]
    if settings.api_key is not None:
        middleware.append(Middleware(BearerAuth, key=settings.api_key.get_secret_value()))
    handlers = EXCEPTION_HANDLERS | {ArtifactError: on_broken_artifact}
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware, lifespan=lifespan)


def lambda_handler(retriever: Retriever, settings: Settings):
    """The app behind Mangum, as Lambda calls it (API Gateway REST/HTTP API and Function URL events)."""
    from mangum import Mangum

    return Mangum(create_app(retriever, settings), lifespan="off")

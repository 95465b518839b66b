"""The ASGI app: /search, Cohere-compatible /rerank, /health and the OpenAPI document."""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from handler.batching import Overloaded
from handler.pipeline import Retriever
from handler.schemas import ErrorResponse, RerankRequest, RerankResponse, RerankResult, SearchRequest, SearchResponse
from handler.settings import Settings

log = logging.getLogger(__name__)
ERRORS = {code: {"model": ErrorResponse} for code in (400, 422, 503, 504)}
RETRY_AFTER_S = 1


class FieldError(Exception):
    """A request that parsed but breaks a rule that depends on settings or on several fields."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message


def _error(status: int, error: str, details: list[dict]) -> JSONResponse:
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or error
    body = ErrorResponse(error=error, message=message, details=details)
    return JSONResponse(body.model_dump(), status_code=status)


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        return _error(400, "invalid_json", [{"field": "body", "message": "body is not valid JSON"}])
    details = [{"field": _field_name(e["loc"]), "message": e["msg"]} for e in errors]
    return _error(422, "invalid_request", details)


async def _on_field_error(request: Request, exc: FieldError) -> JSONResponse:
    return _error(422, "invalid_request", [{"field": exc.field, "message": exc.message}])


async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(exc.status_code, "http_error", [{"field": "path", "message": str(exc.detail)}])


async def _on_overload(request: Request, exc: Overloaded) -> JSONResponse:
    response = _error(503, "overloaded", [{"field": "server", "message": f"busy ({exc}); retry later"}])
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _on_timeout(request: Request, exc: TimeoutError) -> JSONResponse:
    return _error(504, "timeout", [{"field": "server", "message": str(exc)}])


async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal_error", "message": "internal error", "details": []}, status_code=500)


def _resolve_k(body: SearchRequest, settings: Settings) -> tuple[int, int]:
    recall_k = body.recall_k or settings.recall_k
    top_k = body.top_k or min(settings.top_k, recall_k)
    if top_k > recall_k:
        raise FieldError("top_k", f"must not exceed recall_k ({recall_k})")
    return recall_k, top_k


def _check_query(query: str, settings: Settings, field: str = "query") -> None:
    if len(query) > settings.max_query_chars:
        raise FieldError(field, f"longer than {settings.max_query_chars} characters")


def create_app(retriever: Retriever, settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        retriever.close()  # after uvicorn has let in-flight requests finish: drain the batcher

    app = FastAPI(
        title="twostage",
        summary="Two-stage retrieval: dense recall, cross-encoder rerank, floor",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Overloaded, _on_overload)
    app.add_exception_handler(TimeoutError, _on_timeout)
    app.add_exception_handler(FieldError, _on_field_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_crash)

    @app.post("/search", response_model=SearchResponse, responses=ERRORS)
    def search(body: SearchRequest) -> SearchResponse:
        _check_query(body.query, settings)
        recall_k, top_k = _resolve_k(body, settings)
        if body.mode and body.mode not in retriever.modes:
            raise FieldError("mode", f"{body.mode!r} needs a BM25 artifact this index lacks; available: dense")
        return retriever.search(body.query, recall_k, top_k, body.floor, body.mode)

    @app.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
    def rerank(body: RerankRequest) -> RerankResponse:
        _check_query(body.query, settings)
        texts = body.texts()
        if len(texts) > settings.max_documents:
            raise FieldError("documents", f"at most {settings.max_documents} documents")
        too_long = next((i for i, t in enumerate(texts) if len(t) > settings.max_document_chars), None)
        if too_long is not None:
            raise FieldError(f"documents.{too_long}", f"longer than {settings.max_document_chars} characters")
        scores = retriever.rerank(body.query, texts)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[: body.top_n or len(texts)]
        results = [
            RerankResult(
                index=i,
                relevance_score=float(scores[i]),
                document={"text": texts[i]} if body.return_documents else None,
            )
            for i in order
        ]
        return RerankResponse(
            id=str(uuid.uuid4()),
            results=results,
            meta={"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        )

    @app.get("/health")
    def health() -> dict:
        def model(m):
            return {"source": m.source, "sha256": m.sha256, "quantization": m.quantization}

        return {
            "status": "ok",
            "bi": model(retriever.encoder.manifest),
            "cross": model(retriever.cross.manifest),
            "index": {"chunks": len(retriever.index), "documents": retriever.index.manifest.documents},
            "floor": retriever.floor,
            "floor_source": retriever.floor_source,
            "load_ms": retriever.load_ms,
            "defaults": {"recall_k": settings.recall_k, "top_k": settings.top_k},
        }

    return app

"""The OpenAPI document, generated from the pydantic bodies in `handler.schemas` on first request.

Built here rather than by FastAPI: importing FastAPI costs ≈ 0.2 s of every Lambda cold start, and
this document is all we used it for beyond Starlette and pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from handler.schemas import ErrorResponse, HealthResponse, RerankRequest, RerankResponse, SearchRequest, SearchResponse

REF = "#/components/schemas/{model}"
# (method, path, summary, request body, response body); every POST route may answer these errors.
ROUTES = [
    ("post", "/search", "Stage-1 recall, cross-encoder rerank and relevance floor", SearchRequest, SearchResponse),
    ("post", "/rerank", "Cohere-compatible rerank of the given documents", RerankRequest, RerankResponse),
    ("get", "/health", "Loaded models, index and floor", None, HealthResponse),
]
# Every status a POST route answers besides 200, and why (handler/api.py).
ERROR_STATUSES = {
    "400": "invalid JSON",
    "408": "the body did not arrive within body_timeout_s",
    "413": "body larger than max_body_bytes, or more reranking than max_rerank_tokens",
    "415": "content-type is not application/json",
    "422": "invalid field",
    "503": "overloaded (Retry-After) or an artifact is damaged",
    "504": "timed out",
}


@dataclass(frozen=True)
class Limits:
    """The deployment's request limits (Settings), written into the document where the schema can say them."""

    max_query_chars: int
    max_documents: int
    max_document_chars: int
    max_body_bytes: int
    max_rerank_tokens: int
    bearer: bool = False  # TWOSTAGE_API_KEY is set: POST routes need `Authorization: Bearer`


DOCS_HTML = """<!doctype html>
<html><head><title>twostage API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"})</script>
</body></html>"""


def _content(model: type[BaseModel], refs: dict) -> dict:
    return {"application/json": {"schema": refs[model]}}


def _operation(summary: str, request, response, refs: dict, limits: Limits) -> dict:
    responses = {"200": {"description": "OK", "content": _content(response, refs)}}
    operation = {"summary": summary, "responses": responses}
    if request is None:  # /health: 503 with the same body when a component is broken
        responses["503"] = {"description": "a component is broken", "content": _content(response, refs)}
        return operation
    operation["requestBody"] = {"required": True, "content": _content(request, refs)}
    for status, description in ERROR_STATUSES.items():
        responses[status] = {"description": description, "content": _content(ErrorResponse, refs)}
    responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    if limits.bearer:
        operation["security"] = [{"bearer": []}]
        responses["401"] = {"description": "missing or invalid API key", "content": _content(ErrorResponse, refs)}
    return operation


def _write_limits(schemas: dict, limits: Limits) -> None:
    """The checks handler/api.py makes with the deployment's settings, as schema keywords."""
    schemas["SearchRequest"]["properties"]["query"]["maxLength"] = limits.max_query_chars
    top_k = schemas["SearchRequest"]["properties"]["top_k"]
    top_k["description"] += " (a top_k above recall_k is a 422)"
    rerank = schemas["RerankRequest"]["properties"]
    rerank["query"]["maxLength"] = limits.max_query_chars
    rerank["documents"]["maxItems"] = limits.max_documents
    for option in rerank["documents"]["items"]["anyOf"]:
        (option if option.get("type") == "string" else schemas["RerankDocument"]["properties"]["text"])["maxLength"] = (
            limits.max_document_chars
        )


@cache
def openapi_document(version: str, limits: Limits) -> dict:
    models = {m for _, _, _, *bodies in ROUTES for m in bodies if m is not None} | {ErrorResponse}
    keyed = [(m, "validation" if m.__name__.endswith("Request") else "serialization") for m in models]
    schemas, top = models_json_schema(keyed, ref_template=REF)
    refs = {model: schemas[(model, mode)] for model, mode in keyed}
    components = {"schemas": top.get("$defs", {})}
    _write_limits(components["schemas"], limits)
    if limits.bearer:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    paths: dict[str, dict] = {}
    for method, path, summary, request, response in ROUTES:
        paths.setdefault(path, {})[method] = _operation(summary, request, response, refs, limits)
    description = (
        f"Limits: request bodies up to {limits.max_body_bytes} bytes; at most {limits.max_rerank_tokens} tokens "
        "reranked per request (pairs × tokens per pair, each cut to the reranker's max length), else 413."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "twostage",
            "version": version,
            "summary": "Two-stage retrieval: recall, rerank, floor",
            "description": description,
        },
        "paths": paths,
        "components": components,
    }

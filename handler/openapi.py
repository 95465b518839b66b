"""The OpenAPI document, generated from the pydantic bodies in `handler.schemas` on first request.

Built here rather than by FastAPI: importing FastAPI costs ≈ 0.2 s of every Lambda cold start, and
this document is all we used it for beyond Starlette and pydantic.
"""

from __future__ import annotations

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
ERROR_STATUSES = {"400": "invalid JSON", "422": "invalid field", "503": "overloaded", "504": "timed out"}

DOCS_HTML = """<!doctype html>
<html><head><title>twostage API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"})</script>
</body></html>"""


def _content(model: type[BaseModel], refs: dict) -> dict:
    return {"application/json": {"schema": refs[model]}}


def _operation(summary: str, request, response, refs: dict) -> dict:
    operation = {"summary": summary, "responses": {"200": {"description": "OK", "content": _content(response, refs)}}}
    if request is not None:
        operation["requestBody"] = {"required": True, "content": _content(request, refs)}
        for status, description in ERROR_STATUSES.items():
            operation["responses"][status] = {"description": description, "content": _content(ErrorResponse, refs)}
    return operation


@cache
def openapi_document(version: str) -> dict:
    models = {m for _, _, _, *bodies in ROUTES for m in bodies if m is not None} | {ErrorResponse}
    keyed = [(m, "validation" if m.__name__.endswith("Request") else "serialization") for m in models]
    schemas, top = models_json_schema(keyed, ref_template=REF)
    refs = {model: schemas[(model, mode)] for model, mode in keyed}
    paths: dict[str, dict] = {}
    for method, path, summary, request, response in ROUTES:
        paths.setdefault(path, {})[method] = _operation(summary, request, response, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "twostage", "version": version, "summary": "Two-stage retrieval: recall, rerank, floor"},
        "paths": paths,
        "components": {"schemas": top.get("$defs", {})},
    }

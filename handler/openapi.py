"""The OpenAPI document, generated from the pydantic bodies in `handler.schemas` on first request.

Built here rather than by FastAPI: importing FastAPI lengthens every Lambda cold start (docs/results.md §8), and
this document is all we used it for beyond Starlette and pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from handler.schemas import (
    ErrorResponse,
    HealthResponse,
    RerankRequest,
    RerankResponse,
    RerankV1Request,
    SearchRequest,
    SearchResponse,
    TEIRerankRequest,
    TEIRerankResponse,
)

REF = "#/components/schemas/{model}"
# /rerank takes either body and answers in the same family.
TEI_OR_COHERE = (RerankRequest, TEIRerankRequest)
TEI_OR_COHERE_ANSWER = (RerankResponse, TEIRerankResponse)
# (method, path, summary, request body, response body); every POST route may answer these errors.
ROUTES = [
    ("post", "/search", "Stage-1 recall, cross-encoder rerank and relevance floor", SearchRequest, SearchResponse),
    ("post", "/rerank", "Rerank documents: Cohere v2's body, or TEI's (`texts`)", TEI_OR_COHERE, TEI_OR_COHERE_ANSWER),
    ("post", "/v1/rerank", "Cohere v1 rerank, at the path cohere.Client posts to", RerankV1Request, RerankResponse),
    ("post", "/v2/rerank", "Cohere v2 rerank, at the path Cohere's SDK posts to", RerankRequest, RerankResponse),
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
    filterable: tuple[tuple[str, str], ...] = ()  # (field, type) a filter may name


JSON_TYPES = {"string": "string", "number": "number", "boolean": "boolean"}


def filter_schemas(filterable: tuple[tuple[str, str], ...]) -> dict[str, dict]:
    """The filter grammar (handler/filters.py) for this deployment's fields, as JSON Schema: a Filter is
    an object of fields (a value, or an object of operators on values of the field's type) and $and/$or
    lists of Filters."""
    ref = {"$ref": REF.format(model="Filter")}
    properties: dict[str, dict] = {
        "$and": {"type": "array", "minItems": 1, "items": ref},
        "$or": {"type": "array", "minItems": 1, "items": ref},
    }
    for name, kind in filterable:
        value = {"type": JSON_TYPES[kind]}
        values = {"type": "array", "items": value, "minItems": 1, "maxItems": 1000}
        operators = {"$eq": value, "$ne": value, "$in": values, "$nin": values, "$exists": {"type": "boolean"}}
        if kind == "number":
            operators |= {op: value for op in ("$gt", "$gte", "$lt", "$lte")}
        condition = {"type": "object", "properties": operators, "additionalProperties": False, "minProperties": 1}
        properties[name] = {"anyOf": [value, condition]}
    return {
        "Filter": {
            "type": "object",
            "description": "metadata filter: {field: value} or {field: {operator: value}}, $and / $or lists",
            "properties": properties,
            "additionalProperties": False,
            "minProperties": 1,
        }
    }


DOCS_HTML = """<!doctype html>
<html><head><title>twostage API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"})</script>
</body></html>"""


def _content(model: type[BaseModel] | tuple, refs: dict) -> dict:
    schema = {"anyOf": [refs[m] for m in model]} if isinstance(model, tuple) else refs[model]
    return {"application/json": {"schema": schema}}


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
    schemas |= filter_schemas(limits.filterable)
    search_filter = schemas["SearchRequest"]["properties"]["filter"]
    search_filter["anyOf"] = [{"$ref": REF.format(model="Filter")}, {"type": "null"}]
    top_k = schemas["SearchRequest"]["properties"]["top_k"]
    top_k["description"] += " (a top_k above a recall_k sent with it is a 422)"
    tei = schemas["TEIRerankRequest"]["properties"]
    tei["query"]["maxLength"] = limits.max_query_chars
    tei["texts"]["maxItems"] = limits.max_documents
    tei["texts"]["items"]["maxLength"] = limits.max_document_chars
    rerank = schemas["RerankRequest"]["properties"]
    rerank["query"]["maxLength"] = limits.max_query_chars
    rerank["documents"]["maxItems"] = limits.max_documents
    for option in rerank["documents"]["items"]["anyOf"]:
        (option if option.get("type") == "string" else schemas["RerankDocument"]["properties"]["text"])["maxLength"] = (
            limits.max_document_chars
        )
    v1 = schemas["RerankV1Request"]["properties"]
    v1["query"]["maxLength"] = limits.max_query_chars
    v1["documents"]["maxItems"] = limits.max_documents
    for option in v1["documents"]["items"]["anyOf"]:
        if option.get("type") == "string":
            option["maxLength"] = limits.max_document_chars


@cache
def openapi_document(version: str, limits: Limits) -> dict:
    bodies = [b for _, _, _, *pair in ROUTES for b in pair if b is not None]
    models = {m for b in bodies for m in (b if isinstance(b, tuple) else (b,))} | {ErrorResponse}
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

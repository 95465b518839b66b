"""Request bodies: read within the limits, parsed once, validated with bounded work and a bounded answer.

A body is JSON only, at most `max_body_bytes`, arriving within `body_timeout_s`. It is parsed once by
pydantic-core's parser, which stops at 200 levels of nesting (a 400, never a RecursionError). Lists
of documents longer than the deployment takes are refused by their length before any item is
validated, and a 422 lists the first `MAX_ERRORS` problems and how many more, so a bad 1 MiB body
costs milliseconds and answers in a few KB (docs/results.md §10).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from handler.settings import LimitSettings

UTF8_BOM = b"\xef\xbb\xbf"
MAX_ERRORS = 20
DOCUMENT_LISTS = ("documents", "texts")  # the fields whose length max_documents bounds
Body = TypeVar("Body", bound=BaseModel)


class BadRequest(Exception):
    """A request that is not what the route accepts; `details` name the fields at fault."""

    def __init__(self, details: list[dict], status: int = 422, error: str = "invalid_request"):
        self.details, self.status, self.error = details, status, error


class FieldError(BadRequest):
    def __init__(self, field: str, message: str, status: int = 422, error: str = "invalid_request"):
        super().__init__([{"field": field, "message": message}], status, error)


def _check_content_type(request: Request) -> None:
    """JSON only: a text/plain or form POST is also a CORS "simple request" a browser sends unasked."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise FieldError(
            "content-type", f"must be application/json, not {media or 'missing'}", 415, "unsupported_media_type"
        )


async def read_body(request: Request, limits: LimitSettings) -> bytes:
    """The body, refused (413) past max_body_bytes before it is read, or as soon as it grows past it,
    and (408) when it does not arrive within body_timeout_s."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FieldError("body", f"larger than {limit} bytes", 413, "body_too_large")
    body = bytearray()
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise FieldError("body", f"larger than {limit} bytes", 413, "body_too_large")
    except TimeoutError:
        raise FieldError("body", f"not received within {limits.body_timeout_s:g} s", 408, "body_timeout") from None
    return bytes(body)


async def read_json(request: Request, limits: LimitSettings) -> bytes:
    _check_content_type(request)
    raw = (await read_body(request, limits)).removeprefix(UTF8_BOM)  # RFC 8259 lets a parser ignore it
    if not raw.strip():
        raise FieldError("body", "a JSON body is required")
    return raw


def parse_json(raw: bytes) -> Any:
    """The one parse of a body; malformed or nested past 200 levels is a 400. NaN and Infinity parse, so
    that the field that may not hold them answers 422 naming itself."""
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=True)
    except ValueError as error:
        raise FieldError("body", f"body is not valid JSON ({error})", 400, "invalid_json") from None


def validate(parsed: Any, model: type[Body], limits: LimitSettings) -> Body:
    """`parsed` as `model` (strict), with its document lists bounded before their items are looked at."""
    if isinstance(parsed, dict):
        for field in DOCUMENT_LISTS:
            items = parsed.get(field)
            if isinstance(items, list) and len(items) > limits.max_documents:
                raise FieldError(field, f"at most {limits.max_documents} documents, not {len(items)}")
    try:
        return model.model_validate(parsed)
    except ValidationError as error:
        raise BadRequest(capped_details(error)) from None


def capped_details(error: ValidationError) -> list[dict]:
    """The first MAX_ERRORS problems, each naming its field, and a count of the rest."""
    details = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in error.errors(include_url=False, include_context=False, include_input=False)[:MAX_ERRORS]
    ]
    more = error.error_count() - MAX_ERRORS
    if more > 0:
        details.append({"field": "body", "message": f"and {more} more problems"})
    return details

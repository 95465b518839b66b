"""What a query and caller documents must be, checked once, wherever they arrive (HTTP or the Python API)."""

from __future__ import annotations

import re

from handler.errors import InvalidRequest

# A query needs one character that is not whitespace, a control, a zero-width/format character, a
# combining mark, a variation selector or an invisible filler. One regex for this check and the OpenAPI
# document's `pattern`: clients and fuzzers see one rule. (BMP only: the pattern travels in JSON Schema.)
VISIBLE_PATTERN = (
    r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u0300-\u036f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u1ab0-\u1aff"
    r"\u1dc0-\u1dff\u200b-\u200f\u2028-\u202e\u2060-\u206f\u20d0-\u20ff\u2800\u3164\ufe00-\ufe0f\ufe20-\ufe2f"
    r"\ufeff\uffa0\ufff9-\ufffb]"
)
_VISIBLE = re.compile(VISIBLE_PATTERN)


def has_visible_text(text: str) -> bool:
    return bool(_VISIBLE.search(text))


def check_query(query: str, max_chars: int, field: str = "query") -> str:
    """The query with its surrounding whitespace removed; InvalidRequest when it is too long or blank."""
    if len(query) > max_chars:
        raise InvalidRequest(field, f"longer than {max_chars} characters")
    if not has_visible_text(query):
        raise InvalidRequest(
            field, "must contain a visible character (not only spaces, control, zero-width or combining characters)"
        )
    return query.strip()


def check_documents(texts: list[str], max_documents: int, max_chars: int) -> None:
    if len(texts) > max_documents:
        raise InvalidRequest("documents", f"at most {max_documents} documents")
    too_long = next((i for i, t in enumerate(texts) if len(t) > max_chars), None)
    if too_long is not None:
        raise InvalidRequest(f"documents.{too_long}", f"longer than {max_chars} characters")

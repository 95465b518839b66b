"""Bad input: always a 4xx JSON error that names the field, never a 500 or a traceback."""

import json

import pytest

from tests.conftest import load_event

LONG = "x" * 3000
CASES = [
    ("/search", {"query": ""}, 422, "query"),
    ("/search", {"query": "   \n\t"}, 422, "query"),
    ("/search", {"query": 123}, 422, "query"),
    ("/search", {}, 422, "query"),
    ("/search", {"query": LONG}, 422, "query"),
    ("/search", {"query": "\u200b\u200d\ufeff"}, 422, "query"),  # zero-width only
    ("/search", {"query": "\x00\x07\x1b\u2028"}, 422, "query"),  # controls and a line separator
    ("/search", '{"query": "q", "floor": NaN}', 422, "floor"),
    ("/search", {"query": "q", "recall_k": 0}, 422, "recall_k"),
    ("/search", {"query": "q", "recall_k": 100000}, 422, "recall_k"),
    ("/search", {"query": "q", "recall_k": "10"}, 422, "recall_k"),
    ("/search", {"query": "q", "top_k": 2.5}, 422, "top_k"),
    ("/search", {"query": "q", "top_k": True}, 422, "top_k"),
    ("/search", {"query": "q", "recall_k": 5, "top_k": 10}, 422, "top_k"),
    ("/search", {"query": "q", "floor": 1.5}, 422, "floor"),
    ("/search", {"query": "q", "floor": "high"}, 422, "floor"),
    ("/search", {"query": "q", "topk": 3}, 422, "topk"),
    ("/search", {"query": "q", "mode": "sparse"}, 422, "mode"),
    ("/search", [1, 2], 422, "body"),
    ("/search", "{not json", 400, "body"),
    ("/search", None, 422, "body"),
    ("/rerank", {"query": "q", "documents": []}, 422, "documents"),
    ("/rerank", {"query": "q"}, 422, "documents"),
    ("/rerank", {"query": "q", "documents": ["a", 5]}, 422, "documents.1"),
    ("/rerank", {"query": "q", "documents": ["a"] * 1001}, 422, "documents"),
    ("/rerank", {"query": "q", "documents": ["a", "y" * 20001]}, 422, "documents.1"),
    ("/rerank", {"query": "", "documents": ["a"]}, 422, "query"),
    ("/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n"),
]


@pytest.mark.parametrize("event", ["apigw_v1_rest.json", "apigw_v2_http.json"])
@pytest.mark.parametrize("path, body, status, field", CASES)
def test_bad_input_is_a_4xx_naming_the_field(lambda_handler, event, path, body, status, field):
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    response = lambda_handler(load_event(event, "POST", path, raw), None)
    assert response["statusCode"] == status
    error = json.loads(response["body"])
    assert error["error"] in {"invalid_request", "invalid_json"}
    assert any(d["field"] == field or d["field"].startswith(field + ".") for d in error["details"]), error
    assert field.split(".")[0] in error["message"]


@pytest.mark.parametrize("method, path, status", [("GET", "/nowhere", 404), ("GET", "/search", 405)])
def test_unknown_routes_and_methods_are_json(lambda_handler, method, path, status):
    response = lambda_handler(load_event("apigw_v2_http.json", method, path, None), None)
    assert response["statusCode"] == status
    assert json.loads(response["body"])["error"] == "http_error"

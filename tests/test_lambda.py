"""The Lambda entry point invoked with real API Gateway / Function URL event shapes."""

import base64
import json
import re

import pytest

from handler.cpu import INT8_FEATURES, SHOWN
from handler.schemas import RerankResponse, SearchResponse
from handler.settings import Settings
from tests.conftest import load_event

EVENTS = ["apigw_v1_rest.json", "apigw_v2_http.json", "lambda_function_url.json"]
QUERY = "How much Veltrazine should a 7-year-old child take?"


def invoke(handler, name, method, path, body=None):
    response = handler(load_event(name, method, path, body), None)
    return response["statusCode"], json.loads(response["body"]), response


@pytest.mark.parametrize("event", EVENTS)
def test_search_answers_every_event_shape(lambda_handler, event):
    status, body, response = invoke(
        lambda_handler, event, "POST", "/search", {"query": QUERY, "recall_k": 20, "top_k": 5}
    )
    assert status == 200
    assert "application/json" in (response.get("headers") or {}).get("content-type", "")
    answer = SearchResponse.model_validate(body)
    assert (answer.recall_k, answer.top_k, answer.candidates) == (20, 5, 20)
    assert 1 <= len(answer.results) <= 5
    scores = [hit.score for hit in answer.results]
    assert scores == sorted(scores, reverse=True) and answer.best_score == max(scores)  # one order, one score
    assert all(score >= answer.floor for score in scores)
    score_model = {"logit", "cosine", "cosine_of", "ln_stage1_rank", "intercept", "calibrated", "calibrated_on"}
    assert set(answer.score_model) == score_model and answer.score_model["calibrated_on"] is None  # uncalibrated
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(1 <= hit.stage1_rank <= 20 for hit in answer.results)
    assert answer.mode == "hybrid"  # the deployment default when the index has a BM25 artifact
    assert answer.timings.total_ms >= answer.timings.rerank_ms > 0 and answer.timings.bm25_ms > 0


@pytest.mark.parametrize("event", EVENTS)
def test_floor_above_every_score_refuses(lambda_handler, event):
    status, body, _ = invoke(lambda_handler, event, "POST", "/search", {"query": QUERY, "floor": 1.0})
    assert status == 200
    assert body["refused"] is True and body["results"] == []
    assert body["best_score"] < 1.0 and "no evidence" in body["reason"]


def test_floor_keeps_only_results_at_or_above_it(lambda_handler):
    _, first, _ = invoke(lambda_handler, EVENTS[1], "POST", "/search", {"query": QUERY, "recall_k": 30, "top_k": 30})
    scores = [h["score"] for h in first["results"]]
    floor = scores[len(scores) // 2]
    _, body, _ = invoke(
        lambda_handler, EVENTS[1], "POST", "/search", {"query": QUERY, "recall_k": 30, "top_k": 30, "floor": floor}
    )
    assert body["refused"] is False and body["floor"] == floor
    assert [h["score"] for h in body["results"]] == [s for s in scores if s >= floor]


def test_base64_body_is_decoded(lambda_handler):
    event = load_event("lambda_function_url.json", "POST", "/search", None)
    event["body"] = base64.b64encode(json.dumps({"query": QUERY, "top_k": 3}).encode()).decode()
    event["isBase64Encoded"] = True
    response = lambda_handler(event, None)
    assert response["statusCode"] == 200 and len(json.loads(response["body"])["results"]) == 3


@pytest.mark.parametrize("event", EVENTS)
def test_rerank_is_cohere_v2_compatible(lambda_handler, event):
    documents = ["Veltrazine for children: 0.25 mg per kg.", "Water the fern weekly.", "Error E240."]
    status, body, _ = invoke(
        lambda_handler,
        event,
        "POST",
        "/rerank",
        {"model": "rerank-v3.5", "query": QUERY, "documents": documents, "top_n": 2},
    )
    assert status == 200
    answer = RerankResponse.model_validate(body)
    assert len(answer.results) == 2
    assert answer.results[0].relevance_score >= answer.results[1].relevance_score
    assert {r.index for r in answer.results} <= {0, 1, 2}
    assert answer.meta["api_version"]["version"] == "2"


def test_rerank_returns_documents_when_asked(lambda_handler):
    _, body, _ = invoke(
        lambda_handler,
        EVENTS[1],
        "POST",
        "/rerank",
        {"query": "q", "documents": [{"text": "a"}, "b"], "return_documents": True},
    )
    assert sorted(r["document"]["text"] for r in body["results"]) == ["a", "b"]


def test_health_and_openapi(lambda_handler, artifacts):
    status, body, _ = invoke(lambda_handler, EVENTS[0], "GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["index"]["documents"] == 220
    assert body["bi"]["quantization"]["dtype"] == "int8"
    cpu = body["cpu"]  # what int8 speed to expect from the host this instance landed on
    assert cpu["cpus"] >= 1 and cpu["arch"] and set(cpu["isa"]) <= set(SHOWN)
    assert cpu["int8"] in (*INT8_FEATURES, "none")
    status, spec, _ = invoke(lambda_handler, EVENTS[1], "GET", "/openapi.json")
    assert status == 200 and {"/search", "/rerank", "/health"} <= set(spec["paths"])
    search = spec["paths"]["/search"]["post"]
    request_schema = search["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema == {"$ref": "#/components/schemas/SearchRequest"}
    assert {"200", "400", "408", "413", "415", "422", "503"} <= set(search["responses"])
    query = spec["components"]["schemas"]["SearchRequest"]["properties"]["query"]
    assert query["maxLength"] == 2048  # the limit the handler enforces, in the document
    assert "/" not in body["bi"]["source"]  # no build-host paths
    # Every reference resolves inside the document (a broken $ref breaks client generators).
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs and refs <= set(spec["components"]["schemas"])
    docs = lambda_handler(load_event(EVENTS[1], "GET", "/docs", None), None)
    assert docs["statusCode"] == 200 and "openapi.json" in docs["body"]


@pytest.mark.parametrize("mode, sides", [("dense", {"dense"}), ("bm25", {"bm25"}), ("hybrid", {"dense", "bm25"})])
def test_search_modes_say_which_side_found_each_candidate(lambda_handler, mode, sides):
    status, body, _ = invoke(
        lambda_handler,
        EVENTS[1],
        "POST",
        "/search",
        {"query": "error E240 ThermoLine X2", "mode": mode, "recall_k": 30, "top_k": 30},
    )
    assert status == 200 and body["mode"] == mode
    found = set().union(*(hit["found_by"] for hit in body["results"]))
    assert found == sides
    assert "thermoline-x2-e240" in [hit["id"] for hit in body["results"]]
    for hit in body["results"]:
        assert -1.0 <= hit["stage1_similarity"] <= 1.0  # filled in for BM25-only finds too (calibration uses it)


@pytest.mark.parametrize(
    "init_type, verify", [("snap-start", "full"), ("provisioned-concurrency", "full"), ("on-demand", "quick")]
)
def test_inits_ahead_of_callers_verify_every_artifact_in_full(monkeypatch, init_type, verify):
    from handler.ahead_of_time import settings_for_init

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", init_type)
    assert settings_for_init(Settings()).verify == verify

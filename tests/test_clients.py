"""The clients users already have work unchanged: Cohere's SDK (ClientV2 → /v2/rerank) over loopback, and
TEI's /rerank body and answer."""

from __future__ import annotations

import httpx
import pytest

from handler.api import create_app
from tests.conftest import uvicorn_on_loopback

DOCUMENTS = [
    "Veltrazine for children aged 6 to 11: 5 mg once a day with food.",
    "The ThermoLine heat pump shows E240 when its outdoor sensor fails.",
    "Ferns prefer shade and damp soil.",
]


@pytest.fixture(scope="module")
def url(retriever, settings):
    with uvicorn_on_loopback(create_app(retriever, settings)) as base:
        yield base


def test_cohere_sdk_reranks_through_v2(url, retriever):
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(base_url=url, api_key="unused")
    answer = client.rerank(model="any", query="Veltrazine dose for a child", documents=DOCUMENTS, top_n=2)
    assert len(answer.results) == 2
    expected = retriever.rerank_documents("Veltrazine dose for a child", DOCUMENTS, top_n=2)
    assert [r.index for r in answer.results] == [r.index for r in expected]
    assert [r.relevance_score for r in answer.results] == pytest.approx([r.score for r in expected])


def test_cohere_max_tokens_per_doc_cuts_each_document(url, retriever):
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(base_url=url, api_key="unused")
    long_document = DOCUMENTS[1] + " Unrelated words follow here." * 50
    cut = client.rerank(model="any", query="E240", documents=[long_document], max_tokens_per_doc=8)
    expected = retriever.rerank_documents("E240", [long_document], max_tokens_per_doc=8)
    assert cut.results[0].relevance_score == pytest.approx(expected[0].score)
    whole = retriever.rerank_documents("E240", [long_document])
    assert expected[0].score != pytest.approx(whole[0].score)  # the cut really changed what was read


def test_cohere_v1_style_body_returns_documents(url, retriever):
    body = {"query": "E240", "documents": [{"text": d} for d in DOCUMENTS], "return_documents": True, "top_n": 1}
    answer = httpx.post(f"{url}/rerank", json=body).json()
    best = retriever.rerank_documents("E240", DOCUMENTS)[0].index  # the test reranker is random: compare, don't assume
    assert answer["results"][0] == {**answer["results"][0], "index": best, "document": {"text": DOCUMENTS[best]}}


def test_tei_rerank_body_and_answer(url, retriever):
    answer = httpx.post(f"{url}/rerank", json={"query": "E240 error", "texts": DOCUMENTS, "return_text": True})
    assert answer.status_code == 200
    results = answer.json()
    expected = retriever.rerank_documents("E240 error", DOCUMENTS)
    assert isinstance(results, list) and [r["index"] for r in results] == [r.index for r in expected]
    assert results[0]["text"] == DOCUMENTS[expected[0].index]
    assert all(0 <= r["score"] <= 1 for r in results)
    raw = httpx.post(f"{url}/rerank", json={"query": "E240 error", "texts": DOCUMENTS, "raw_scores": True}).json()
    logits = {r.index: r.logit for r in retriever.rerank_documents("E240 error", DOCUMENTS)}
    assert {r["index"]: r["score"] for r in raw} == pytest.approx(logits)
    assert "text" not in raw[0]


def test_cohere_v1_sdk_reranks_through_v1(url, retriever):
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(base_url=url, api_key="unused")
    answer = client.rerank(model="any", query="Veltrazine dose for a child", documents=DOCUMENTS, top_n=2)
    expected = retriever.rerank_documents("Veltrazine dose for a child", DOCUMENTS, top_n=2)
    assert [r.index for r in answer.results] == [r.index for r in expected]
    assert [r.relevance_score for r in answer.results] == pytest.approx([r.score for r in expected])
    assert answer.meta.api_version.version == "1"


def test_cohere_v1_documents_are_read_by_rank_fields_and_returned_whole(url, retriever):
    documents = [{"title": "Dosage", "body": d, "id": i} for i, d in enumerate(DOCUMENTS)]
    body = {"query": "E240", "documents": documents, "rank_fields": ["title", "body"], "return_documents": True}
    answer = httpx.post(f"{url}/v1/rerank", json=body).json()
    read = [f"title: Dosage\nbody: {d}" for d in DOCUMENTS]
    expected = retriever.rerank_documents("E240", read)
    assert [r["index"] for r in answer["results"]] == [r.index for r in expected]
    assert answer["results"][0]["document"] == documents[expected[0].index]  # every field, as sent
    missing = httpx.post(f"{url}/v1/rerank", json={"query": "E240", "documents": [{"body": "x"}]})
    assert missing.status_code == 422 and "text" in missing.json()["message"]


def test_rerank_answers_name_the_model_and_the_tokens_read(url, retriever):
    answer = httpx.post(f"{url}/v2/rerank", json={"query": "E240", "documents": DOCUMENTS, "top_n": 1}).json()
    tokens = sum(r.tokens for r in retriever.rerank_documents("E240", DOCUMENTS))
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens} and tokens > 0
    assert answer["model"] == retriever.rerank.cross.manifest.source.rsplit("/", 1)[-1]
    assert answer["object"] == "rerank" and len(answer["results"]) == 1
    raw = httpx.post(f"{url}/rerank", json={"query": "E240", "documents": DOCUMENTS, "raw_scores": True}).json()
    logits = {r.index: r.logit for r in retriever.rerank_documents("E240", DOCUMENTS)}
    assert {r["index"]: r["relevance_score"] for r in raw["results"]} == pytest.approx(logits)

"""Deadline-aware rerank: within a small deadline fewer candidates are reranked, in stage-1 order, and the
response says so; with a generous one the answer is today's, exactly."""

from __future__ import annotations

import dataclasses
import time

from starlette.testclient import TestClient

from handler.api import create_app
from handler.deadline import RerankRate

QUERY = "What does error E240 mean on the ThermoLine?"


class SlowRate(RerankRate):
    """A fixed, slow estimate (the decisions are still the real code's)."""

    def observe(self, tokens: int, seconds: float) -> None:
        pass


class SlowCPU:
    """The real cross-encoder on a CPU that reranks `tokens_per_s`: each run takes what it would there."""

    def __init__(self, cross, tokens_per_s: float):
        self.cross, self.tokens_per_s = cross, tokens_per_s
        self.manifest, self.max_length, self.tokenizer = cross.manifest, cross.max_length, cross.tokenizer

    def encode(self, query, passages):
        return self.cross.encode(query, passages)

    def logits_encoded(self, encodings, stop=None):
        time.sleep(sum(len(e.ids) for e in encodings) / self.tokens_per_s)
        return self.cross.logits_encoded(encodings, stop)


def slow(retriever, tokens_per_s: float = 2000.0):
    """≈ 25 sample pairs a second, and a rate estimate that starts from a wrong guess and learns."""
    slow = dataclasses.replace(
        retriever.rerank, cross=SlowCPU(retriever.rerank.cross, tokens_per_s), rate=RerankRate(20_000.0)
    )
    return dataclasses.replace(retriever, rerank=slow)


def test_a_small_deadline_reranks_fewer_candidates_in_stage1_order(retriever):
    slow_one = slow(retriever)
    slow_one.search(QUERY, recall_k=5, top_k=5)  # one request teaches the rate (the priming request does)
    started = time.perf_counter()
    answer = slow_one.search(QUERY, recall_k=100, top_k=10, deadline_ms=300)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert answer.deadline_cut and 0 < answer.reranked < answer.candidates
    assert all(r.stage1_rank <= answer.reranked for r in answer.results)  # drawn from the reranked only
    scores = [r.score for r in answer.results]
    assert scores == sorted(scores, reverse=True)
    assert elapsed_ms < 300 + 250  # the deadline plus a bounded overhead (one batch's misestimate, the floor)


def test_a_generous_deadline_answers_exactly_as_without_one(retriever):
    plain = retriever.search(QUERY, recall_k=50, top_k=10)
    timed = retriever.search(QUERY, recall_k=50, top_k=10, deadline_ms=60_000)
    assert not timed.deadline_cut and timed.reranked == plain.reranked and timed.candidates == plain.candidates
    assert [(r.id, r.chunk, r.score) for r in timed.results] == [(r.id, r.chunk, r.score) for r in plain.results]


def test_a_deadline_too_short_for_any_pair_says_so(retriever):
    answer = dataclasses.replace(retriever, rerank=dataclasses.replace(retriever.rerank, rate=SlowRate(1.0))).search(
        QUERY, recall_k=20, deadline_ms=1
    )
    assert answer.refused and answer.reranked == 0 and answer.deadline_cut
    assert answer.reason.startswith("deadline:")


def test_the_rate_is_learned_from_runs():
    rate = RerankRate(5000.0)
    rate.observe(10_000, 1.0)
    assert rate.tokens_per_s == 10_000  # the first measurement replaces the prior
    rate.observe(20_000, 1.0)
    assert 10_000 < rate.tokens_per_s < 20_000
    assert rate.pairs_within([100, 100, 100], 0.02) == 2


def test_deadline_over_http(retriever, settings):
    slow_one = slow(retriever)
    slow_one.search(QUERY, recall_k=5, top_k=5)
    client = TestClient(create_app(slow_one, settings))
    body = client.post("/search", json={"query": QUERY, "recall_k": 100, "deadline_ms": 300}).json()
    assert body["deadline_ms"] == 300 and body["deadline_cut"] and body["reranked"] < body["candidates"]

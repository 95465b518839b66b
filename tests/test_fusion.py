import numpy as np
import pytest

from handler.fusion import reciprocal_rank, single, weighted


def sides():
    return {
        "dense": (np.array([1, 2, 3]), np.array([0.9, 0.8, 0.1])),
        "bm25": (np.array([3, 4]), np.array([12.0, 3.0])),
    }


def test_rrf_sums_reciprocal_ranks_over_the_lists_that_found_a_candidate():
    fused = {c.label: c for c in reciprocal_rank(sides(), k=60)}
    assert fused[3].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    assert fused[3].found_by == ["dense", "bm25"] and fused[4].found_by == ["bm25"]
    assert fused[3].similarity == pytest.approx(0.1) and fused[4].similarity is None
    assert [c.label for c in reciprocal_rank(sides())][:2] == [3, 1]


def test_weighted_fusion_normalises_each_side():
    fused = {c.label: c.score for c in weighted(sides(), dense_weight=0.5)}
    assert fused[1] == pytest.approx(0.5)  # best dense, unseen by BM25
    assert fused[3] == pytest.approx(0.5)  # worst dense (0) + best BM25 (0.5)
    assert fused[4] == pytest.approx(0.0)
    assert {c.label for c in weighted(sides(), dense_weight=1.0)[:1]} == {1}


def test_single_side_keeps_its_own_order_and_scores():
    labels = [c.label for c in single({"bm25": sides()["bm25"]})]
    assert labels == [3, 4]

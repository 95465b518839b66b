"""Fusing the dense and BM25 candidate lists of stage 1."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Sides = dict[str, tuple[np.ndarray, np.ndarray]]  # side name → (labels, scores), best first


@dataclass
class Candidate:
    label: int | str  # the stage-1 store's key: an hnswlib label or a Qdrant point id
    score: float  # the stage-1 score that ranked it (cosine, BM25 or fused)
    found_by: list[str] = field(default_factory=list)
    similarity: float | None = None  # bi-encoder cosine (set by the dense side, else filled in after fusion)


def _merge(sides: Sides, contributions: dict[str, list[float]]) -> list[Candidate]:
    merged: dict[int, Candidate] = {}
    for side, (labels, scores) in sides.items():
        for label, score, value in zip(labels.tolist(), scores.tolist(), contributions[side], strict=True):
            candidate = merged.setdefault(label, Candidate(label, 0.0))
            candidate.score += value
            candidate.found_by.append(side)
            if side == "dense":
                candidate.similarity = score
    return sorted(merged.values(), key=lambda c: -c.score)


def single(sides: Sides) -> list[Candidate]:
    """One side alone: its own scores rank the candidates."""
    return _merge(sides, {side: scores.tolist() for side, (_, scores) in sides.items()})


def reciprocal_rank(sides: Sides, k: int = 60) -> list[Candidate]:
    """RRF (Cormack et al. 2009): the sum of 1 / (k + rank) over the lists that found a candidate."""
    return _merge(
        sides, {side: [1.0 / (k + r) for r in range(1, len(labels) + 1)] for side, (labels, _) in sides.items()}
    )


def _min_max(scores: np.ndarray) -> np.ndarray:
    span = float(scores.max() - scores.min()) if len(scores) else 0.0
    return (scores - scores.min()) / span if span > 0 else np.ones_like(scores)


def weighted(sides: Sides, dense_weight: float = 0.5) -> list[Candidate]:
    """Convex combination of min-max normalised scores; a side that missed a candidate adds 0."""
    weights = {"dense": dense_weight, "bm25": 1.0 - dense_weight}
    return _merge(sides, {side: (weights[side] * _min_max(scores)).tolist() for side, (_, scores) in sides.items()})

"""What the pipeline returns: plain typed results (the HTTP layer maps them to its schemas, the Python API
hands them out as they are)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Result:
    """One passage of an answer. `score` is the calibrated 0–1 relevance the floor applies to."""

    id: str
    chunk: int
    title: str
    text: str
    metadata: dict[str, Any]
    score: float
    logit: float
    stage1_rank: int
    stage1_score: float
    stage1_similarity: float | None
    found_by: list[str]


@dataclass(frozen=True)
class SearchAnswer:
    query: str
    results: list[Result]
    refused: bool  # no candidate reached the floor: no evidence
    reason: str | None
    floor: float
    best_score: float | None
    recall_k: int
    top_k: int
    mode: str
    score_model: dict[str, float | bool | str | None]  # score = sigmoid(logit·a + cosine·c + ln(stage-1 rank)·d + b)
    candidates: int  # stage-1 candidates
    reranked: int  # of those, read by the served reranker: all, unless the cascade or a deadline read fewer
    first_pass: int  # of those, scored by the cascade's first-pass model (0: none ran)
    cascade_keep: int  # the served reranker's share the cascade asked for (0: every candidate)
    deadline_ms: int | None
    deadline_cut: bool
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage and total_ms


@dataclass(frozen=True)
class Reranked:
    """A caller's document, scored: `index` into the documents given, best first."""

    index: int
    score: float
    logit: float
    text: str
    tokens: int = 0  # the pair's tokens the reranker read (a response's usage)

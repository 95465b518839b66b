"""Request and response bodies of the HTTP API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from handler.settings import MAX_RECALL_K, MAX_TOP_K
from handler.types import VISIBLE_PATTERN, has_visible_text


def _not_blank(value: str) -> str:
    if not has_visible_text(value):
        raise ValueError("must contain a visible character (not only spaces, control or zero-width characters)")
    return value.strip()


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer includes 10.0; strict mode still refuses "10", true and 2.5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


QUERY_SCHEMA = {"pattern": VISIBLE_PATTERN}


class SearchRequest(BaseModel):
    # strict: "10" is not an int and true is not a number; extra: a typo like "topk" is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    query: str = Field(description="the question or keywords", json_schema_extra=QUERY_SCHEMA)
    recall_k: int | None = Field(None, ge=1, le=MAX_RECALL_K, description="stage-1 candidates to rerank")
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description="results to return, at most recall_k")
    floor: float | None = Field(None, ge=0.0, le=1.0, description="minimum relevance score to keep a result")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="stage-1 mode (default: deployment's)")
    deadline_ms: int | None = Field(
        None,
        ge=1,
        le=600_000,
        description="answer within this many ms: candidates are reranked in stage-1 order while they fit, and "
        "the results are drawn from those (default: the deployment's, if any)",
    )

    _query = field_validator("query")(_not_blank)
    _counts = field_validator("recall_k", "top_k", "deadline_ms", mode="before")(_whole_number)


class Hit(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # from handler.results.Result
    id: str = Field(description="parent document id")
    chunk: int = Field(description="chunk number within the document (0 when unchunked)")
    title: str
    text: str
    metadata: dict[str, Any]
    score: float = Field(
        description="relevance, 0–1: a calibrated probability from the reranker's logit, the bi-encoder cosine and "
        "the stage-1 rank (score_model); results are sorted by it and the floor applies to it"
    )
    logit: float = Field(description="raw cross-encoder logit")
    stage1_rank: int = Field(description="1-based rank in the stage-1 candidates")
    stage1_score: float = Field(description="the stage-1 score: cosine (dense), BM25 (bm25) or fused (hybrid)")
    stage1_similarity: float | None = Field(description="bi-encoder cosine of query and chunk, whichever side found it")
    found_by: list[str] = Field(description="stage-1 side(s) that retrieved it: dense, bm25")


class Timings(BaseModel):
    embed_ms: float = 0.0
    ann_ms: float = 0.0
    bm25_ms: float = 0.0
    qdrant_ms: float = Field(0.0, description="stage 1 on Qdrant: one round trip for every side")
    fuse_ms: float = 0.0
    fetch_ms: float = 0.0
    rerank_ms: float = 0.0
    floor_ms: float = 0.0
    total_ms: float


class SearchResponse(BaseModel):
    query: str
    results: list[Hit]
    refused: bool = Field(description="true when no candidate reached the floor: no evidence")
    reason: str | None
    floor: float
    best_score: float | None
    recall_k: int
    top_k: int
    mode: str = Field(description="stage-1 mode used")
    score_model: dict[str, float | bool | str] = Field(
        description="the score is sigmoid(logit·logit + cosine·cosine + ln_stage1_rank·ln(stage-1 rank) + "
        "intercept) with these weights, fitted by `twostage calibrate` (cosine_of: query = the query's best "
        "candidate's cosine); results are sorted by it and the floor applies to it. calibrated false: no fit "
        "ships with the reranker (raw sigmoid of its logit)"
    )
    candidates: int = Field(description="stage-1 candidates")
    reranked: int = Field(description="of those, reranked (all unless the deadline cut the rerank short)")
    deadline_ms: int | None = Field(description="the time budget applied, if any")
    deadline_cut: bool = Field(description="true when the deadline left candidates unreranked")
    timings: Timings


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    text: str


class RerankRequest(BaseModel):
    """Cohere v2 rerank body; v1-style {"text": …} documents are accepted too."""

    model_config = ConfigDict(extra="ignore", strict=True)

    query: str = Field(json_schema_extra=QUERY_SCHEMA)
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    model: str | None = Field(None, description="accepted for Cohere compatibility; the deployed model answers")
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        description="cut each document to this many tokens first (Cohere v2); the pair is also cut "
        "to the reranker's max length",
    )

    _query = field_validator("query")(_not_blank)
    _counts = field_validator("top_n", "max_tokens_per_doc", mode="before")(_whole_number)

    def texts(self) -> list[str]:
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


class TEIRerankRequest(BaseModel):
    """Text Embeddings Inference's /rerank body (told apart from Cohere's by `texts`)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    query: str = Field(json_schema_extra=QUERY_SCHEMA)
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = Field(False, description="the reranker's logits instead of 0–1 scores")
    return_text: bool = False
    truncate: bool = Field(False, description="accepted; pairs are always cut to the reranker's max length")
    truncation_direction: Literal["Right", "right"] = "Right"

    _query = field_validator("query")(_not_blank)


class TEIRerankResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class TEIRerankResponse(RootModel[list[TEIRerankResult]]):
    """TEI answers a bare list, best first."""


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: dict[str, Any]


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str
    message: str
    details: list[ErrorDetail] = []


class ModelInfo(BaseModel):
    source: str
    sha256: str
    quantization: dict[str, Any] | None
    max_length: int = Field(description="tokens per text (bi) or per pair (cross)")
    conventions: dict[str, Any] = Field(
        {},
        description="bi: pooling, normalize and the query/passage prompts; cross: head, and whether it is calibrated",
    )


class HealthResponse(BaseModel):
    status: Literal["ok", "broken"] = Field(description="broken (HTTP 503) when a component fails")
    problems: dict[str, str] = Field({}, description="broken component (file name) → what failed")
    bi: ModelInfo
    cross: ModelInfo
    index: dict[str, int | str | None] = Field(
        description="the stage-1 store: backend (local or qdrant), chunks and documents (qdrant: collection, state)"
    )
    floor: float
    floor_source: str = Field(description="where the floor came from: setting, calibration or default")
    load_ms: dict[str, float] = Field(description="what each part of init cost")
    defaults: dict[str, int]
    cpu: dict[str, Any] = Field(
        {},
        description="the CPU this instance landed on: model, arch, cpus, the ISA features that decide int8 speed, "
        "and the best of them (int8)",
    )

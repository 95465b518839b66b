"""Request and response bodies of the HTTP API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from handler.checks import VISIBLE_PATTERN
from handler.settings import MAX_RECALL_K, MAX_TOP_K


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer includes 10.0; strict mode still refuses "10", true and 2.5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


QUERY_SCHEMA = {"pattern": VISIBLE_PATTERN}


class SearchRequest(BaseModel):
    # strict: "10" is not an int and true is not a number; extra: a typo like "topk" is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    query: str = Field(description="the question or keywords", json_schema_extra=QUERY_SCHEMA)
    recall_k: int | None = Field(None, ge=1, le=MAX_RECALL_K, description="stage-1 candidates to rerank")
    top_k: int | None = Field(
        None,
        ge=1,
        le=MAX_TOP_K,
        description="results to return, at most recall_k (without recall_k, a larger top_k raises it to top_k)",
    )
    floor: float | None = Field(None, ge=0.0, le=1.0, description="minimum relevance score to keep a result")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="stage-1 mode (default: deployment's)")
    deadline_ms: int | None = Field(
        None,
        ge=1,
        le=600_000,
        description="answer within this many ms: candidates are reranked in stage-1 order while they fit, and "
        "the results are drawn from those (default: the deployment's, if any)",
    )

    filter: dict[str, Any] | None = Field(
        None,
        description="search only the chunks whose metadata match: {field: value} for equality, operators $eq $ne "
        "$in $nin $gt $gte $lt $lte $exists, combinators $and $or; the fields are the index's filterable ones "
        "(/health: index.filterable). Recall stays recall inside the slice; a slice with no match is refused",
    )
    cascade_keep: int | None = Field(
        None,
        ge=0,
        le=MAX_RECALL_K,
        description="the rerank cascade: the served reranker reads the first pass's best cascade_keep "
        "candidates (at least top_k), and more only while an unread one could still come first (the "
        "deployment's cascade_ceiling); 0: every candidate (default: the deployment's)",
    )

    _counts = field_validator("recall_k", "top_k", "deadline_ms", "cascade_keep", mode="before")(_whole_number)


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
    filter_ms: float = Field(0.0, description="the metadata filter's slice (local store)")
    fuse_ms: float = 0.0
    fetch_ms: float = 0.0
    first_pass_ms: float = Field(0.0, description="the cascade's first-pass model over every candidate")
    rerank_ms: float = Field(0.0, description="the served reranker (after the first pass, when it ran)")
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
    score_model: dict[str, float | bool | str | None] = Field(
        description="the score is sigmoid(logit·logit + cosine·cosine + ln_stage1_rank·ln(stage-1 rank) + "
        "intercept) with these weights, fitted by `twostage calibrate` (cosine_of: query = the query's best "
        "candidate's cosine); results are sorted by it and the floor applies to it. calibrated false: no fit "
        "ships with the reranker (raw sigmoid of its logit)"
    )
    candidates: int = Field(description="stage-1 candidates")
    reranked: int = Field(
        description="of those, read by the served reranker (all unless the cascade or the deadline read fewer)"
    )
    first_pass: int = Field(
        description="of those, scored by the cascade's first-pass model (0: none ran; the cascade may still have "
        "run in stage-1 order, see cascade_keep)"
    )
    cascade_keep: int = Field(description="how many the cascade handed to the served reranker (0: it did not run)")
    deadline_ms: int | None = Field(description="the time budget applied, if any")
    deadline_cut: bool = Field(description="true when the deadline left candidates unreranked")
    timings: Timings


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    text: str


class RerankRequest(BaseModel):
    """Cohere v2 rerank body (Infinity's is the same with `raw_scores`); {"text": …} documents are accepted too."""

    model_config = ConfigDict(extra="ignore", strict=True)

    query: str = Field(json_schema_extra=QUERY_SCHEMA)
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    model: str | None = Field(None, description="accepted for Cohere compatibility; the deployed model answers")
    return_documents: bool = False
    raw_scores: bool = Field(False, description="the reranker's logits as relevance_score (Infinity's option)")
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        description="cut each document to this many tokens first (Cohere v2); the pair is also cut "
        "to the reranker's max length",
    )

    _counts = field_validator("top_n", "max_tokens_per_doc", mode="before")(_whole_number)

    @property
    def texts(self) -> list[str]:
        """The documents' texts, whichever form each came in (TEI's body has a `texts` field)."""
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


class RerankV1Request(BaseModel):
    """Cohere v1 rerank body (`cohere.Client`): documents as strings or objects; `rank_fields` names the
    fields read, in order (else `text`); each object comes back whole with `return_documents`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    query: str = Field(json_schema_extra=QUERY_SCHEMA)
    documents: list[str | dict[str, Any]] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    model: str | None = Field(None, description="accepted for Cohere compatibility; the deployed model answers")
    return_documents: bool = False
    rank_fields: list[str] | None = Field(None, min_length=1, description="document fields read, in this order")
    max_chunks_per_doc: int | None = Field(None, ge=1, description="accepted; each pair is cut to the max length")

    _counts = field_validator("top_n", "max_chunks_per_doc", mode="before")(_whole_number)

    @model_validator(mode="after")
    def _documents_have_text(self):
        fields = self.rank_fields or ["text"]
        for i, doc in enumerate(self.documents):
            if isinstance(doc, dict) and not any(isinstance(doc.get(f), str) for f in fields):
                raise ValueError(f"documents.{i} has no text field among {fields}")
        return self

    @property
    def texts(self) -> list[str]:
        """What the reranker reads of each document: the string, or its rank fields as `field: value` lines."""
        fields = self.rank_fields or ["text"]

        def read(doc) -> str:
            if isinstance(doc, str):
                return doc
            if self.rank_fields is None:
                return doc["text"]
            return "\n".join(f"{f}: {doc[f]}" for f in fields if isinstance(doc.get(f), str))

        return [read(doc) for doc in self.documents]

    def document(self, index: int) -> dict[str, Any]:
        doc = self.documents[index]
        return {"text": doc} if isinstance(doc, str) else doc


class TEIRerankRequest(BaseModel):
    """Text Embeddings Inference's /rerank body (told apart from Cohere's by `texts`)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    query: str = Field(json_schema_extra=QUERY_SCHEMA)
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = Field(False, description="the reranker's logits instead of 0–1 scores")
    return_text: bool = False
    truncate: bool = Field(False, description="accepted; pairs are always cut to the reranker's max length")
    truncation_direction: Literal["Right", "right"] = "Right"


class TEIRerankResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class TEIRerankResponse(RootModel[list[TEIRerankResult]]):
    """TEI answers a bare list, best first."""


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = Field(None, description="the document as sent, with return_documents")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens the reranker read (every pair, cut to its max length)")
    total_tokens: int


class RerankResponse(BaseModel):
    """Cohere's answer (v1 and v2), with the fields Infinity's clients also read (`model`, `usage`)."""

    id: str
    results: list[RerankResult]
    meta: dict[str, Any]
    model: str = Field(description="the deployed reranker")
    usage: Usage
    object: Literal["rerank"] = "rerank"
    created: int = Field(description="Unix time of the answer")


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
    index: dict[str, Any] = Field(
        description="the stage-1 store: backend (local or qdrant), chunks and documents (qdrant: collection, state), "
        "and the metadata fields a filter may name with their types (filterable)"
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

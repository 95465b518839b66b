"""The rerank dialects clients already speak, each a small class: which body it takes and how it answers.

- Cohere v2 (`cohere.ClientV2`, LangChain's and LlamaIndex's Cohere rerankers) at /v2/rerank and /rerank;
  Infinity's clients (LangChain's InfinityRerank) send the same body to /rerank and read `model` and
  `usage` from the same answer;
- Cohere v1 (`cohere.Client`) at /v1/rerank: documents may be objects, read by `rank_fields`;
- Text Embeddings Inference (LlamaIndex's TEI reranker) at /rerank, told apart by its `texts` field.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from handler.results import Reranked
from handler.schemas import (
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankV1Request,
    TEIRerankRequest,
    TEIRerankResult,
    Usage,
)


@dataclass(frozen=True)
class Deployment:
    """What every rerank answer says about the deployment."""

    model: str  # the reranker's public name
    calibrated: bool  # false: relevance_score is the raw sigmoid, not a fitted probability
    calibrated_on: str | None = None  # labels, traces or corpus


class RerankFormat(Protocol):
    name: str
    request: type[BaseModel]

    def answer(self, body: Any, ranked: list[Reranked], deployment: Deployment) -> Any:
        """The response body (JSON-ready) for all documents `ranked`, best first."""
        ...


def _cohere(body, ranked, deployment: Deployment, version: str, document) -> dict:
    kept = ranked[: body.top_n or len(ranked)]
    raw = getattr(body, "raw_scores", False)
    results = [
        RerankResult(
            index=r.index,
            relevance_score=r.logit if raw else r.score,
            document=document(body, r) if body.return_documents else None,
        )
        for r in kept
    ]
    tokens = sum(r.tokens for r in ranked)
    meta = {
        "api_version": {"version": version},
        "billed_units": {"search_units": 1},
        "calibrated": deployment.calibrated,
        "calibrated_on": deployment.calibrated_on,
    }
    response = RerankResponse(
        id=str(uuid.uuid4()),
        results=results,
        meta=meta,
        model=deployment.model,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        created=int(time.time()),
    )
    return response.model_dump(exclude_none=True)


class CohereV2:
    name = "cohere-v2"
    request = RerankRequest

    def answer(self, body: RerankRequest, ranked: list[Reranked], deployment: Deployment) -> dict:
        return _cohere(body, ranked, deployment, "2", lambda _body, r: {"text": r.text})


class CohereV1:
    name = "cohere-v1"
    request = RerankV1Request

    def answer(self, body: RerankV1Request, ranked: list[Reranked], deployment: Deployment) -> dict:
        return _cohere(body, ranked, deployment, "1", lambda b, r: b.document(r.index))


class TEI:
    name = "tei"
    request = TEIRerankRequest

    def answer(self, body: TEIRerankRequest, ranked: list[Reranked], deployment: Deployment) -> list:
        return [
            TEIRerankResult(
                index=r.index, score=r.logit if body.raw_scores else r.score, text=r.text if body.return_text else None
            ).model_dump(exclude_none=True)
            for r in ranked
        ]


def format_for(path: str, parsed: Any) -> RerankFormat:
    """The dialect a body speaks, by its path and (at /rerank) its fields: TEI names its passages `texts`."""
    if path == "/v1/rerank":
        return CohereV1()
    if path == "/rerank" and isinstance(parsed, dict) and "texts" in parsed and "documents" not in parsed:
        return TEI()
    return CohereV2()

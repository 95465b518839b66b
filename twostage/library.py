"""The Python API: `from twostage import TwoStage`. One import and one call, in process, no HTTP.

    ts = TwoStage.load("artifacts")                       # models, index, floor; overrides as keywords
    answer = ts.search("what does error E240 mean?", top_k=5)
    for result in answer.results:                          # best first, all at or above the floor
        print(result.score, result.id, result.text)
    ts.rerank("query", ["passage one", "passage two"])     # [Reranked(index, score, text)], best first

A keyword that names no setting (`recal_k=5`) is an error naming it. Importing this loads onnxruntime,
tokenizers, numpy and hnswlib (what serving needs): never torch, the CLI or the HTTP stack (Starlette,
Mangum, uvicorn).
"""

from __future__ import annotations

from pathlib import Path

from handler.pipeline import Retriever
from handler.results import Reranked, Result, SearchAnswer
from handler.settings import Settings

__all__ = ["Reranked", "Result", "SearchAnswer", "TwoStage"]


class TwoStage:
    """Stage-1 recall, cross-encoder rerank and the relevance floor over one set of artifacts."""

    def __init__(self, retriever: Retriever):
        self.retriever = retriever

    @classmethod
    def load(cls, artifacts_dir: str | Path = "artifacts", **overrides) -> TwoStage:
        """Load `artifacts_dir` (models/bi, models/cross, index). Keywords are serving settings
        (`recall_k`, `top_k`, `mode`, `floor`, `threads`, `index_path`, ...; TWOSTAGE_* env vars fill the rest);
        an unknown keyword raises a ValueError naming it."""
        return cls(Retriever.from_settings(Settings(artifacts_dir=Path(artifacts_dir), **overrides)))

    @property
    def settings(self) -> Settings:
        return self.retriever.settings

    def search(
        self,
        query: str,
        *,
        recall_k: int | None = None,
        top_k: int | None = None,
        floor: float | None = None,
        mode: str | None = None,
        deadline_ms: int | None = None,
        cascade_keep: int | None = None,
        filter: dict | None = None,
    ) -> SearchAnswer:
        """The best `top_k` of `recall_k` stage-1 candidates after reranking, each at or above the floor;
        `refused` when none is; within `deadline_ms` if given; `cascade_keep` candidates read by the served
        reranker after the first pass (0: all); `filter` a metadata filter ({"drug": "Corvadil"}, operators
        $eq $ne $in $nin $gt $gte $lt $lte $exists, $and, $or). Unset values take the loaded settings'."""
        return self.retriever.search(
            query, recall_k, top_k, floor, mode, deadline_ms=deadline_ms, cascade_keep=cascade_keep, filter=filter
        )

    def rerank(self, query: str, documents: list[str], top_n: int | None = None) -> list[Reranked]:
        """Your documents scored against `query`, best first (`index` points into `documents`)."""
        return self.retriever.rerank_documents(query, list(documents), top_n)

    def close(self) -> None:
        self.retriever.close()

    def __enter__(self) -> TwoStage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

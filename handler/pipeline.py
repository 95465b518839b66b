"""The two stages composed: `Recall` (handler/recall.py) finds candidates, `Rerank` (handler/rerank.py)
scores them, and the `Retriever` resolves a request's values, keeps what clears the floor and answers
(or refuses). It loads both parts from the settings and is what the HTTP app and the Python API call."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from handler import filters
from handler.batching import BatchedCrossEncoder
from handler.checks import check_documents, check_query
from handler.cpu import this_cpu
from handler.errors import ArtifactError, Cancelled, InvalidRequest, Stage1Unavailable
from handler.filters import Filter
from handler.loading import PendingModels, start_loading
from handler.manifest import ModelManifest, read_manifest
from handler.recall import Recall, Recalled
from handler.rerank import Rerank, Scored
from handler.results import Reranked, Result, SearchAnswer
from handler.settings import Settings
from handler.types import CrossScorer, Stage1

log = logging.getLogger(__name__)


def load_stage1(settings: Settings, encoder: ModelManifest, lap) -> Stage1:
    """The configured stage-1 store, checked against the served encoder; qdrant-client is imported
    only when the backend is qdrant."""
    if settings.stage1 == "qdrant":
        from handler.qdrant_stage1 import QdrantStage1

        stage1 = QdrantStage1.connect(settings, encoder)
        lap("qdrant_connect")
        return stage1
    from handler.local_stage1 import LocalStage1

    return LocalStage1.load(settings.artifacts.index, encoder, settings.verify == "full", lap)


def load_recall(settings: Settings) -> Recall:
    """Stage 1 alone (the bi-encoder and the store), for callers that never rerank (training's mining)."""
    from handler.cpu import available_cpus
    from handler.onnx_model import Encoder

    encoder = Encoder(settings.artifacts.bi, threads=settings.threads or available_cpus())
    return Recall(encoder, load_stage1(settings, encoder.manifest, lambda _name: None), settings.recall)


class _Clock:
    """Milliseconds per stage, in the order they ran."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"{name}_ms"] = round((now - self.last) * 1000, 2)
        self.last = now

    def timings(self) -> dict[str, float]:
        return self.laps | {"total_ms": round((time.perf_counter() - self.start) * 1000, 2)}


@dataclass(frozen=True)
class Ask:
    """A /search request with the deployment's defaults filled in and every value checked."""

    query: str
    recall_k: int
    top_k: int
    mode: str
    floor: float
    deadline_ms: int | None
    cascade_keep: int  # candidates the served reranker reads after the first pass (0: every candidate)
    where: Filter | None = None  # the metadata slice searched (None: the whole index)


def _result(recalled: Recalled, i: int, score: float, logit: float) -> Result:
    chunk, candidate = recalled.chunks[i], recalled.candidates[i]
    return Result(
        id=chunk.doc_id,
        chunk=chunk.chunk,
        title=chunk.title,
        text=chunk.text,
        metadata=chunk.metadata,
        score=float(score),
        logit=float(logit),
        stage1_rank=i + 1,
        stage1_score=candidate.score,
        stage1_similarity=candidate.similarity,
        found_by=candidate.found_by,
    )


def _check_stop(stop: threading.Event | None, where: str) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled(f"stopped {where}")


def _reason(ask: Ask, recalled: Recalled, scored: Scored) -> str:
    inside = f" in the slice {filters.describe(ask.where)}" if ask.where is not None else ""
    if ask.where is not None and not len(recalled):
        return f"empty slice: no chunk matches the filter {filters.describe(ask.where)}"
    if len(recalled) and not scored.reranked:
        return f"deadline: no candidate{inside} could be reranked within {ask.deadline_ms} ms"
    best = f" (best score {scored.best:.3f})" if scored.reranked else ""
    return f"no evidence{inside}: no candidate reached the floor {ask.floor:.3f}{best}"


@dataclass
class Retriever:
    recall: Recall
    rerank: Rerank
    settings: Settings
    load_ms: dict[str, float] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # file → what failed at request time (/health: 503)

    @classmethod
    def from_settings(cls, settings: Settings, models: PendingModels | None = None) -> Retriever:
        """Load everything; `models` is a `start_loading` already under way (the Lambda handler starts
        it before its other imports), else it starts here, beside the index load."""
        models = models or start_loading(settings)
        clock = _Clock()  # cold start, part by part (benchmarks/cold_start.py, /health)
        stage1 = load_stage1(settings, read_manifest(settings.artifacts.bi, ModelManifest), clock.lap)
        loaded = models.result()
        clock.lap("models_wait")
        rerank = Rerank.of(_batched(loaded.cross, settings), settings.rerank, loaded.first_pass)
        load_ms = loaded.load_ms | clock.laps
        log.info(
            "stage 1 %s (bm25: %s); floor %.3f (%s); cascade %s; %s; %s",
            stage1.describe(),
            stage1.has_bm25,
            rerank.floor,
            rerank.floor_source,
            rerank.cascade,
            load_ms,
            this_cpu().describe(),
        )
        return cls(Recall(loaded.encoder, stage1, settings.recall), rerank, settings, load_ms)

    def resolve(
        self,
        query: str,
        recall_k: int | None = None,
        top_k: int | None = None,
        mode: str | None = None,
        floor: float | None = None,
        deadline_ms: int | None = None,
        cascade_keep: int | None = None,
        filter: dict | None = None,
    ) -> Ask:
        """The request's values with the deployment's defaults filled in; InvalidRequest names a bad one."""
        query = check_query(query, self.settings.limits.max_query_chars)
        if recall_k is None:  # a top_k beyond the deployment's recall_k asks for that many candidates
            recall_k = max(self.settings.recall.recall_k, top_k or 0)
        top_k = top_k or min(self.settings.top_k, recall_k)
        if top_k > recall_k:
            raise InvalidRequest("top_k", f"must not exceed recall_k ({recall_k})")
        keep = self.settings.rerank.cascade_keep if cascade_keep is None else cascade_keep
        return Ask(
            query,
            recall_k,
            top_k,
            self.recall.mode(mode),
            self.rerank.floor if floor is None else floor,
            deadline_ms or self.settings.rerank.deadline_ms,
            max(keep, top_k) if keep else 0,  # the served reranker reads at least what is answered
            self.recall.filter(filter),
        )

    def search(
        self,
        query: str,
        recall_k: int | None = None,
        top_k: int | None = None,
        floor: float | None = None,
        mode: str | None = None,
        *,
        deadline_ms: int | None = None,
        cascade_keep: int | None = None,
        filter: dict | None = None,
        stop: threading.Event | None = None,
    ) -> SearchAnswer:
        """Stage 1 (inside the slice `filter` admits), rerank, floor. Unset values take the defaults."""
        ask = self.resolve(query, recall_k, top_k, mode, floor, deadline_ms, cascade_keep, filter)
        return self.answer(ask, stop)

    def answer(self, ask: Ask, stop: threading.Event | None = None) -> SearchAnswer:
        """`stop` set (the client went away) ends the work between stages and rerank batches. With a
        deadline the answer is drawn from the candidates reranked in time, in stage-1 order."""
        clock = _Clock()
        deadline = clock.start + ask.deadline_ms / 1000 if ask.deadline_ms else None
        _check_stop(stop, "before stage 1")
        recalled = self.recall(ask.query, ask.recall_k, ask.mode, clock.lap, ask.where)
        _check_stop(stop, "after stage 1")
        scored = self.rerank.candidates(
            ask.query, recalled, stop, "recall_k", deadline, ask.cascade_keep, lap=clock.lap
        )
        clock.lap("rerank")
        # one order, one score: the floor applies to what sorts; only what the served reranker read is answered
        kept = [i for i in scored.ranking() if scored.scores[i] >= ask.floor][: ask.top_k]
        results = [_result(recalled, int(i), scored.scores[i], scored.logits[i]) for i in kept]
        clock.lap("floor")
        return SearchAnswer(
            query=ask.query,
            results=results,
            refused=not results,
            reason=None if results else _reason(ask, recalled, scored),
            floor=ask.floor,
            best_score=scored.best,
            recall_k=ask.recall_k,
            top_k=ask.top_k,
            mode=ask.mode,
            score_model=self.rerank.score_model,
            candidates=len(recalled),
            reranked=scored.reranked,
            first_pass=0 if scored.first_pass is None else len(scored.first_pass),
            cascade_keep=scored.cascade_keep,
            deadline_ms=ask.deadline_ms,
            deadline_cut=scored.deadline_cut,
            timings=clock.timings(),
        )

    def rerank_documents(
        self,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        *,
        max_tokens_per_doc: int | None = None,
        stop: threading.Event | None = None,
    ) -> list[Reranked]:
        """The caller's documents scored against `query`, best first (the /rerank endpoint)."""
        limits = self.settings.limits
        query = check_query(query, limits.max_query_chars)
        check_documents(documents, limits.max_documents, limits.max_document_chars)
        return self.rerank.documents(query, documents, top_n, max_tokens_per_doc=max_tokens_per_doc, stop=stop)

    def problems(self) -> dict[str, str]:
        """Components that failed at request time or fail a cheap read now (empty: healthy)."""
        try:
            self.recall.stage1.ping()
        except ArtifactError as error:
            self.broken[error.path] = error.problem
        except Stage1Unavailable as error:  # not broken for good: it clears when the cluster answers again
            return dict(self.broken) | {"stage1": str(error)}
        return dict(self.broken)

    def close(self) -> None:
        """Drain the dynamic batcher, if any, and close the stage-1 store's connections (graceful shutdown)."""
        self.rerank.close()
        self.recall.close()


def _batched(cross: CrossScorer, settings: Settings) -> CrossScorer:
    """The cross-encoder behind the dynamic batcher when batching is on (the GPU container)."""
    b = settings.batcher
    if not b.batching:
        return cross
    return BatchedCrossEncoder(
        cross, b.max_batch_tokens, b.max_wait_ms, settings.limits.max_pending, b.rerank_timeout_s, b.batch_workers
    )

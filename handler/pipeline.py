"""The two stages: bi-encoder + hnswlib recall, then cross-encoder rerank and the relevance floor."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from handler import fusion
from handler.batching import BatchedCrossEncoder
from handler.calibration import Calibration
from handler.cpu import this_cpu
from handler.deadline import RerankRate
from handler.docstore import Chunk
from handler.errors import Cancelled, InvalidRequest, Stage1Unavailable, TooMuchWork
from handler.fusion import Candidate
from handler.loading import PendingModels, start_loading
from handler.manifest import ModelManifest, read_manifest
from handler.onnx_model import Encoder
from handler.results import Reranked, Result, SearchAnswer
from handler.settings import Settings
from handler.types import CrossScorer, Stage1, has_visible_text
from handler.verify import ArtifactError

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

    return LocalStage1.load(settings.index_dir, encoder, settings.verify == "full", lap)


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


def _result(chunk: Chunk, candidate: Candidate, score: float, logit: float, stage1_index: int) -> Result:
    return Result(
        id=chunk.doc_id,
        chunk=chunk.chunk,
        title=chunk.title,
        text=chunk.text,
        metadata=chunk.metadata,
        score=float(score),
        logit=float(logit),
        stage1_rank=int(stage1_index) + 1,
        stage1_score=candidate.score,
        stage1_similarity=candidate.similarity,
        found_by=candidate.found_by,
    )


def _check_query(query: str) -> None:
    if not has_visible_text(query):
        raise InvalidRequest("query", "must contain a visible character")


def _check_stop(stop: threading.Event | None, where: str) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled(f"stopped {where}")


@dataclass
class Retriever:
    encoder: Encoder
    cross: CrossScorer
    stage1: Stage1
    floor: float
    floor_source: str
    settings: Settings
    calibration: Calibration = field(default_factory=lambda: Calibration.from_dict(None))
    load_ms: dict[str, float] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # file → what failed at request time (/health: 503)
    # this process's rerank speed, from the settings' prior until measured
    rate: RerankRate = field(default_factory=lambda: RerankRate(Settings.model_fields["rerank_tokens_per_s"].default))

    @classmethod
    def from_settings(cls, settings: Settings, models: PendingModels | None = None) -> Retriever:
        """Load everything; `models` is a `start_loading` already under way (the Lambda handler starts
        it before its other imports), else it starts here, beside the index load."""
        models = models or start_loading(settings)
        clock = _Clock()  # cold start, part by part (benchmarks/cold_start.py, /health)
        stage1 = load_stage1(settings, read_manifest(settings.bi_dir, ModelManifest), clock.lap)
        loaded = models.result()
        clock.lap("models_wait")
        cross = loaded.cross
        if settings.batching:
            cross = BatchedCrossEncoder(
                cross,
                settings.max_batch_tokens,
                settings.max_wait_ms,
                settings.max_pending,
                settings.rerank_timeout_s,
                settings.batch_workers,
            )
        floor, source = cls._default_floor(settings, cross)
        calibration = Calibration.from_dict(cross.manifest.calibration)
        load_ms = loaded.load_ms | clock.laps
        log.info(
            "stage 1 %s (bm25: %s); floor %.3f (%s); %s; %s",
            stage1.describe(),
            stage1.has_bm25,
            floor,
            source,
            load_ms,
            this_cpu().describe(),
        )
        rate = RerankRate(settings.rerank_tokens_per_s)
        return cls(loaded.encoder, cross, stage1, floor, source, settings, calibration, load_ms, rate=rate)

    @property
    def default_mode(self) -> str:
        """The deployment's mode, or dense when the index carries no BM25 artifact."""
        return self.settings.mode if self.settings.mode in self.modes else "dense"

    @property
    def modes(self) -> set[str]:
        return {"dense", "bm25", "hybrid"} if self.stage1.has_bm25 else {"dense"}

    @staticmethod
    def _default_floor(settings: Settings, cross: CrossScorer) -> tuple[float, str]:
        if settings.floor is not None:
            return settings.floor, "settings"
        calibrated = (cross.manifest.calibration or {}).get("floor")
        if calibrated is not None:
            return float(calibrated), "calibration"
        log.warning("no calibrated floor with the reranker: nothing is refused (run `twostage calibrate`)")
        return 0.0, "none"

    def recall(
        self, query: str, recall_k: int, mode: str, clock: _Clock | None = None
    ) -> tuple[list[Chunk], list[Candidate]]:
        """Stage 1: the best recall_k chunks by dense similarity, BM25, or both fused; best first.
        Every candidate carries its bi-encoder cosine (the calibrated score uses it), whichever side
        found it."""
        clock = clock or _Clock()
        depth = (self.settings.hybrid_depth or recall_k) if mode == "hybrid" else recall_k
        vector = self.encoder.embed_queries([query])[0]
        clock.lap("embed")
        wanted = ("dense", "bm25") if mode == "hybrid" else (mode,)
        sides = self.stage1.candidates(vector, query, wanted, depth, clock.lap)
        candidates = self._fuse(sides)[:recall_k] if mode == "hybrid" else fusion.single(sides)
        self._fill_similarity(vector, candidates)
        clock.lap("fuse")
        chunks = self.stage1.fetch([c.label for c in candidates])
        clock.lap("fetch")
        return chunks, candidates

    def _fill_similarity(self, vector: np.ndarray, candidates: list[Candidate]) -> None:
        """The cosine of candidates only BM25 found, from the vectors stored in the index."""
        missing = [c for c in candidates if c.similarity is None]
        if missing:
            for candidate, cosine in zip(
                missing, self.stage1.similarity(vector, [c.label for c in missing]), strict=True
            ):
                candidate.similarity = float(cosine)

    def _fuse(self, sides: fusion.Sides) -> list[Candidate]:
        if self.settings.fusion == "weighted":
            return fusion.weighted(sides, self.settings.dense_weight)
        return fusion.reciprocal_rank(sides, self.settings.rrf_k)

    def score(
        self,
        query: str,
        chunks: list[Chunk],
        candidates: list[Candidate],
        stop: threading.Event | None = None,
        budget_field: str | None = None,
        deadline: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage 2: cross-encoder logits and served 0–1 scores, in the order of `chunks`. With
        `budget_field` (requests, not evaluation) the pairs' tokens must fit `max_rerank_tokens`. With a
        `deadline` (time.perf_counter) only the first candidates that fit it are scored: both arrays may
        be shorter than `chunks`."""
        encodings = self.cross.encode(query, [c.passage for c in chunks])
        if budget_field:
            self.check_budget(encodings, budget_field)
        logits = self._logits_within(encodings, deadline, stop)
        cosines = np.array([c.similarity for c in candidates], dtype=np.float32)
        ranks = np.arange(1, len(candidates) + 1)  # candidates come in stage-1 order
        return logits, self.calibration.search(logits, cosines, ranks)

    def _logits_within(self, encodings: list, deadline: float | None, stop: threading.Event | None) -> np.ndarray:
        """All logits when the measured rate says they fit the deadline (then exactly as without one);
        else batch after batch in stage-1 order, each sized to the time left, until the next does not fit."""
        lengths = [len(e.ids) for e in encodings]
        started = time.perf_counter()
        if deadline is None or self.rate.seconds_for(sum(lengths)) <= deadline - started:
            logits = self.cross.logits_encoded(encodings, stop)
            self.rate.observe(sum(lengths), time.perf_counter() - started)
            return logits
        parts, done = [], 0
        while done < len(encodings):
            fits = self.rate.pairs_within(lengths[done:], deadline - time.perf_counter())
            take = min(fits, self.settings.rerank_batch_size)
            if take == 0:
                break
            batch_started = time.perf_counter()
            parts.append(self.cross.logits_encoded(encodings[done : done + take], stop))
            self.rate.observe(sum(lengths[done : done + take]), time.perf_counter() - batch_started)
            done += take
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def check_budget(self, encodings: list, field: str) -> None:
        """Work per request is bounded: the pairs' tokens (each already cut to the reranker's max length)."""
        tokens = sum(len(e.ids) for e in encodings)
        limit = self.settings.max_rerank_tokens
        if tokens > limit:
            raise TooMuchWork(
                field,
                f"{len(encodings)} pairs of {tokens} tokens exceed this deployment's limit of {limit} tokens per "
                f"request (max_rerank_tokens); lower {field}",
            )

    @property
    def score_model(self) -> dict[str, float | bool | str]:
        """What the served score is made of: sigmoid of these weights; `calibrated` false for a raw sigmoid."""
        return self.calibration.search.describe() | {"calibrated": self.calibration.calibrated}

    def resolve(self, query: str, recall_k: int | None, top_k: int | None, mode: str | None) -> tuple[int, int, str]:
        """The request's values with the deployment's defaults filled in; InvalidRequest names a bad one."""
        _check_query(query)
        recall_k = recall_k or self.settings.recall_k
        top_k = top_k or min(self.settings.top_k, recall_k)
        if top_k > recall_k:
            raise InvalidRequest("top_k", f"must not exceed recall_k ({recall_k})")
        mode = mode or self.default_mode
        if mode not in self.modes:
            raise InvalidRequest("mode", f"{mode!r} needs a BM25 artifact this index lacks; available: dense")
        return recall_k, top_k, mode

    def search(
        self,
        query: str,
        recall_k: int | None = None,
        top_k: int | None = None,
        floor: float | None = None,
        mode: str | None = None,
        *,
        deadline_ms: int | None = None,
        stop: threading.Event | None = None,
    ) -> SearchAnswer:
        """Stage 1, rerank, floor. Unset values take the deployment's defaults; `stop` set (the client
        went away) ends the work between stages and rerank batches. With a deadline (ms from the call)
        the answer is drawn from the candidates reranked in time, in stage-1 order."""
        recall_k, top_k, mode = self.resolve(query, recall_k, top_k, mode)
        floor = self.floor if floor is None else floor
        deadline_ms = deadline_ms or self.settings.deadline_ms
        clock = _Clock()
        deadline = clock.start + deadline_ms / 1000 if deadline_ms else None
        _check_stop(stop, "before stage 1")
        chunks, candidates = self.recall(query, recall_k, mode, clock)
        _check_stop(stop, "after stage 1")
        logits, scores = self.score(query, chunks, candidates, stop, budget_field="recall_k", deadline=deadline)
        clock.lap("rerank")
        order = np.argsort(-scores, kind="stable")  # one order, one score: the floor applies to what sorts
        kept = [i for i in order if scores[i] >= floor][:top_k]
        results = [_result(chunks[i], candidates[i], scores[i], logits[i], i) for i in kept]
        clock.lap("floor")
        best = float(scores.max()) if len(scores) else None
        reason = None
        if not results and chunks and not len(scores):
            reason = f"deadline: no candidate could be reranked within {deadline_ms} ms"
        elif not results:
            reason = f"no evidence: no candidate reached the floor {floor:.3f}"
            reason += f" (best score {best:.3f})" if best is not None else ""
        return SearchAnswer(
            query=query,
            results=results,
            refused=not results,
            reason=reason,
            floor=floor,
            best_score=best,
            recall_k=recall_k,
            top_k=top_k,
            mode=mode,
            score_model=self.score_model,
            candidates=len(chunks),
            reranked=len(scores),
            deadline_ms=deadline_ms,
            deadline_cut=len(scores) < len(chunks),
            timings=clock.timings(),
        )

    def close(self) -> None:
        """Drain the dynamic batcher, if any, and close the stage-1 store's connections (graceful shutdown)."""
        if isinstance(self.cross, BatchedCrossEncoder):
            self.cross.close()
        self.stage1.close()

    def rerank(
        self,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        *,
        max_tokens_per_doc: int | None = None,
        stop: threading.Event | None = None,
    ) -> list[Reranked]:
        """Caller-supplied documents (the /rerank endpoint), best first, within the token budget; the
        score is the logit Platt-scaled (these documents have no stage-1 cosine). `max_tokens_per_doc`
        cuts each document first, as Cohere's v2 API does."""
        _check_query(query)
        passages = [self._cut(d, max_tokens_per_doc) for d in documents] if max_tokens_per_doc else documents
        encodings = self.cross.encode(query, passages)
        self.check_budget(encodings, "documents")
        logits = self.cross.logits_encoded(encodings, stop)
        scores = self.calibration.rerank(logits)
        order = np.argsort(-scores, kind="stable")[: top_n or len(documents)]
        return [Reranked(int(i), float(scores[i]), float(logits[i]), documents[i]) for i in order]

    def _cut(self, text: str, tokens: int) -> str:
        """`text` up to the end of its `tokens`-th token (by the reranker's tokenizer, no specials)."""
        offsets = self.cross.tokenizer.encode(text, add_special_tokens=False).offsets
        return text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]

    def problems(self) -> dict[str, str]:
        """Components that failed at request time or fail a cheap read now (empty: healthy)."""
        try:
            self.stage1.ping()
        except ArtifactError as error:
            self.broken[error.path] = error.problem
        except Stage1Unavailable as error:  # not broken for good: it clears when the cluster answers again
            return dict(self.broken) | {"stage1": str(error)}
        return dict(self.broken)

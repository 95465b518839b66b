"""The two stages: bi-encoder + hnswlib recall, then cross-encoder rerank and the relevance floor."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from handler.docstore import DOCSTORE_NAME, Chunk, DocStore
from handler.onnx_model import CrossEncoder, Encoder, available_cpus
from handler.schemas import Hit, SearchResponse, Timings
from handler.settings import Settings
from handler.vector_index import VectorIndex

log = logging.getLogger(__name__)


class _Clock:
    """Milliseconds per stage, in the order they ran."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"{name}_ms"] = round((now - self.last) * 1000, 2)
        self.last = now

    def timings(self) -> Timings:
        return Timings(**self.laps, total_ms=round((time.perf_counter() - self.start) * 1000, 2))


def _hit(chunk: Chunk, score: float, logit: float, stage1_index: int, similarity: float) -> Hit:
    return Hit(
        id=chunk.doc_id,
        chunk=chunk.chunk,
        title=chunk.title,
        text=chunk.text,
        metadata=chunk.metadata,
        score=float(score),
        logit=float(logit),
        stage1_rank=int(stage1_index) + 1,
        stage1_similarity=float(similarity),
    )


@dataclass
class Retriever:
    encoder: Encoder
    cross: CrossEncoder
    index: VectorIndex
    docs: DocStore
    floor: float
    floor_source: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Retriever:
        threads = settings.threads or available_cpus()
        encoder = Encoder(settings.bi_dir, threads=threads)
        cross = CrossEncoder(settings.cross_dir, threads=threads, batch_size=settings.rerank_batch_size)
        index = VectorIndex(settings.index_dir, encoder.manifest)
        docs = DocStore(settings.index_dir / DOCSTORE_NAME)
        floor, source = cls._default_floor(settings, cross)
        log.info("loaded %d chunks; %d threads; floor %.3f (%s)", len(index), threads, floor, source)
        return cls(encoder, cross, index, docs, floor, source)

    @staticmethod
    def _default_floor(settings: Settings, cross: CrossEncoder) -> tuple[float, str]:
        if settings.floor is not None:
            return settings.floor, "settings"
        calibrated = (cross.manifest.calibration or {}).get("floor")
        if calibrated is not None:
            return float(calibrated), "calibration"
        log.warning("no calibrated floor with the reranker: nothing is refused (run `twostage calibrate`)")
        return 0.0, "none"

    def recall(self, query: str, recall_k: int, clock: _Clock | None = None) -> tuple[list[Chunk], np.ndarray]:
        """Stage 1: the recall_k nearest chunks and their cosine similarities, best first."""
        clock = clock or _Clock()
        vector = self.encoder.embed([query])[0]
        clock.lap("embed")
        labels, similarities = self.index.search(vector, recall_k)
        clock.lap("ann")
        chunks = self.docs.fetch(labels)
        clock.lap("fetch")
        return chunks, similarities

    def score(self, query: str, chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray]:
        """Stage 2: cross-encoder logits and served 0–1 scores, in the order of `chunks`."""
        logits = self.cross.logits(query, [c.passage for c in chunks])
        return logits, self.cross.scores(logits)

    def search(self, query: str, recall_k: int, top_k: int, floor: float | None = None) -> SearchResponse:
        floor = self.floor if floor is None else floor
        clock = _Clock()
        chunks, similarities = self.recall(query, recall_k, clock)
        logits, scores = self.score(query, chunks)
        clock.lap("rerank")
        order = np.argsort(-scores, kind="stable")
        kept = [i for i in order if scores[i] >= floor][:top_k]
        hits = [_hit(chunks[i], scores[i], logits[i], i, similarities[i]) for i in kept]
        clock.lap("floor")
        best = float(scores[order[0]]) if len(order) else None
        reason = None
        if not hits:
            reason = f"no evidence: no candidate reached the floor {floor:.3f}"
            reason += f" (best score {best:.3f})" if best is not None else ""
        return SearchResponse(
            query=query,
            results=hits,
            refused=not hits,
            reason=reason,
            floor=floor,
            best_score=best,
            recall_k=recall_k,
            top_k=top_k,
            candidates=len(chunks),
            timings=clock.timings(),
        )

    def rerank(self, query: str, documents: list[str]) -> np.ndarray:
        """Scores for caller-supplied documents (the /rerank endpoint)."""
        return self.cross.scores(self.cross.logits(query, documents))

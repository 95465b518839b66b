"""Stage 1: the bi-encoder embeds the query, the stage-1 store returns the best chunks by dense
similarity, BM25 or both fused. Reads only `RecallSettings`; knows nothing of reranking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handler import filters, fusion
from handler.docstore import Chunk
from handler.errors import InvalidRequest
from handler.filters import Filter
from handler.fusion import Candidate
from handler.onnx_model import Encoder
from handler.settings import RecallSettings
from handler.types import Stage1

MODES = ("dense", "bm25", "hybrid")


@dataclass
class Recalled:
    """Stage 1's answer, best first: each candidate's chunk and how stage 1 found it (score, sides,
    bi-encoder cosine)."""

    chunks: list[Chunk]
    candidates: list[Candidate]
    where: Filter | None = None  # the slice they were found in (None: the whole index)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):  # chunks, candidates = recall(...)
        return iter((self.chunks, self.candidates))

    @property
    def cosines(self) -> np.ndarray:
        return np.array([c.similarity for c in self.candidates], dtype=np.float32)

    def without(self, doc_ids) -> Recalled:
        """These documents' chunks removed (evaluation's excluded pairs), order kept."""
        keep = [i for i, chunk in enumerate(self.chunks) if chunk.doc_id not in doc_ids]
        return Recalled([self.chunks[i] for i in keep], [self.candidates[i] for i in keep], self.where)


def _no_lap(_name: str) -> None:
    pass


@dataclass
class Recall:
    encoder: Encoder
    stage1: Stage1
    settings: RecallSettings

    @property
    def modes(self) -> set[str]:
        return set(MODES) if self.stage1.has_bm25 else {"dense"}

    @property
    def default_mode(self) -> str:
        """The deployment's mode, or dense when the store has no BM25 side."""
        return self.settings.mode if self.settings.mode in self.modes else "dense"

    def mode(self, asked: str | None) -> str:
        """The asked mode, or the default; InvalidRequest when this store cannot serve it."""
        mode = asked or self.default_mode
        if mode not in self.modes:
            raise InvalidRequest("mode", f"{mode!r} needs a BM25 artifact this index lacks; available: dense")
        return mode

    def filter(self, raw) -> Filter | None:
        """A request's filter parsed against the fields this store declares; InvalidRequest names the path."""
        return filters.parse(raw, self.stage1.filterable)

    def __call__(
        self,
        query: str,
        recall_k: int,
        mode: str,
        lap: Callable[[str], None] = _no_lap,
        where: Filter | None = None,
    ) -> Recalled:
        """The best recall_k chunks (of the slice `where` admits), best first: recall inside the slice, not
        the corpus's best filtered afterwards. Every candidate carries its bi-encoder cosine (the
        calibrated score uses it), whichever side found it. `lap(name)` after each step (timings)."""
        depth = (self.settings.hybrid_depth or recall_k) if mode == "hybrid" else recall_k
        vector = self.encoder.embed_queries([query])[0]
        lap("embed")
        wanted = ("dense", "bm25") if mode == "hybrid" else (mode,)
        sides = self.stage1.candidates(vector, query, wanted, depth, lap, where)
        candidates = self._fuse(sides)[:recall_k] if mode == "hybrid" else fusion.single(sides)
        self._fill_similarity(vector, candidates)
        lap("fuse")
        chunks = self.stage1.fetch([c.label for c in candidates])
        lap("fetch")
        return Recalled(chunks, candidates, where)

    def _fill_similarity(self, vector: np.ndarray, candidates: list[Candidate]) -> None:
        """The cosine of candidates only BM25 found, from the vectors stored in the index."""
        missing = [c for c in candidates if c.similarity is None]
        if missing:
            cosines = self.stage1.similarity(vector, [c.label for c in missing])
            for candidate, cosine in zip(missing, cosines, strict=True):
                candidate.similarity = float(cosine)

    def _fuse(self, sides: fusion.Sides) -> list[Candidate]:
        if self.settings.fusion == "weighted":
            return fusion.weighted(sides, self.settings.dense_weight)
        return fusion.reciprocal_rank(sides, self.settings.rrf_k)

    def close(self) -> None:
        self.stage1.close()

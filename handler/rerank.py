"""Stage 2: the cross-encoder reads query and passage together; its logit, calibrated with the stage-1
rank and the query's cosine, is the served 0–1 score the floor applies to. Also: the work budget, the
measured rerank rate and the deadline. Reads only `RerankSettings`; knows nothing of where candidates
came from beyond their stage-1 order and cosine."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from handler.calibration import Calibration
from handler.deadline import RerankRate
from handler.errors import TooMuchWork
from handler.manifest import CalibrationRecord
from handler.recall import Recalled
from handler.results import Reranked
from handler.settings import RerankSettings
from handler.types import CrossScorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """Logits and served scores in stage-1 order; shorter than the candidates when a deadline cut it."""

    logits: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self):  # logits, scores = rerank.candidates(...)
        return iter((self.logits, self.scores))


def default_floor(settings: RerankSettings, calibration: CalibrationRecord | None) -> tuple[float, str]:
    """The floor and where it came from: the settings, the reranker's calibration, or none (0)."""
    if settings.floor is not None:
        return settings.floor, "settings"
    if calibration is not None and calibration.floor is not None:
        return calibration.floor, "calibration"
    log.warning("no calibrated floor with the reranker: nothing is refused (run `twostage calibrate`)")
    return 0.0, "none"


@dataclass
class Rerank:
    cross: CrossScorer
    settings: RerankSettings
    calibration: Calibration
    floor: float
    floor_source: str
    rate: RerankRate  # this process's measured speed, from the settings' prior until measured

    @classmethod
    def of(cls, cross: CrossScorer, settings: RerankSettings) -> Rerank:
        """Stage 2 around a loaded cross-encoder: its calibration and floor from its manifest."""
        floor, source = default_floor(settings, cross.manifest.calibration)
        calibration = Calibration.from_record(cross.manifest.calibration)
        return cls(cross, settings, calibration, floor, source, RerankRate(settings.rerank_tokens_per_s))

    @property
    def score_model(self) -> dict[str, float | bool | str]:
        """What the served score is made of: sigmoid of these weights; `calibrated` false for a raw sigmoid."""
        return self.calibration.search.describe() | {"calibrated": self.calibration.calibrated}

    def candidates(
        self,
        query: str,
        recalled: Recalled,
        stop: threading.Event | None = None,
        budget_field: str | None = None,
        deadline: float | None = None,
    ) -> Scored:
        """Cross-encoder logits and served 0–1 scores, in stage-1 order. With `budget_field` (requests,
        not evaluation) the pairs' tokens must fit `max_rerank_tokens`. With a `deadline`
        (time.perf_counter) only the first candidates that fit it are scored."""
        encodings = self.cross.encode(query, [c.passage for c in recalled.chunks])
        if budget_field:
            self.check_budget(encodings, budget_field)
        logits = self._logits_within(encodings, deadline, stop)
        ranks = np.arange(1, len(recalled) + 1)  # candidates come in stage-1 order
        return Scored(logits, self.calibration.search(logits, recalled.cosines, ranks))

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

    def documents(
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
        passages = [self._cut(d, max_tokens_per_doc) for d in documents] if max_tokens_per_doc else documents
        encodings = self.cross.encode(query, passages)
        self.check_budget(encodings, "documents")
        logits = self.cross.logits_encoded(encodings, stop)
        scores = self.calibration.rerank(logits)
        order = np.argsort(-scores, kind="stable")[: top_n or len(documents)]
        tokens = [len(e.ids) for e in encodings]
        return [Reranked(int(i), float(scores[i]), float(logits[i]), documents[i], tokens[i]) for i in order]

    def _cut(self, text: str, tokens: int) -> str:
        """`text` up to the end of its `tokens`-th token (by the reranker's tokenizer, no specials)."""
        offsets = self.cross.tokenizer.encode(text, add_special_tokens=False).offsets
        return text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]

    def close(self) -> None:
        self.cross.close()

"""Stage 2: the cross-encoder reads query and passage together; its logit, calibrated with the stage-1
rank and the query's cosine, is the served 0–1 score the floor applies to. Also: the rerank cascade (the
served reranker reads only the best few, by stage 1's order or a small first-pass model's), the work
budget, the measured rerank rate and the deadline. Reads only `RerankSettings`; knows nothing of where
candidates came from beyond their stage-1 order and cosine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handler.calibration import Calibration, Logistic
from handler.deadline import RerankRate
from handler.errors import ArtifactError, TooMuchWork
from handler.manifest import CalibrationRecord
from handler.recall import Recalled
from handler.results import Reranked
from handler.settings import RerankSettings
from handler.types import CrossScorer

log = logging.getLogger(__name__)


def _no_lap(_name: str) -> None:
    pass


@dataclass(frozen=True)
class Scored:
    """Every candidate in stage-1 order: the served logit and 0–1 score of those the served reranker read
    (NaN for the rest), and the first pass's logit of every candidate when the cascade ran."""

    logits: np.ndarray
    scores: np.ndarray
    first_pass: np.ndarray | None = None
    deadline_cut: bool = False  # the deadline stopped the served reranker before it read what it was to read
    cascade_keep: int = 0  # how many the cascade handed to the served reranker (0: it did not run)

    def __iter__(self):  # logits, scores = rerank.candidates(...)
        return iter((self.logits, self.scores))

    @property
    def read(self) -> np.ndarray:
        return ~np.isnan(self.scores)

    @property
    def reranked(self) -> int:
        return int(self.read.sum())

    @property
    def best(self) -> float | None:
        return float(np.nanmax(self.scores)) if self.reranked else None

    def ranking(self) -> np.ndarray:
        """The candidates the served reranker read, best score first (the order results are served in)."""
        read = np.flatnonzero(self.read)
        return read[np.argsort(-self.scores[read], kind="stable")]


def cascade_order(first_pass: np.ndarray | None, score: Logistic, candidates: int) -> np.ndarray:
    """The candidates in the order the served reranker reads them: by the first-pass model's logit under the
    served score's own weights (its stage-1 prior included), best first; without a model, stage 1's order
    (the served order's prior alone). Evaluation simulates the cascade with this function, so what it
    measures is what serves."""
    if first_pass is None:
        return np.arange(candidates)
    key = score.order_key(first_pass, np.arange(1, len(first_pass) + 1))
    return np.argsort(-key, kind="stable")


CEILING_BLOCK = 10  # candidates read per step past cascade_keep


def cascade_reads(
    order: np.ndarray,
    keep: int,
    read: Callable[[np.ndarray], np.ndarray],
    score: Logistic,
    ceiling: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates the served reranker reads and their logits: `order`'s first `keep`, then, with a
    `ceiling` logit, the next CEILING_BLOCK at a time while an unread candidate at that logit could still
    take first place under `score`'s order (its stage-1 prior: the deeper the candidate, the more it needs).
    The first place is what decides a refusal, and nDCG@10 weighs it most. `read(candidates)` returns their
    logits; fewer than asked (a deadline) ends the reading. Serving and evaluation share this loop."""
    wanted = order[:keep]
    logits = read(wanted)
    while ceiling is not None and len(logits) == len(wanted) < len(order):
        best = score.order_key(logits, wanted + 1).max()
        if score.order_key(ceiling, order[len(wanted) :].min() + 1) <= best:
            break
        wanted = order[: len(wanted) + CEILING_BLOCK]
        logits = np.concatenate([logits, read(wanted[len(logits) :])])
    return wanted[: len(logits)], logits


class _Reading:
    """The served reranker reading candidates for cascade_reads, block after block: each within the token
    budget (the first block must fit, later ones end the reading quietly) and the deadline."""

    def __init__(self, rerank: Rerank, query: str, passages: list[str], budget_field, deadline, stop):
        self.rerank, self.query, self.passages = rerank, query, passages
        self.budget_field, self.deadline, self.stop = budget_field, deadline, stop
        self.tokens, self.cut = 0, False

    def __call__(self, candidates: np.ndarray) -> np.ndarray:
        encodings = self.rerank.cross.encode(self.query, [self.passages[i] for i in candidates])
        tokens = sum(len(e.ids) for e in encodings)
        if self.budget_field:
            if self.tokens and self.tokens + tokens > self.rerank.settings.max_rerank_tokens:
                return np.zeros(0, dtype=np.float32)
            self.rerank.check_budget(encodings, self.budget_field)
        self.tokens += tokens
        logits = self.rerank._logits_within(encodings, self.deadline, self.stop)
        self.cut = self.cut or len(logits) < len(candidates)
        return logits


def default_floor(settings: RerankSettings, calibration: CalibrationRecord | None) -> tuple[float, str]:
    """The floor and where it came from: the settings, the reranker's calibration, or none (0)."""
    if settings.floor is not None:
        return settings.floor, "settings"
    if calibration is not None and calibration.floor is not None:
        return calibration.floor, "calibration"
    log.warning("no calibrated floor with the reranker: nothing is refused (run `twostage calibrate`)")
    return 0.0, "none"


def check_teacher(first_pass: CrossScorer, cross: CrossScorer) -> None:
    """A first pass was distilled from the reranker served beside it; another's would choose badly, silently."""
    teacher = first_pass.manifest.teacher_sha256
    if teacher != cross.manifest.sha256:
        raise ArtifactError(
            first_pass.model_dir / "manifest.json",
            f"teacher_sha256: this first pass was distilled from the reranker {str(teacher)[:12]}…, the served one "
            f"is {cross.manifest.sha256[:12]}…; distil one from it (`twostage train --distill`, then `twostage "
            "export --which first-pass`) or remove models/first_pass (every candidate reranked)",
        )


def reading_on_logit(ceiling: float, calibration: Calibration) -> float | None:
    """cascade_ceiling (a /rerank score) as a logit through the reranker's Platt fit. A fit that does not
    rise with the logit has no such logit (a flat one would divide by zero): then the cascade reads its keep."""
    if not ceiling or calibration.rerank.a <= 0 or calibration.search.a <= 0:
        return None
    return calibration.rerank.logit_at(ceiling)


def warn_if_no_reading_on(ceiling: float, calibration: Calibration) -> None:
    if ceiling and reading_on_logit(ceiling, calibration) is None:
        log.warning(
            "cascade_ceiling %s ignored: the reranker's calibration does not rise with its logit (slopes %s, %s),"
            " so the cascade reads only cascade_keep; recalibrate (`twostage calibrate`)",
            ceiling,
            calibration.rerank.a,
            calibration.search.a,
        )


@dataclass
class Rerank:
    cross: CrossScorer
    settings: RerankSettings
    calibration: Calibration
    floor: float
    floor_source: str
    rate: RerankRate  # this process's measured speed, from the settings' prior until measured
    first_pass: CrossScorer | None = None  # the cascade's first pass

    @classmethod
    def of(cls, cross: CrossScorer, settings: RerankSettings, first_pass: CrossScorer | None = None) -> Rerank:
        """Stage 2 around a loaded cross-encoder: its calibration and floor from its manifest."""
        if first_pass is not None:
            check_teacher(first_pass, cross)
        floor, source = default_floor(settings, cross.manifest.calibration)
        calibration = Calibration.from_record(cross.manifest.calibration)
        rate = RerankRate(settings.rerank_tokens_per_s)
        warn_if_no_reading_on(settings.cascade_ceiling, calibration)
        return cls(cross, settings, calibration, floor, source, rate, first_pass)

    @property
    def cascade(self) -> str:
        """How the cascade runs by default: off, or its first pass and keep."""
        keep, ceiling = self.settings.cascade_keep, self.settings.cascade_ceiling
        if not keep:
            return "off"
        reads_on = f", reading on to ceiling {ceiling}" if self.ceiling_logit is not None else ""
        return f"{'first-pass model' if self.first_pass else 'stage-1 order'}, keep {keep}{reads_on}"

    @property
    def score_model(self) -> dict[str, float | bool | str]:
        """What the served score is made of: sigmoid of these weights; `calibrated` false for a raw sigmoid."""
        calibration = self.calibration
        return calibration.search.describe() | {
            "calibrated": calibration.calibrated,
            "calibrated_on": calibration.source,
        }

    def candidates(
        self,
        query: str,
        recalled: Recalled,
        stop: threading.Event | None = None,
        budget_field: str | None = None,
        deadline: float | None = None,
        keep: int | None = None,
        lap: Callable[[str], None] = _no_lap,
    ) -> Scored:
        """Served logits and 0–1 scores, in stage-1 order. The cascade (0 < keep < candidates): the served
        reranker reads only the first pass's best `keep` (the first-pass model's when loaded, else stage 1's
        order); else it reads every candidate. With `budget_field` (requests, not evaluation) each model's
        pairs must fit `max_rerank_tokens`. With a `deadline` (time.perf_counter) the served reranker reads
        in that order only what fits it."""
        keep = self.settings.cascade_keep if keep is None else keep
        passages = [c.passage for c in recalled.chunks]
        first, order = None, np.arange(len(passages))
        cascading = 0 < keep < len(passages)
        if cascading and self.first_pass is not None:
            encodings = self.first_pass.encode(query, passages)
            if budget_field:
                self.check_budget(encodings, budget_field)
            first = self.first_pass.logits_encoded(encodings, stop)
            lap("first_pass")
        if cascading:
            order = cascade_order(first, self.calibration.search, len(passages))
        reading = _Reading(self, query, passages, budget_field, deadline, stop)
        ceiling, score = self.ceiling_logit if cascading else None, self.calibration.search
        read, read_logits = cascade_reads(order, keep if cascading else len(order), reading, score, ceiling)
        cosines = recalled.cosines
        logits = np.full(len(passages), np.nan, dtype=np.float32)
        scores = np.full(len(passages), np.nan, dtype=np.float32)
        logits[read] = read_logits
        scores[read] = self.calibration.search(
            read_logits, cosines[read], read + 1, query_cosine=cosines.max(initial=0.0)
        )
        return Scored(logits, scores, first, deadline_cut=reading.cut, cascade_keep=keep if cascading else 0)

    @property
    def ceiling_logit(self) -> float | None:
        """The logit the cascade assumes no unread candidate exceeds; None: it reads only its keep."""
        return reading_on_logit(self.settings.cascade_ceiling, self.calibration)

    def _logits_within(self, encodings: list, deadline: float | None, stop: threading.Event | None) -> np.ndarray:
        """All logits when the measured rate says they fit the deadline (then exactly as without one);
        else batch after batch in the given order, each sized to the time left, until the next does not fit."""
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

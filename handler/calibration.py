"""The served 0–1 relevance score and what it is calibrated from (`twostage calibrate` fits both).

A listwise-trained reranker's logits are not probabilities, and they say little about a query from
another domain: a biomedical reranker can be sure about an aeronautics question. So /search scores a
candidate with a logistic model of three signals, fitted on labelled pairs: the reranker's logit, its
stage-1 rank (ln rank: where the reranker hesitates, stage 1's order stands) and the bi-encoder cosine
of the query's best candidate (how much this corpus has to say about the question at all). Results are
sorted by that score and the floor applies to it. The cosine is the query's, not the pair's: it
refuses foreign questions without reordering a query's candidates, which a per-pair cosine did, at a
cost in nDCG (docs/results.md §5.3). /rerank gets documents without stage 1 and scores the logit alone
(Platt scaling). Out-of-domain refusal on SciFact and Cranfield: docs/results.md §6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handler.manifest import CalibrationRecord


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Logistic:
    a: float = 1.0  # per logit
    b: float = 0.0  # intercept
    c: float = 0.0  # per cosine
    d: float = 0.0  # per ln(stage-1 rank): the stage-1 order's say in the score, and so in the order
    cosine: str = "pair"  # "query": the cosine of the query's best candidate, the same for all of them

    def __call__(
        self,
        logits: np.ndarray,
        cosines: np.ndarray | None = None,
        ranks: np.ndarray | None = None,
        query_cosine: float | None = None,
    ) -> np.ndarray:
        """Scores of these candidates: `cosines` and `ranks` are theirs (aligned with `logits`);
        `query_cosine` is the best of every candidate of the query (else the best of `cosines`)."""
        z = self.a * np.asarray(logits, dtype=np.float64) + self.b
        if self.c:
            cosines = np.asarray(cosines, dtype=np.float64)
            if self.cosine == "query":
                z = z + self.c * (cosines.max(initial=0.0) if query_cosine is None else query_cosine)
            else:
                z = z + self.c * cosines
        if self.d:
            z = z + self.d * np.log(np.asarray(ranks, dtype=np.float64))
        return sigmoid(z).astype(np.float32)

    def order_key(self, logits: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """What orders one query's candidates under this score: a·logit + d·ln(rank) (the cosine term is
        the query's, the same for all of them)."""
        return self.a * np.asarray(logits, dtype=np.float64) + self.d * np.log(np.asarray(ranks, dtype=np.float64))

    def logit_at(self, probability: float) -> float:
        """The logit this score (the logit alone: Platt) maps to `probability`."""
        return (float(np.log(probability / (1.0 - probability))) - self.b) / self.a

    def describe(self) -> dict[str, float | str]:
        return {
            "logit": self.a,
            "cosine": self.c,
            "cosine_of": self.cosine,
            "ln_stage1_rank": self.d,
            "intercept": self.b,
        }


@dataclass(frozen=True)
class Calibration:
    rerank: Logistic  # logit alone (/rerank; Platt)
    search: Logistic  # logit, cosine and stage-1 rank (/search: the order and the floor), or as fitted
    calibrated: bool = True  # False: no fit shipped with the reranker, the scores are its raw sigmoid
    source: str | None = None  # what it was fitted on: labels, traces, or corpus (pseudo-queries, no labels)

    @classmethod
    def from_record(cls, record: CalibrationRecord | dict | None) -> Calibration:
        """From a manifest's `calibration`: {"platt": {a, b}, "platt_cosine": {a, b, c, d?, cosine?}, "floor": …}."""
        record = CalibrationRecord.model_validate(record or {})
        rerank = Logistic(**record.platt.model_dump()) if record.platt else Logistic()
        search = Logistic(**record.platt_cosine.model_dump()) if record.platt_cosine else rerank
        return cls(rerank, search, record.platt is not None, record.source)

"""The served 0–1 relevance score and what it is calibrated from (`twostage calibrate` fits both).

A listwise-trained reranker's logits are not probabilities, and they say little about a query from
another domain: a biomedical reranker can be sure about an aeronautics question. So /search scores
a pair from two signals, the reranker's logit and the bi-encoder's cosine of the same pair, with a
logistic model fitted on labelled pairs; the floor is chosen on that score. /rerank gets documents
without stage 1 and scores the logit alone (Platt scaling). Out-of-domain refusal on SciFact and
Cranfield: docs/results.md §6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Logistic:
    a: float = 1.0  # per logit
    b: float = 0.0  # intercept
    c: float = 0.0  # per cosine

    def __call__(self, logits: np.ndarray, cosines: np.ndarray | None = None) -> np.ndarray:
        z = self.a * np.asarray(logits, dtype=np.float64) + self.b
        if self.c:
            z = z + self.c * np.asarray(cosines, dtype=np.float64)
        return sigmoid(z).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    rerank: Logistic  # logit alone (/rerank; Platt)
    search: Logistic  # logit and cosine (/search, and the floor), or the logit alone if fitted so

    @classmethod
    def from_dict(cls, calibration: dict | None) -> Calibration:
        """From a manifest's `calibration`: {"platt": {a, b}, "platt_cosine": {a, b, c}, "floor": …}."""
        calibration = calibration or {}
        rerank = Logistic(**calibration["platt"]) if "platt" in calibration else Logistic()
        search = Logistic(**calibration["platt_cosine"]) if "platt_cosine" in calibration else rerank
        return cls(rerank, search)

    @property
    def uses_cosine(self) -> bool:
        return self.search.c != 0.0

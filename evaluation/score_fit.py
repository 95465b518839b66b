"""Fitting the served score to labelled candidates, and placing the floor: what `twostage calibrate`
does with labelled queries (evaluation/calibrate.py) and with pseudo-queries from a corpus
(evaluation/corpus_calibration.py) alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evaluation.settings import CalibrateSettings
from handler.calibration import Logistic
from handler.pipeline import Retriever


@dataclass
class QueryPairs:
    """One query's stage-1 candidates (best chunk per document): reranker logit, cosine, stage-1 rank and
    label, and the cosine of the query's best candidate (over all its chunks)."""

    qid: str
    logits: np.ndarray
    cosines: np.ndarray
    ranks: np.ndarray
    labels: np.ndarray
    query_cosine: float = 0.0

    def scores(self, model: Logistic) -> np.ndarray:
        """What `model` serves for these candidates."""
        cosines = np.full(len(self.logits), self.query_cosine) if model.cosine == "query" else self.cosines
        return model(self.logits, cosines, self.ranks)


def query_pairs(retriever: Retriever, qid: str, text: str, relevant: dict, k: int) -> QueryPairs:
    recalled = retriever.recall(text, k, retriever.recall.default_mode)
    chunks, candidates = recalled
    logits = retriever.rerank.candidates(text, recalled, keep=0).logits  # every candidate, as a fit needs
    best: dict[str, tuple[float, float, int]] = {}  # doc → (logit, cosine, stage-1 rank) of its best chunk
    for rank, (chunk, candidate, logit) in enumerate(zip(chunks, candidates, logits.tolist(), strict=True), 1):
        if logit > best.get(chunk.doc_id, (-np.inf, 0.0, 0))[0]:
            best[chunk.doc_id] = (logit, candidate.similarity, rank)
    values = np.array(list(best.values()), dtype=np.float64).reshape(-1, 3)
    labels = np.array([1 if relevant.get(d, 0) > 0 else 0 for d in best])
    query_cosine = max((c.similarity for c in candidates), default=0.0)
    return QueryPairs(qid, values[:, 0], values[:, 1], values[:, 2], labels, query_cosine)


def labelled_pairs(retriever: Retriever, queries: dict, qrels: dict, k: int) -> list[QueryPairs]:
    """Each query's top-k stage-1 candidates, relevant = in the qrels."""
    return [
        query_pairs(retriever, qid, text, qrels.get(qid, {}), k)
        for qid, text in tqdm(queries.items(), desc="scoring", unit="q")
    ]


def _fit(features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[list[float], float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=1000).fit(features, labels, sample_weight=weights)
    return [round(float(v), 6) for v in model.coef_[0]], round(float(model.intercept_[0]), 6)


def fit_platt(pairs: list[QueryPairs]) -> Logistic:
    """The logit alone (/rerank: caller's documents have no stage 1)."""
    (a,), b = _fit(np.concatenate([p.logits for p in pairs])[:, None], np.concatenate([p.labels for p in pairs]))
    return Logistic(a=a, b=b)


def fit_search(pairs: list[QueryPairs], stage1_prior: float, weights: np.ndarray | None = None) -> Logistic:
    """The /search score: sigmoid(a·(logit − prior·ln rank) + c·query's best cosine + b). One feature for the
    logit and the rank, so that within a query the score sorts exactly as logit − prior·ln(rank) does.
    `weights`: one per candidate pair, in order (default: every pair alike)."""
    keyed = np.concatenate([p.logits - stage1_prior * np.log(p.ranks) for p in pairs])
    query = np.concatenate([np.full(len(p.logits), p.query_cosine) for p in pairs])
    (a, c), b = _fit(np.column_stack([keyed, query]), np.concatenate([p.labels for p in pairs]), weights)
    return Logistic(a=a, b=b, c=c, d=round(-stage1_prior * a, 6), cosine="query")


def balanced_weights(*sets: list[QueryPairs]) -> np.ndarray:
    """Pair weights under which each set of queries weighs as much as the first in total, however many
    queries and candidates it has (concatenated in the order given)."""
    sizes = [sum(len(p.logits) for p in queries) for queries in sets]
    return np.concatenate([np.full(size, sizes[0] / max(1, size)) for size in sizes])


def _best(pairs: QueryPairs, model: Logistic) -> float | None:
    """The query's best served score (the served order is by that score, so it tops any top-n)."""
    return float(pairs.scores(model).max()) if len(pairs.logits) else None


def best_scores(queries: list[QueryPairs], model: Logistic) -> np.ndarray:
    """Each query's best served score; a query without candidates has nothing to answer with (0)."""
    return np.array([_best(p, model) or 0.0 for p in queries])


def answerable_best(pairs: list[QueryPairs], model: Logistic) -> np.ndarray:
    """Best served score of each query with a relevant doc among its top 10 after reranking."""
    answerable = [p for p in pairs if p.labels[np.argsort(-p.scores(model), kind="stable")[:10]].any()]
    return np.array([_best(p, model) for p in answerable])


def choose_floor(
    pairs: list[QueryPairs], model: Logistic, settings: CalibrateSettings, foreign: list[list[QueryPairs]]
) -> tuple[float, str, list[float] | None]:
    """The floor, the objective that set it, and the window (lowest, highest floor meeting both targets)."""
    if settings.objective == "false-accept":
        negatives = np.concatenate([p.scores(model)[p.labels == 0] for p in pairs])
        return float(np.quantile(negatives, 1 - settings.target, method="higher")), "false-accept", None
    # The highest floor that still answers (1 - target) of the answerable queries...
    keep = float(np.quantile(answerable_best(pairs, model), settings.target, method="lower"))
    foreign = [queries for queries in foreign if queries]
    if settings.objective == "answerable-refusal" or not foreign:
        return keep, "answerable-refusal", None
    # ...and the lowest that refuses ood_target of every set of foreign queries.
    refuse = max(
        float(np.quantile(best_scores(queries, model), settings.ood_target, method="higher")) for queries in foreign
    )
    if refuse >= keep:  # the targets conflict on these queries: answering comes first
        return keep, "answerable-refusal", [refuse, keep]
    # Both limits are quantiles of a few dozen queries, and the dev queries run easier than unseen ones
    # (the reranker was selected on them): the middle of the window leaves room on both sides.
    # Geometric, because these low probabilities span orders of magnitude.
    return float(np.sqrt(refuse * keep)), "window", [refuse, keep]


def keep_drop(pairs: list[QueryPairs], model: Logistic, floor: float) -> dict:
    """Pair-level precision and recall of keeping (score ≥ floor) and of dropping."""
    scores = np.concatenate([p.scores(model) for p in pairs])
    labels = np.concatenate([p.labels for p in pairs]).astype(bool)
    kept = scores >= floor

    def ratio(a, b):
        return round(float(a) / float(b), 4) if b else None

    return {
        "keep_precision": ratio((kept & labels).sum(), kept.sum()),
        "keep_recall": ratio((kept & labels).sum(), labels.sum()),
        "drop_precision": ratio((~kept & ~labels).sum(), (~kept).sum()),
        "drop_recall": ratio((~kept & ~labels).sum(), (~labels).sum()),
        "pairs": int(len(labels)),
    }


def refusal_rate(pairs: list[QueryPairs], model: Logistic, floor: float) -> float:
    """Share of queries whose best served score stays below the floor."""
    return round(float((best_scores(pairs, model) < floor).mean()), 4) if pairs else 0.0


def gate_of_pairs(pairs: list[QueryPairs], model, floor: float, top: int = 10) -> dict:
    """The gate on the pseudo-queries' top results, in `twostage eval`'s numbers."""
    return gate_of_scores(((p.scores(model), p.labels.astype(bool)) for p in pairs), floor, top)


def gate_of_scores(queries, floor: float, top: int) -> dict:
    """The floor as a gate on each query's top results, from (served scores, relevant) arrays per query:
    relevant ones kept, irrelevant ones dropped, the precision of what is kept, and the queries refused."""
    kept_relevant = relevant = kept_irrelevant = irrelevant = refused = count = 0
    for scores, labels in queries:
        order = np.argsort(-scores, kind="stable")[:top]
        kept, labels = scores[order] >= floor, labels[order]
        relevant += int(labels.sum())
        kept_relevant += int((kept & labels).sum())
        irrelevant += int((~labels).sum())
        kept_irrelevant += int((kept & ~labels).sum())
        refused += int(not kept.any())
        count += 1
    return gate_numbers(kept_relevant, relevant, kept_irrelevant, irrelevant, refused, count)


def gate_numbers(kept_relevant, relevant, kept_irrelevant, irrelevant, refused, queries) -> dict:
    def share(a, b):
        return round(a / b, 4) if b else None

    return {
        "relevant_kept": share(kept_relevant, relevant),
        "irrelevant_dropped": share(irrelevant - kept_irrelevant, irrelevant),
        "kept_precision": share(kept_relevant, kept_relevant + kept_irrelevant),
        "refused_queries": share(refused, queries),
    }


def distributions(pairs: list[QueryPairs], off_topic: list[QueryPairs], model) -> dict:
    """What the floor was chosen from: each answer's score, the padding's, each off-topic question's best."""
    answers = np.concatenate([p.scores(model)[p.labels == 1] for p in pairs])
    padding = np.concatenate([p.scores(model)[p.labels == 0] for p in pairs])
    return {"answers": answers, "padding": padding, "off_topic": best_scores(off_topic, model)}


def calibration_record(source: str, platt: Logistic, search: Logistic, floor: float, objective: str, window,
                       settings: CalibrateSettings, report: dict) -> dict:  # fmt: skip
    """What `twostage calibrate` writes beside the reranker (handler.manifest.CalibrationRecord)."""
    return {
        "source": source,
        "platt": {"a": platt.a, "b": platt.b},
        "platt_cosine": {"a": search.a, "b": search.b, "c": search.c, "d": search.d, "cosine": search.cosine},
        "stage1_prior": settings.stage1_prior,
        "floor": round(floor, 6),
        "objective": objective,
        "target": settings.target,
        "ood_target": settings.ood_target if window else None,
        "report": report,
    }

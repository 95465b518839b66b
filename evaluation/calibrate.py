"""`twostage calibrate`: a 0–1 score that means what it says and a floor picked from data.

Labelled pairs: stage-1 candidates of judged queries, relevant = in the qrels. A logistic model maps
each candidate to a probability of relevance, the /search score that also sorts the results: the
reranker's logit with the stage-1 prior (logit − stage1_prior·ln(stage-1 rank), one feature, so the
order within a query is exactly that key) and the cosine of the query's best candidate (with
`ood_data`, foreign pairs join the fit as non-relevant: the same queries against that corpus, and that
corpus's titles asked against ours); Platt scaling of the logit alone scores /rerank. The floor
(objective `window`) sits between the highest score that keeps answerable queries (a relevant doc in
the top 10) answered at the target rate and the lowest that refuses `ood_target`
of each set of foreign queries; `answerable-refusal` takes the first alone, `false-accept` admits at
most the target share of non-relevant pairs. Logged score traces (JSONL `{"scores": [...]}`
per request, or the serving JSON log, whose /search lines carry `best_score`) pick the floor as a
quantile of each request's best score instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.beir import corpus_titles, dev_queries, load_beir
from evaluation.evaluate import eval_index
from evaluation.settings import CalibrateSettings, EvalSettings
from handler.artifacts import Artifacts
from handler.calibration import Logistic
from handler.manifest import CALIBRATION_FILE, CalibrationRecord, ModelManifest, read_manifest, write_manifest
from handler.pipeline import Retriever
from handler.settings import Settings


def _retriever(settings: CalibrateSettings, data_dir: Path) -> Retriever:
    index = eval_index(EvalSettings(data=data_dir, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir))
    return Retriever.from_settings(Settings(artifacts_dir=settings.artifacts_dir, index_path=index, floor=0.0))


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


def _fit(features: np.ndarray, labels: np.ndarray) -> tuple[list[float], float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=1000).fit(features, labels)
    return [round(float(v), 6) for v in model.coef_[0]], round(float(model.intercept_[0]), 6)


def fit_platt(pairs: list[QueryPairs]) -> Logistic:
    """The logit alone (/rerank: caller's documents have no stage 1)."""
    (a,), b = _fit(np.concatenate([p.logits for p in pairs])[:, None], np.concatenate([p.labels for p in pairs]))
    return Logistic(a=a, b=b)


def fit_search(pairs: list[QueryPairs], stage1_prior: float) -> Logistic:
    """The /search score: sigmoid(a·(logit − prior·ln rank) + c·query's best cosine + b). One feature for the
    logit and the rank, so that within a query the score sorts exactly as logit − prior·ln(rank) does."""
    keyed = np.concatenate([p.logits - stage1_prior * np.log(p.ranks) for p in pairs])
    query = np.concatenate([np.full(len(p.logits), p.query_cosine) for p in pairs])
    (a, c), b = _fit(np.column_stack([keyed, query]), np.concatenate([p.labels for p in pairs]))
    return Logistic(a=a, b=b, c=c, d=round(-stage1_prior * a, 6), cosine="query")


def _best(pairs: QueryPairs, model: Logistic) -> float | None:
    """The query's best served score (the served order is by that score, so it tops any top-n)."""
    return float(pairs.scores(model).max()) if len(pairs.logits) else None


def _best_scores(queries: list[QueryPairs], model: Logistic) -> np.ndarray:
    """Each query's best served score; a query without candidates has nothing to answer with (0)."""
    return np.array([_best(p, model) or 0.0 for p in queries])


def _answerable_best(pairs: list[QueryPairs], model: Logistic) -> np.ndarray:
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
    keep = float(np.quantile(_answerable_best(pairs, model), settings.target, method="lower"))
    foreign = [queries for queries in foreign if queries]
    if settings.objective == "answerable-refusal" or not foreign:
        return keep, "answerable-refusal", None
    # ...and the lowest that refuses ood_target of every set of foreign queries.
    refuse = max(
        float(np.quantile(_best_scores(queries, model), settings.ood_target, method="higher")) for queries in foreign
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
    return round(float((_best_scores(pairs, model) < floor).mean()), 4) if pairs else 0.0


def _dev_queries(settings: CalibrateSettings, data) -> dict:
    """The held-out dev queries recorded at training time, when the reranker carries its training log."""
    dev = dev_queries(data.queries, Artifacts(settings.artifacts_dir).cross) if settings.dev_only else None
    return dev or data.queries


def calibrate_from_pairs(settings: CalibrateSettings) -> dict:
    data = load_beir(settings.data, settings.split)
    theirs = load_beir(settings.ood_data, settings.ood_split) if settings.ood_data else None  # fail before any work
    queries = _dev_queries(settings, data)
    retriever = _retriever(settings, settings.data)
    pairs = labelled_pairs(retriever, queries, data.qrels, settings.candidates)
    other = _retriever(settings, settings.ood_data) if settings.ood_data else None
    # The same queries against a foreign corpus: every candidate there is non-relevant, which
    # teaches the fit how little a confident logit means when the cosine says "other domain".
    foreign = labelled_pairs(other, queries, {}, settings.candidates) if other else []
    # Titles of the foreign corpus asked here: foreign questions the other way round, still without
    # touching ood_data's judged queries (those stay an untouched refusal test).
    titles = corpus_titles(theirs.corpus, settings.ood_titles) if theirs else {}
    foreign_here = labelled_pairs(retriever, titles, {}, settings.candidates) if titles else []
    platt = fit_platt(pairs)
    search = fit_search(pairs + foreign + foreign_here, settings.stage1_prior)
    floor, objective, window = choose_floor(pairs, search, settings, [foreign, foreign_here])
    report = {
        "fitted_on": {
            "data": str(settings.data),
            "split": settings.split,
            "queries": len(queries),
            "foreign_corpus": str(settings.ood_data) if other else None,
            "foreign_titles": len(titles),
        },
        "window": window,
        "keep_drop": keep_drop(pairs, search, floor),
        "answerable_refused": round(float((_answerable_best(pairs, search) < floor).mean()), 4),
        "foreign_refused": {
            "queries_on_foreign_corpus": refusal_rate(foreign, search, floor) if foreign else None,
            "foreign_titles_here": refusal_rate(foreign_here, search, floor) if foreign_here else None,
        },
    }
    if settings.eval_split:
        report |= _evaluate(settings, retriever, other, theirs, search, floor)
    return {
        "source": "labels",
        "platt": {"a": platt.a, "b": platt.b},
        "platt_cosine": {"a": search.a, "b": search.b, "c": search.c, "d": search.d, "cosine": search.cosine},
        "stage1_prior": settings.stage1_prior,
        "floor": round(floor, 6),
        "objective": objective,
        "target": settings.target,
        "ood_target": settings.ood_target if window else None,
        "report": report,
    }


def _evaluate(settings: CalibrateSettings, retriever: Retriever, other: Retriever | None, theirs, model, floor) -> dict:
    """In-domain refusal on the eval split, and out-of-domain refusal both ways when there is ood_data."""
    test = load_beir(settings.data, settings.eval_split)
    test_pairs = labelled_pairs(retriever, test.queries, test.qrels, settings.candidates)
    answerable = _answerable_best(test_pairs, model)
    report = {
        "in_domain": {
            "split": settings.eval_split,
            "answerable_queries": int(len(answerable)),
            "answerable_refused": round(float((answerable < floor).mean()), 4),
            "keep_drop": keep_drop(test_pairs, model, floor),
        }
    }
    if other:
        ours_there = labelled_pairs(other, test.queries, {}, settings.candidates)
        theirs_here = labelled_pairs(retriever, theirs.queries, {}, settings.candidates)
        report["out_of_domain"] = {
            f"{settings.data.name}_queries_on_{settings.ood_data.name}": refusal_rate(ours_there, model, floor),
            f"{settings.ood_data.name}_queries_on_{settings.data.name}": refusal_rate(theirs_here, model, floor),
        }
    return report


def best_of_trace(line: str) -> float | None:
    """A trace line's best score: `{"scores": [...]}`, or the serving request log's `best_score`
    (/search lines; other log lines are skipped)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if "scores" in record:
        return max(record["scores"], default=0.0)
    return record.get("best_score")


def calibrate_from_traces(settings: CalibrateSettings) -> dict:
    """Logged traces: refuse the target share of requests, by their best score."""
    lines = settings.traces.read_text().splitlines()
    best = [score for score in map(best_of_trace, lines) if score is not None]
    if not best:
        raise ValueError(f"{settings.traces}: no score traces")
    floor = float(np.quantile(best, settings.target, method="lower"))
    return {
        "source": "traces",
        "floor": round(floor, 6),
        "objective": "trace-refusal",
        "target": settings.target,
        "report": {"fitted_on": {"traces": str(settings.traces), "requests": len(best)}},
    }


def calibrate(settings: CalibrateSettings) -> dict:
    calibration = calibrate_from_traces(settings) if settings.traces else calibrate_from_pairs(settings)
    cross_dir = Artifacts(settings.artifacts_dir).cross
    manifest = read_manifest(cross_dir, ModelManifest)
    if settings.traces and manifest.calibration:  # traces are already calibrated scores: keep the models
        calibration |= manifest.calibration.model_dump(include={"platt", "platt_cosine"}, exclude_none=True)
    manifest.calibration = CalibrationRecord.model_validate(calibration)
    write_manifest(cross_dir, manifest)
    stored = manifest.calibration.model_dump(mode="json", exclude_defaults=True)
    # A copy beside the model: put it in the HF model directory and every export carries it.
    (cross_dir / CALIBRATION_FILE).write_text(json.dumps(stored, indent=2) + "\n")
    return stored

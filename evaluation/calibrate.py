"""`twostage calibrate`: a 0–1 score that means what it says (Platt) and a floor picked from data.

Labelled pairs: stage-1 candidates of judged queries, relevant = in the qrels. Platt scaling maps the
reranker's logits to probabilities; the floor is then the score that keeps answerable queries
(a relevant doc in the top 10) answered at the target rate, or that admits at most the target share
of non-relevant pairs. Logged score traces (JSONL `{"scores": [...]}` per request) pick the floor as
a quantile of each request's best score instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.beir import load_beir
from evaluation.evaluate import ensure_index
from evaluation.settings import CalibrateSettings, EvalSettings
from handler.manifest import CALIBRATION_FILE, TRAINING_LOG, ModelManifest, read_manifest, write_manifest
from handler.onnx_model import sigmoid
from handler.pipeline import Retriever
from handler.settings import Settings


def _retriever(settings: CalibrateSettings, data_dir: Path) -> Retriever:
    index = ensure_index(EvalSettings(data=data_dir, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir))
    return Retriever.from_settings(Settings(artifacts_dir=settings.artifacts_dir, index_path=index, floor=0.0))


def labelled_pairs(
    retriever: Retriever, queries: dict, qrels: dict, k: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(query id, logits, labels) over each query's top-k stage-1 candidates, max over chunks per doc."""
    out = []
    for qid, text in tqdm(queries.items(), desc="scoring", unit="q"):
        chunks, _ = retriever.recall(text, k, retriever.default_mode)
        logits, _ = retriever.score(text, chunks)
        best: dict[str, float] = {}
        for chunk, logit in zip(chunks, logits.tolist(), strict=True):
            best[chunk.doc_id] = max(logit, best.get(chunk.doc_id, -np.inf))
        docs = list(best)
        labels = np.array([1 if qrels.get(qid, {}).get(d, 0) > 0 else 0 for d in docs])
        out.append((qid, np.array([best[d] for d in docs]), labels))
    return out


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4).fit(logits.reshape(-1, 1), labels)
    return {"a": round(float(model.coef_[0, 0]), 6), "b": round(float(model.intercept_[0]), 6)}


def _answerable_best(pairs, platt: dict) -> np.ndarray:
    """Best calibrated score of each query with a relevant doc among its top 10 after reranking."""
    best = []
    for _, logits, labels in pairs:
        order = np.argsort(-logits)[:10]
        if labels[order].any():
            best.append(float(sigmoid(platt["a"] * logits[order[0]] + platt["b"])))
    return np.array(best)


def choose_floor(pairs, platt: dict, settings: CalibrateSettings) -> float:
    if settings.objective == "answerable-refusal":
        return float(np.quantile(_answerable_best(pairs, platt), settings.target, method="lower"))
    negatives = np.concatenate([sigmoid(platt["a"] * lg[lb == 0] + platt["b"]) for _, lg, lb in pairs])
    return float(np.quantile(negatives, 1 - settings.target, method="higher"))


def keep_drop(pairs, platt: dict, floor: float) -> dict:
    """Pair-level precision and recall of keeping (score ≥ floor) and of dropping."""
    scores = np.concatenate([sigmoid(platt["a"] * lg + platt["b"]) for _, lg, _ in pairs])
    labels = np.concatenate([lb for _, _, lb in pairs]).astype(bool)
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


def refusal_rate(retriever: Retriever, queries: dict, platt: dict, floor: float, k: int) -> float:
    """Share of queries whose best calibrated score stays below the floor."""
    refused = 0
    for text in tqdm(queries.values(), desc="refusal", unit="q"):
        chunks, _ = retriever.recall(text, k, retriever.default_mode)
        logits, _ = retriever.score(text, chunks)
        refused += float(sigmoid(platt["a"] * logits.max() + platt["b"])) < floor if len(logits) else 1
    return round(refused / max(1, len(queries)), 4)


def _dev_queries(settings: CalibrateSettings, data) -> dict:
    """The held-out dev queries recorded at training time, when the reranker carries its training log."""
    log_path = settings.artifacts_dir / "models" / "cross" / TRAINING_LOG
    if settings.dev_only and log_path.is_file():
        dev = set(json.loads(log_path.read_text()).get("dev_query_ids", []))
        if dev:
            return {q: t for q, t in data.queries.items() if q in dev}
    return data.queries


def calibrate_from_pairs(settings: CalibrateSettings) -> dict:
    data = load_beir(settings.data, settings.split)
    queries = _dev_queries(settings, data)
    retriever = _retriever(settings, settings.data)
    pairs = labelled_pairs(retriever, queries, data.qrels, settings.candidates)
    platt = fit_platt(np.concatenate([p[1] for p in pairs]), np.concatenate([p[2] for p in pairs]))
    floor = choose_floor(pairs, platt, settings)
    report = {
        "fitted_on": {"data": str(settings.data), "split": settings.split, "queries": len(queries)},
        "keep_drop": keep_drop(pairs, platt, floor),
    }
    if settings.eval_split:
        test = load_beir(settings.data, settings.eval_split)
        test_pairs = labelled_pairs(retriever, test.queries, test.qrels, settings.candidates)
        answerable = _answerable_best(test_pairs, platt)
        report["in_domain"] = {
            "split": settings.eval_split,
            "answerable_queries": int(len(answerable)),
            "answerable_refused": round(float((answerable < floor).mean()), 4),
            "keep_drop": keep_drop(test_pairs, platt, floor),
        }
        if settings.ood_data:
            report["out_of_domain"] = _out_of_domain(settings, retriever, test.queries, platt, floor)
    return {
        "platt": platt,
        "floor": round(floor, 6),
        "objective": settings.objective,
        "target": settings.target,
        "report": report,
    }


def _out_of_domain(settings: CalibrateSettings, retriever: Retriever, queries: dict, platt: dict, floor: float):
    """Queries of the calibration data against another corpus, and that corpus's queries against ours."""
    other = load_beir(settings.ood_data, settings.ood_split)
    other_retriever = _retriever(settings, settings.ood_data)
    return {
        f"{settings.data.name}_queries_on_{settings.ood_data.name}": refusal_rate(
            other_retriever, queries, platt, floor, settings.candidates
        ),
        f"{settings.ood_data.name}_queries_on_{settings.data.name}": refusal_rate(
            retriever, other.queries, platt, floor, settings.candidates
        ),
    }


def calibrate_from_traces(settings: CalibrateSettings) -> dict:
    """Logged traces: refuse the target share of requests, by their best score."""
    best = [
        max(json.loads(line)["scores"], default=0.0)
        for line in settings.traces.read_text().splitlines()
        if line.strip()
    ]
    if not best:
        raise ValueError(f"{settings.traces}: no score traces")
    floor = float(np.quantile(best, settings.target, method="lower"))
    return {
        "floor": round(floor, 6),
        "objective": "trace-refusal",
        "target": settings.target,
        "report": {"fitted_on": {"traces": str(settings.traces), "requests": len(best)}},
    }


def calibrate(settings: CalibrateSettings) -> dict:
    calibration = calibrate_from_traces(settings) if settings.traces else calibrate_from_pairs(settings)
    cross_dir = settings.artifacts_dir / "models" / "cross"
    manifest = read_manifest(cross_dir, ModelManifest)
    if settings.traces and manifest.calibration and "platt" in manifest.calibration:
        calibration["platt"] = manifest.calibration["platt"]  # traces are already calibrated scores
    manifest.calibration = calibration
    write_manifest(cross_dir, manifest)
    # A copy beside the model: put it in the HF model directory and every export carries it.
    (cross_dir / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2) + "\n")
    return calibration

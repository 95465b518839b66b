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
from pathlib import Path

import numpy as np

from evaluation.beir import corpus_titles, dev_queries, load_beir
from evaluation.evaluate import eval_index
from evaluation.score_fit import (
    answerable_best,
    calibration_record,
    choose_floor,
    distributions,
    fit_platt,
    fit_search,
    keep_drop,
    labelled_pairs,
    refusal_rate,
)
from evaluation.settings import CalibrateSettings, EvalSettings
from handler.artifacts import Artifacts
from handler.manifest import CALIBRATION_FILE, CalibrationRecord, ModelManifest, read_manifest, write_manifest
from handler.pipeline import Retriever
from handler.settings import Settings


def _retriever(settings: CalibrateSettings, data_dir: Path) -> Retriever:
    index = eval_index(EvalSettings(data=data_dir, artifacts_dir=settings.artifacts_dir, eval_dir=settings.eval_dir))
    return Retriever.from_settings(Settings(artifacts_dir=settings.artifacts_dir, index_path=index, floor=0.0))


def _dev_queries(settings: CalibrateSettings, data) -> dict:
    """The held-out dev queries recorded at training time, when the reranker carries its training log."""
    dev = dev_queries(data.queries, Artifacts(settings.artifacts_dir).cross) if settings.dev_only else None
    return dev or data.queries


def calibrate_from_pairs(settings: CalibrateSettings) -> tuple[dict, dict]:
    """The calibration, and the score distributions it was chosen from (for --plot)."""
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
        "answerable_refused": round(float((answerable_best(pairs, search) < floor).mean()), 4),
        "foreign_refused": {
            "queries_on_foreign_corpus": refusal_rate(foreign, search, floor) if foreign else None,
            "foreign_titles_here": refusal_rate(foreign_here, search, floor) if foreign_here else None,
        },
    }
    if settings.eval_split:
        report |= _evaluate(settings, retriever, other, theirs, search, floor)
    calibration = calibration_record("labels", platt, search, floor, objective, window, settings, report)
    return calibration, distributions(pairs, foreign + foreign_here, search)


def _evaluate(settings: CalibrateSettings, retriever: Retriever, other: Retriever | None, theirs, model, floor) -> dict:
    """In-domain refusal on the eval split, and out-of-domain refusal both ways when there is ood_data."""
    test = load_beir(settings.data, settings.eval_split)
    test_pairs = labelled_pairs(retriever, test.queries, test.qrels, settings.candidates)
    answerable = answerable_best(test_pairs, model)
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


def calibrate_from_traces(settings: CalibrateSettings) -> tuple[dict, dict]:
    """Logged traces: refuse the target share of requests, by their best score."""
    lines = settings.traces.read_text().splitlines()
    best = [score for score in map(best_of_trace, lines) if score is not None]
    if not best:
        raise ValueError(f"{settings.traces}: no score traces")
    floor = float(np.quantile(best, settings.target, method="lower"))
    calibration = {
        "source": "traces",
        "floor": round(floor, 6),
        "objective": "trace-refusal",
        "target": settings.target,
        "report": {"fitted_on": {"traces": str(settings.traces), "requests": len(best)}},
    }
    return calibration, {"best": np.asarray(best)}


def calibrate(settings: CalibrateSettings) -> dict:
    """Fit from logged traces, a corpus (no labels) or labelled queries; write it beside the reranker."""
    if settings.traces:
        calibration, shown = calibrate_from_traces(settings)
    elif settings.corpus:
        from evaluation.corpus_calibration import calibrate_from_corpus

        calibration, shown = calibrate_from_corpus(settings)
    else:
        calibration, shown = calibrate_from_pairs(settings)
    if settings.plot:
        from evaluation.floor_plot import plot_floor  # matplotlib: the [build] extra

        title = f"the floor fitted from {calibration['source']}"
        calibration["report"]["plot"] = str(plot_floor(settings.plot, shown, calibration["floor"], title))
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

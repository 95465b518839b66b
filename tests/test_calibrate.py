"""`twostage calibrate` on the tiny generated BEIR data, writing into a copy of the artifacts."""

import json
import shutil

import numpy as np
import pytest

from evaluation.beir import corpus_titles
from evaluation.calibrate import calibrate
from evaluation.score_fit import QueryPairs, balanced_weights, choose_floor
from evaluation.settings import CalibrateSettings
from handler.calibration import Logistic
from handler.manifest import CALIBRATION_FILE, ModelManifest, read_manifest
from handler.pipeline import Retriever
from handler.settings import Settings
from tests.test_eval import tiny_beir  # noqa: F401  (fixture)


@pytest.fixture()
def own_artifacts(artifacts, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "models", root / "models")
    shutil.copytree(artifacts / "index", root / "index")
    return root


def test_calibration_from_labelled_pairs_sets_the_served_floor(own_artifacts, tiny_beir, tmp_path):  # noqa: F811
    other = shutil.copytree(tiny_beir, tmp_path / "other")
    settings = CalibrateSettings(
        data=tiny_beir,
        split="test",
        eval_split="test",
        ood_data=other,
        artifacts_dir=own_artifacts,
        eval_dir=tmp_path / "eval",
        candidates=10,
        ood_titles=20,
    )
    result = calibrate(settings)
    assert set(result["platt"]) == {"a", "b"} and set(result["platt_cosine"]) == {"a", "b", "c", "d", "cosine"}
    assert result["platt_cosine"]["d"] == pytest.approx(-4 * result["platt_cosine"]["a"], abs=1e-5)
    assert 0.0 <= result["floor"] <= 1.0
    assert result["report"]["fitted_on"]["foreign_corpus"] == str(other)
    assert result["report"]["fitted_on"]["foreign_titles"] == 20
    assert result["objective"] in ("window", "answerable-refusal")
    report = result["report"]
    assert report["fitted_on"]["queries"] == 5 and report["keep_drop"]["pairs"] >= 5
    assert 0.0 <= report["in_domain"]["answerable_refused"] <= 1.0
    assert len(report["out_of_domain"]) == 2
    stored = read_manifest(own_artifacts / "models" / "cross", ModelManifest).calibration
    assert stored.model_dump(mode="json", exclude_defaults=True) == result and result["source"] == "labels"
    assert json.loads((own_artifacts / "models" / "cross" / CALIBRATION_FILE).read_text()) == result
    retriever = Retriever.from_settings(Settings(artifacts_dir=own_artifacts))
    assert (retriever.rerank.floor, retriever.rerank.floor_source) == (result["floor"], "calibration")
    # /search serves sigmoid(a·logit + d·ln(stage-1 rank) + c·(the query's best cosine) + b), and sorts by it:
    # within a query that is the order of logit − 4·ln(rank).
    recalled = retriever.recall("dose for children", 5, "hybrid")
    chunks, candidates = recalled
    logits, scores = retriever.rerank.candidates("dose for children", recalled)
    best_cosine, ranks = max(c.similarity for c in candidates), np.arange(1, len(candidates) + 1)
    fit = result["platt_cosine"]
    expected = 1 / (1 + np.exp(-(fit["a"] * logits + fit["d"] * np.log(ranks) + fit["c"] * best_cosine + fit["b"])))
    assert scores == pytest.approx(expected, rel=1e-5)
    if fit["a"] > 0:
        assert list(np.argsort(-scores)) == list(np.argsort(-(logits - 4 * np.log(ranks))))
    # /rerank has no stage 1: the logit alone, Platt-scaled.
    platt = result["platt"]
    reranked = sorted(
        retriever.rerank_documents("dose for children", [c.passage for c in chunks]), key=lambda r: r.index
    )
    expected = 1 / (1 + np.exp(-(platt["a"] * logits + platt["b"])))
    assert [r.score for r in reranked] == pytest.approx(expected, rel=1e-5)


def test_calibration_from_score_traces_refuses_the_target_share(own_artifacts, tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"scores": [i / 100, i / 200]}) + "\n" for i in range(100)))
    result = calibrate(CalibrateSettings(traces=traces, target=0.1, artifacts_dir=own_artifacts))
    assert result["floor"] == pytest.approx(0.09)
    assert read_manifest(own_artifacts / "models" / "cross", ModelManifest).calibration.floor == result["floor"]


def test_a_missing_out_of_domain_directory_fails_before_any_scoring(own_artifacts, tiny_beir, tmp_path):  # noqa: F811
    before = read_manifest(own_artifacts / "models" / "cross", ModelManifest).calibration
    settings = CalibrateSettings(
        data=tiny_beir,
        split="test",
        ood_data=tmp_path / "missing",
        artifacts_dir=own_artifacts,
        eval_dir=tmp_path / "eval",
    )
    with pytest.raises(FileNotFoundError, match="missing"):
        calibrate(settings)
    assert read_manifest(own_artifacts / "models" / "cross", ModelManifest).calibration == before
    assert not (tmp_path / "eval").exists()  # no index was built for the calibration data


def _queries(best_logits: list[float], relevant: bool) -> list[QueryPairs]:
    """One candidate per query, cosine 0, so the served score is sigmoid(logit) under Logistic(1, 0)."""
    return [
        QueryPairs(str(i), np.array([x]), np.zeros(1), np.ones(1), np.array([int(relevant)]))
        for i, x in enumerate(best_logits)
    ]


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def test_window_floor_sits_between_keeping_answerable_and_refusing_foreign_queries():
    answerable = _queries(list(np.linspace(-1.0, 4.0, 20)), relevant=True)  # 5% quantile: the lowest, -1
    foreign = _queries(list(np.linspace(-8.0, -3.0, 10)), relevant=False)  # 90% quantile: the highest, -3
    settings = CalibrateSettings(target=0.05, ood_target=0.9)
    floor, objective, window = choose_floor(answerable, Logistic(a=1.0, b=0.0), settings, [foreign, []])
    assert objective == "window"
    assert window == pytest.approx([_sigmoid(-3.0), _sigmoid(-1.0)])
    assert floor == pytest.approx(np.sqrt(_sigmoid(-3.0) * _sigmoid(-1.0)))
    # No foreign queries, or the answerable objective: the answerable limit alone.
    for settings, sets in ((CalibrateSettings(), []), (CalibrateSettings(objective="answerable-refusal"), [foreign])):
        assert choose_floor(answerable, Logistic(a=1.0, b=0.0), settings, sets) == (
            pytest.approx(_sigmoid(-1.0)),
            "answerable-refusal",
            None,
        )


def test_when_the_targets_conflict_answering_comes_first():
    answerable = _queries([-2.0, 1.0, 2.0, 3.0], relevant=True)
    foreign = _queries([-5.0, 0.0], relevant=False)  # refusing 90% needs a floor above sigmoid(0)
    floor, objective, window = choose_floor(answerable, Logistic(a=1.0, b=0.0), CalibrateSettings(), [foreign])
    assert (objective, floor) == ("answerable-refusal", pytest.approx(_sigmoid(-2.0)))
    assert window == pytest.approx([_sigmoid(0.0), _sigmoid(-2.0)])


def test_balanced_weights_give_each_set_of_queries_the_same_total():
    many = [QueryPairs(str(i), np.zeros(20), np.zeros(20), np.ones(20), np.zeros(20, dtype=int)) for i in range(30)]
    few = [QueryPairs(str(i), np.zeros(5), np.zeros(5), np.ones(5), np.zeros(5, dtype=int)) for i in range(4)]
    weights = balanced_weights(many, few)
    assert len(weights) == 620 and weights[:600].sum() == pytest.approx(weights[600:].sum()) == pytest.approx(600)
    assert (weights[:600] == 1).all()


def test_corpus_titles_are_a_fixed_sample_of_titled_documents(tiny_beir):  # noqa: F811
    titles = corpus_titles(tiny_beir / "corpus.jsonl", 5)
    assert len(titles) == 5 and all(titles.values())
    assert titles == corpus_titles(tiny_beir / "corpus.jsonl", 5)
    assert len(corpus_titles(tiny_beir / "corpus.jsonl", 10_000)) <= 220

"""`twostage calibrate` on the tiny generated BEIR data, writing into a copy of the artifacts."""

import json
import shutil

import numpy as np
import pytest

from evaluation.calibrate import calibrate
from evaluation.settings import CalibrateSettings
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
    )
    result = calibrate(settings)
    assert set(result["platt"]) == {"a", "b"} and set(result["platt_cosine"]) == {"a", "b", "c"}
    assert 0.0 <= result["floor"] <= 1.0
    assert result["report"]["fitted_on"]["foreign_corpus"] == str(other)
    report = result["report"]
    assert report["fitted_on"]["queries"] == 5 and report["keep_drop"]["pairs"] >= 5
    assert 0.0 <= report["in_domain"]["answerable_refused"] <= 1.0
    assert len(report["out_of_domain"]) == 2
    stored = read_manifest(own_artifacts / "models" / "cross", ModelManifest).calibration
    assert stored == result
    assert json.loads((own_artifacts / "models" / "cross" / CALIBRATION_FILE).read_text()) == result
    retriever = Retriever.from_settings(Settings(artifacts_dir=own_artifacts))
    assert (retriever.floor, retriever.floor_source) == (result["floor"], "calibration")
    # /search serves sigmoid(a * logit + b + c * cosine), with every candidate's bi-encoder cosine.
    chunks, candidates = retriever.recall("dose for children", 5, "hybrid")
    logits, scores = retriever.score("dose for children", chunks, candidates)
    cosines = np.array([c.similarity for c in candidates])
    fit = result["platt_cosine"]
    expected = 1 / (1 + np.exp(-(fit["a"] * logits + fit["b"] + fit["c"] * cosines)))
    assert scores == pytest.approx(expected, rel=1e-5)
    # /rerank has no stage 1: the logit alone, Platt-scaled.
    platt = result["platt"]
    reranked = retriever.rerank("dose for children", [c.passage for c in chunks])
    assert reranked == pytest.approx(1 / (1 + np.exp(-(platt["a"] * logits + platt["b"]))), rel=1e-5)


def test_calibration_from_score_traces_refuses_the_target_share(own_artifacts, tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"scores": [i / 100, i / 200]}) + "\n" for i in range(100)))
    result = calibrate(CalibrateSettings(traces=traces, target=0.1, artifacts_dir=own_artifacts))
    assert result["floor"] == pytest.approx(0.09)
    assert read_manifest(own_artifacts / "models" / "cross", ModelManifest).calibration["floor"] == result["floor"]


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

"""One order, one score: every /search answer is sorted by the calibrated score it shows, and every result is
at or above the floor, on the sample corpus and on a SciFact-sized index, through both API Gateway events."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import load_event

pytestmark = pytest.mark.slow
CALIBRATION = {  # the shipped calibration's form: logit − 4·ln(rank) and the query's best cosine
    "platt": {"a": 0.23, "b": -1.06},
    "platt_cosine": {"a": 0.9, "b": -2.0, "c": 2.0, "d": -3.6, "cosine": "query"},
    "floor": 0.15,
}
QUERIES = ["What does error E240 mean?", "Veltrazine dose for a child", "how to repot a fern", "warranty claim"]


@pytest.fixture(scope="module", params=["sample", "scifact-sized"])
def handler(request, artifacts, tmp_path_factory):
    from benchmarks.cold_start import synthesise
    from handler.api import lambda_handler
    from handler.pipeline import Retriever
    from handler.settings import Settings

    root = tmp_path_factory.mktemp("calibrated")
    shutil.copytree(artifacts / "models", root / "models", copy_function=os.link)
    manifest = root / "models" / "cross" / "manifest.json"
    data = json.loads(manifest.read_text()) | {"calibration": CALIBRATION}
    manifest.unlink()  # a hard link: write a new file, not the shared one
    manifest.write_text(json.dumps(data))
    if request.param == "sample":
        shutil.copytree(artifacts / "index", root / "index", copy_function=os.link)
    else:  # ≈ SciFact's 9,945 chunks: the sample's vectors with noise, texts under new ids
        synthesise(artifacts / "index", root / "index", 10_000)
    settings = Settings(artifacts_dir=root)
    return lambda_handler(Retriever.from_settings(settings), settings)


@pytest.mark.parametrize("event", ["apigw_v1_rest.json", "apigw_v2_http.json"])
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_results_are_sorted_by_their_score_and_above_the_floor(handler, event, mode):
    for query in QUERIES:
        body = {"query": query, "recall_k": 100, "top_k": 20, "mode": mode}
        response = handler(load_event(event, "POST", "/search", body), None)
        answer = json.loads(response["body"])
        scores = [r["score"] for r in answer["results"]]
        assert scores == sorted(scores, reverse=True), (query, mode)
        assert all(score >= answer["floor"] == CALIBRATION["floor"] for score in scores)
        assert answer["score_model"]["calibrated"] and answer["score_model"]["cosine_of"] == "query"
        assert answer["refused"] == (not scores)

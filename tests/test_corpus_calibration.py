"""No labels needed: pseudo-queries written from a corpus, the floor fitted from them for a reranker a
user brings (a model-family reranker, exported uncalibrated), the picture of it, and the gate in
`twostage eval`'s numbers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from evaluation.calibrate import calibrate
from evaluation.corpus_calibration import without_answered
from evaluation.pseudo_queries import corpus_without_spans, off_topic_questions, sentences, write_pseudo_queries
from evaluation.score_fit import QueryPairs
from evaluation.settings import CalibrateSettings
from handler.manifest import ModelManifest, read_manifest
from index_build.settings import SAMPLE_CORPUS
from tests.test_eval import tiny_beir  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["sentence", "leading", "title"])
def test_pseudo_queries_come_from_their_document_and_leave_it(kind, tmp_path):
    queries, changed = write_pseudo_queries(SAMPLE_CORPUS, kind, 25)
    assert len(queries) == 25 and len({q.doc_id for q in queries}) == 25
    docs = {json.loads(line)["id"]: json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()}
    for q in queries:
        original = docs[q.doc_id]
        if kind == "title":
            assert q.text == original["title"] and q.doc_id not in changed
        else:
            assert q.text in sentences(original["text"]) and q.text not in changed[q.doc_id].text
    written = corpus_without_spans(SAMPLE_CORPUS, changed, tmp_path / "corpus.jsonl")
    assert len(written.read_text().splitlines()) == len(docs)
    assert len(off_topic_questions()) >= 100


def test_sentences_split_cased_and_tokenised_lowercase_text():
    assert sentences("Aspirin works well here. It lowers the risk in trials.") == [
        "Aspirin works well here.",
        "It lowers the risk in trials.",
    ]
    # Cranfield's style: lowercased, every stop set off by spaces
    assert sentences("a wing in a slipstream . an experimental study was made .") == [
        "a wing in a slipstream .",
        "an experimental study was made .",
    ]
    assert sentences("flow at mach 2.5 was measured, e.g. near the nose .") == [
        "flow at mach 2.5 was measured, e.g. near the nose ."
    ]


@pytest.fixture(scope="module")
def brought(artifacts, tmp_path_factory):
    """Artifacts whose reranker is a model-family one (XLM-R, like bge-reranker) exported uncalibrated."""
    from index_build.build import build_index
    from index_build.settings import IndexSettings
    from model_export.export import export_model
    from model_export.settings import ExportSettings
    from tests.model_zoo import FAMILIES, make_model

    root = tmp_path_factory.mktemp("brought") / "artifacts"
    shutil.copytree(artifacts / "models" / "bi", root / "models" / "bi")
    source = make_model(FAMILIES["xlm-roberta-1label"], tmp_path_factory.mktemp("xlmr"))
    export_model("cross", str(source), source, root / "models" / "cross", ExportSettings(max_relative_delta=0.2))
    build_index(IndexSettings(artifacts_dir=root))
    return root


def test_a_brought_reranker_gets_a_floor_from_the_corpus_and_serves_with_it(brought, tmp_path):
    from starlette.testclient import TestClient

    from handler.api import create_app
    from handler.pipeline import Retriever
    from handler.settings import Settings

    before = Retriever.from_settings(Settings(artifacts_dir=brought))
    assert (before.rerank.floor_source, before.rerank.calibration.calibrated) == ("none", False)
    plot = tmp_path / "floor.png"
    own = tmp_path / "own.txt"
    own.write_text("# ours\nWhat is the capital of Peru?\nWho painted the Sistine Chapel ceiling?\n")
    settings = CalibrateSettings(
        corpus=SAMPLE_CORPUS,
        artifacts_dir=brought,
        eval_dir=tmp_path / "eval",
        pseudo_queries=40,
        candidates=10,
        plot=plot,
        ood_queries=own,
    )
    result = calibrate(settings)
    assert result["source"] == "corpus" and 0.0 < result["floor"] < 1.0
    report = result["report"]
    fitted_on = report["fitted_on"]
    assert fitted_on["pseudo_queries"] == 40 and fitted_on["off_topic_questions"] >= 100
    # the shipped questions the corpus answers closely are set aside; the user's own never are
    set_aside = fitted_on["off_topic_set_aside"]
    assert set(set_aside) <= set(off_topic_questions())
    assert fitted_on["off_topic_questions"] == len(off_topic_questions()) - len(set_aside) + 2
    assert set(report["gate"]) == {"relevant_kept", "irrelevant_dropped", "kept_precision", "refused_queries"}
    assert 0.0 <= report["off_topic_refused"] <= 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report["plot"] == str(plot)
    stored = read_manifest(brought / "models" / "cross", ModelManifest).calibration
    assert stored.source == "corpus" and stored.floor == result["floor"]
    after = Retriever.from_settings(Settings(artifacts_dir=brought))
    client = TestClient(create_app(after, after.settings))
    health = client.get("/health").json()
    assert health["floor"] == result["floor"] and health["floor_source"] == "calibration"
    assert health["cross"]["conventions"]["calibrated"] and health["cross"]["conventions"]["calibrated_on"] == "corpus"
    answer = client.post("/search", json={"query": "Veltrazine dose for children"}).json()
    assert answer["floor"] == result["floor"] and answer["score_model"]["calibrated_on"] == "corpus"
    assert all(r["score"] >= result["floor"] for r in answer["results"])


def test_an_index_directory_is_a_corpus_too(brought, tmp_path):
    settings = CalibrateSettings(
        corpus=brought / "index", artifacts_dir=brought, eval_dir=tmp_path / "eval", pseudo_queries=20, candidates=5
    )
    assert calibrate(settings)["report"]["fitted_on"]["pseudo_queries"] == 20


def test_the_traces_floor_can_be_drawn(brought, tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"scores": [i / 100]}) + "\n" for i in range(1, 100)))
    result = calibrate(CalibrateSettings(traces=traces, artifacts_dir=brought, plot=tmp_path / "traces.png"))
    assert (tmp_path / "traces.png").is_file() and result["source"] == "traces"


def test_eval_reports_the_gate_and_questions_from_elsewhere(artifacts, tiny_beir, tmp_path):  # noqa: F811
    from evaluation.evaluate import evaluate_dataset, markdown
    from evaluation.settings import EvalSettings

    other = shutil.copytree(tiny_beir, tmp_path / "other")
    settings = EvalSettings(
        data=tiny_beir, artifacts_dir=artifacts, eval_dir=tmp_path / "eval", mode="hybrid", ood_data=other
    )
    report = evaluate_dataset(settings)
    gate = report["gate"]
    assert gate["top"] == 10 and gate["floor"] == report["floor"]["value"]
    # (the test reranker is random: no relevant document may reach a top 10, and a share of none is None)
    assert all(gate[k] is None or 0.0 <= gate[k] <= 1.0 for k in ("relevant_kept", "irrelevant_dropped"))
    assert 0.0 <= gate["refused_queries"] <= 1.0
    assert 0.0 <= gate["ood_refused"] <= 1.0 and "gate on the top 10" in markdown(report)


def test_train_adapts_the_served_reranker_to_a_corpus_without_labels(artifacts, tmp_path):
    from handler.manifest import HEAD_FILE, TRAINING_LOG
    from model_export.export import export_all
    from model_export.settings import ExportSettings
    from training.settings import TrainSettings
    from training.train import train

    out = tmp_path / "adapted"
    settings = TrainSettings(
        corpus=SAMPLE_CORPUS,
        artifacts_dir=artifacts,
        eval_dir=tmp_path / "eval",
        output_dir=out,
        pseudo_queries=20,
        max_length=64,
        negatives=3,
        negatives_from=1,
        negatives_to=10,
        max_steps=2,
        epochs=1,
        dev_fraction=0.2,
    )
    summary = train(settings)
    assert summary["train_groups"] == 16 and summary["dev_groups"] == 4
    assert summary["groups_mined_with"]["kind"] == "sentence" and (out / HEAD_FILE).is_file()
    assert (
        json.loads((out / TRAINING_LOG).read_text())["base_model"]
        == read_manifest(artifacts / "models" / "cross", ModelManifest).source
    )  # the served reranker, adapted
    export_all(ExportSettings(models_dir=tmp_path / "models", which="cross", cross_model=str(out), fp32_fallback=True))
    assert read_manifest(tmp_path / "models" / "cross", ModelManifest).head


def test_off_topic_questions_the_corpus_answers_closely_are_set_aside():
    def pairs(qid, cosine):
        return QueryPairs(qid, np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1, dtype=int), cosine)

    answerable = [pairs(f"pseudo-{i}", c) for i, c in enumerate([0.5, 0.6, 0.7])]
    kept, set_aside = without_answered([pairs("off-0", 0.2), pairs("off-1", 0.6), pairs("off-2", 0.9)], answerable)
    assert [q.qid for q in kept] == ["off-0"] and set_aside == ["off-1", "off-2"]

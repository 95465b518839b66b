"""`twostage eval` on a tiny BEIR dataset generated from the sample corpus."""

import json
import shutil

import pytest

from evaluation.beir import load_beir
from evaluation.evaluate import evaluate_dataset, markdown
from evaluation.settings import EvalSettings
from handler.manifest import TRAINING_LOG
from index_build.settings import SAMPLE_CORPUS

QUERIES = {
    "q1": ("How much Veltrazine should a 7-year-old child take?", "veltrazine-child-dose"),
    "q2": ("what does error E240 mean on the ThermoLine X2", "thermoline-x2-e240"),
    "q3": ("is marble pothos poisonous to my cat", "marble-pothos-safety"),
    "q4": ("how often should I water an ember cactus", "ember-cactus-water"),
    "q5": ("how does Corvadil work", "corvadil-mechanism"),
}


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-beir")
    (root / "qrels").mkdir()
    corpus = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()]
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d["id"], "title": d["title"], "text": d["text"]}) + "\n" for d in corpus)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": text}) + "\n" for q, (text, _) in QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{doc}\t1\n" for q, (_, doc) in QUERIES.items())
    )
    return root


def test_load_beir_reads_judged_queries(tiny_beir):
    data = load_beir(tiny_beir, "test")
    assert set(data.queries) == set(QUERIES) and data.qrels["q1"] == {"veltrazine-child-dose": 1}
    with pytest.raises(FileNotFoundError, match="train"):
        load_beir(tiny_beir, "train")


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_eval_reports_both_stages_and_recall_misses(artifacts, tiny_beir, tmp_path, mode):
    out = tmp_path / "report.json"
    report = evaluate_dataset(
        EvalSettings(
            data=tiny_beir,
            artifacts_dir=artifacts,
            eval_dir=tmp_path / "eval",
            recall_k=5,
            diagnose_depth=50,
            mode=mode,
            json_path=out,
            rerank_budgets="2,5",
        )
    )
    assert json.loads(out.read_text()) == report
    for stage in ("stage1", "two_stage", "two_stage_floor"):
        assert set(report[stage]) == {"ndcg@10", "mrr@10", "recall@10", "recall@100", "recall@5"}
    assert report["stage1"]["ndcg@10"] > 0.6  # easy queries: the real MiniLM finds them
    miss = report["recall_miss"]
    assert miss["relevant"] == 5 and miss["missed"] == round((1 - report["stage1"]["recall@5"]) * 5)
    assert miss["recall_k_for_95pct"] >= 1
    assert "| stage1 |" in markdown(report) and report["mode"] == mode
    sig = report["two_stage_vs_stage1"]  # per-query comparison of the two stages, 5 queries in all
    assert sig["delta"] == pytest.approx(report["two_stage"]["ndcg@10"] - report["stage1"]["ndcg@10"], abs=1e-3)
    assert sum(sig["wins_ties_losses"]) == 5 and 0 <= sig["p_value"] <= 1
    score_model = {"logit", "cosine", "cosine_of", "ln_stage1_rank", "intercept", "calibrated", "calibrated_on"}
    assert set(report["score_model"]) == score_model
    budget = report["rerank_budget"]  # a deadline's answer from the first N candidates, same run
    assert list(budget) == ["2", "5"] and budget["5"] == report["two_stage"] and "| 2 |" in markdown(report)


def test_excluded_pairs_leave_the_ranking(artifacts, tiny_beir, tmp_path):
    exclude = tmp_path / "exclude.tsv"
    exclude.write_text("query-id\tcorpus-id\nq1\tveltrazine-child-dose\n")
    report = evaluate_dataset(
        EvalSettings(
            data=tiny_beir,
            artifacts_dir=artifacts,
            eval_dir=tmp_path / "eval",
            exclude=exclude,
            rerank=False,
            recall_k=5,
        )
    )
    assert report["excluded_pairs"] == 1 and "two_stage" not in report
    assert report["recall_miss"]["relevant"] == 4


def test_dev_only_evaluates_the_rerankers_held_out_queries(artifacts, tiny_beir, tmp_path):
    """Serving choices are made on the dev queries the reranker recorded, not on test."""
    settings = EvalSettings(data=tiny_beir, artifacts_dir=artifacts, eval_dir=tmp_path / "eval", dev_only=True)
    with pytest.raises(ValueError, match="no dev queries"):  # the fixture's reranker keeps no training log
        evaluate_dataset(settings)
    mine = tmp_path / "artifacts"
    shutil.copytree(artifacts / "models", mine / "models")
    (mine / "models" / "cross" / TRAINING_LOG).write_text(json.dumps({"dev_query_ids": ["q2", "q4", "unjudged"]}))
    report = evaluate_dataset(settings.model_copy(update={"artifacts_dir": mine, "rerank": False, "recall_k": 5}))
    assert report["queries"] == 2 and report["dev_only"] is True
    assert report["recall_miss"]["relevant"] == 2


def test_a_floor_that_refuses_every_query_scores_zero_not_an_error(artifacts, tiny_beir, tmp_path):
    report = evaluate_dataset(
        EvalSettings(data=tiny_beir, artifacts_dir=artifacts, eval_dir=tmp_path / "eval", recall_k=5, floor=1.0)
    )
    assert report["floor"]["refused_queries"] == 5 and set(report["two_stage_floor"].values()) == {0.0}
    assert report["two_stage"]["ndcg@10"] > 0  # without the floor the same run answers

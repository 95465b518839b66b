"""The rerank cascade: a first pass distilled from the served reranker (our own `twostage train --distill`
and export, on the sample corpus' titles) scores every candidate; the served reranker reads its best few."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from starlette.testclient import TestClient

from handler.api import create_app
from handler.calibration import Logistic
from handler.errors import ArtifactError
from handler.pipeline import Retriever
from handler.rerank import CEILING_BLOCK, cascade_reads
from handler.settings import CASCADE_CEILING, CASCADE_KEEP, Settings
from model_export.export import ExportError, export_all
from model_export.settings import ExportSettings
from tests.test_eval import tiny_beir  # noqa: F401  (fixture)

QUERY = "How much Veltrazine should a 7-year-old child take?"


@pytest.fixture(scope="module")
def cascading(cascade_artifacts):
    # reading on past cascade_keep is tested on its own below: here the cascade reads exactly its keep
    settings = Settings(artifacts_dir=cascade_artifacts, cascade_first_pass="model", cascade_ceiling=0)
    return Retriever.from_settings(settings)


def test_the_first_pass_loads_bound_to_the_served_reranker(cascading):
    first_pass = cascading.rerank.first_pass
    assert first_pass is not None and first_pass.manifest.kind == "first_pass"
    assert first_pass.manifest.teacher_sha256 == cascading.rerank.cross.manifest.sha256
    assert cascading.rerank.cascade.startswith("first-pass model") and "first_pass_ms" in cascading.load_ms


def test_cascade_keep_0_is_the_answer_without_a_cascade_exactly(cascading, retriever):
    assert retriever.rerank.first_pass is None  # the default cascade needs no model
    plain = retriever.search(QUERY, recall_k=60, top_k=10, floor=0.0, cascade_keep=0)
    off = cascading.search(QUERY, recall_k=60, top_k=10, floor=0.0, cascade_keep=0)
    assert (off.first_pass, off.cascade_keep, off.reranked) == (0, 0, 60) == (plain.first_pass, 0, plain.reranked)
    assert [(r.id, r.chunk, r.score, r.logit) for r in off.results] == [
        (r.id, r.chunk, r.score, r.logit) for r in plain.results
    ]


def test_the_served_reranker_reads_only_the_first_passes_best(cascading):
    recalled = cascading.recall(QUERY, 60, "hybrid")
    scored = cascading.rerank.candidates(QUERY, recalled, keep=12)
    assert scored.first_pass is not None and len(scored.first_pass) == 60 and scored.reranked == 12
    read = set(np.flatnonzero(scored.read).tolist())
    answer = cascading.search(QUERY, recall_k=60, top_k=10, floor=0.0, cascade_keep=12)
    assert (answer.first_pass, answer.cascade_keep, answer.reranked) == (60, 12, 12)
    assert {r.stage1_rank - 1 for r in answer.results} <= read  # every result was read by the served reranker
    full = cascading.rerank.candidates(QUERY, recalled, keep=0)
    for result in answer.results:  # and carries the served score, not the first pass's
        assert result.score == pytest.approx(float(full.scores[result.stage1_rank - 1]), abs=1e-5)


def test_the_served_reranker_reads_at_least_top_k(cascading):
    answer = cascading.search(QUERY, recall_k=60, top_k=8, floor=0.0, cascade_keep=3)
    assert answer.cascade_keep == 8 and answer.reranked == 8 and len(answer.results) == 8


def test_a_deadline_that_fits_everything_changes_nothing(cascading):
    timed = cascading.search(QUERY, recall_k=60, top_k=5, floor=0.0, deadline_ms=60_000)
    untimed = cascading.search(QUERY, recall_k=60, top_k=5, floor=0.0)
    assert [r.id for r in timed.results] == [r.id for r in untimed.results] and not timed.deadline_cut


def test_the_api_says_what_ran_and_refuses_bad_values(cascading):
    client = TestClient(create_app(cascading, cascading.settings))
    body = client.post("/search", json={"query": QUERY, "recall_k": 40, "cascade_keep": 15}).json()
    assert (body["first_pass"], body["cascade_keep"], body["reranked"]) == (40, 15, 15)
    assert body["timings"]["first_pass_ms"] > 0
    for bad in (-1, 1001, "5", 2.5):
        answer = client.post("/search", json={"query": QUERY, "cascade_keep": bad})
        assert answer.status_code == 422 and answer.json()["details"][0]["field"] == "cascade_keep", bad
    with pytest.raises(ValueError, match="cascade_keep"):
        Settings(cascade_keep=-1)


def test_cascade_reads_on_while_an_unread_candidate_could_take_first_place():
    score = Logistic(a=1.0, d=-4.0)  # the served order: logit − 4·ln(rank)
    logits = np.zeros(20, dtype=np.float32)
    logits[[0, 1, 4]] = 2.0, 1.0, 9.0
    order = np.arange(len(logits))
    asked = []

    def read(candidates):
        asked.append(candidates.tolist())
        return logits[candidates]

    read_only, _ = cascade_reads(order, 3, read, score)  # no ceiling: the keep, in one read
    assert read_only.tolist() == [0, 1, 2] and asked == [[0, 1, 2]]
    # ceiling 8: rank 4 at 8 − 4·ln 4 ≈ 2.5 could beat the best read (2.0): read on; after the 9.0 at rank 5
    # (9 − 4·ln 5 ≈ 2.6), rank 14 at 8 − 4·ln 14 ≈ −2.6 could not: stop
    read_on, values = cascade_reads(order, 3, read, score, ceiling=8.0)
    assert read_on.tolist() == list(range(3 + CEILING_BLOCK)) and values[4] == 9.0
    low, _ = cascade_reads(order, 3, read, score, ceiling=2.0)  # 2 − 4·ln 4 < 2: nothing unread could lead
    assert low.tolist() == [0, 1, 2]
    cut, _ = cascade_reads(order, 3, lambda c: logits[c][:2], score, ceiling=50.0)  # a deadline read fewer
    assert cut.tolist() == [0, 1]


def test_the_stopping_benchmark_simulates_servings_loop_and_its_variants_stop_no_later():
    from benchmarks.cascade_stopping import reads

    score, rng = Logistic(a=0.22, d=-0.89), np.random.default_rng(0)
    for _ in range(200):
        logits = rng.normal(0.0, 6.0, size=100).astype(np.float32)
        keep, ceiling = int(rng.integers(10, 40)), float(rng.uniform(5.0, 25.0))
        served = len(cascade_reads(np.arange(100), keep, lambda c, x=logits: x[c], score, ceiling)[0])
        assert reads(logits, keep, score, ceiling) == served
        assert reads(logits, keep, score, None) == keep
        assert keep <= reads(logits, keep, score, ceiling, margin=4.0) <= served


def test_a_ceiling_no_logit_reaches_reads_every_candidate_and_none_reads_the_keep(cascade_artifacts):
    high = Retriever.from_settings(Settings(artifacts_dir=cascade_artifacts, cascade_ceiling=0.999999))
    everything = high.search(QUERY, recall_k=60, top_k=10, floor=0.0, cascade_keep=0)
    answer = high.search(QUERY, recall_k=60, top_k=10, floor=0.0, cascade_keep=12)
    assert answer.reranked == 60 and answer.cascade_keep == 12 and "reading on" in high.rerank.cascade
    assert [(r.id, r.chunk, r.score) for r in answer.results] == [(r.id, r.chunk, r.score) for r in everything.results]
    off = Retriever.from_settings(Settings(artifacts_dir=cascade_artifacts, cascade_ceiling=0))
    assert off.search(QUERY, recall_k=60, top_k=10, floor=0.0, cascade_keep=12).reranked == 12
    assert "reading on" not in off.rerank.cascade
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="cascade_ceiling"):
            Settings(cascade_ceiling=bad)


def test_a_bad_cascade_keep_flag_is_a_usage_error(capsys):
    from twostage.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["query", "q", "--cascade-keep", "-1"])
    assert exit_.value.code == 2 and "--cascade-keep" in capsys.readouterr().err


def test_a_first_pass_of_another_reranker_fails_init_naming_it(cascade_artifacts, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(cascade_artifacts, root)
    manifest = root / "models" / "first_pass" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["teacher_sha256"] = "f" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="teacher_sha256"):
        Retriever.from_settings(Settings(artifacts_dir=root, cascade_first_pass="model"))


@pytest.mark.parametrize("slope", [0.0, -0.0088])
def test_a_calibration_that_does_not_rise_reads_the_keep_with_a_warning(cascade_artifacts, tmp_path, caplog, slope):
    # a flat Platt fit has no logit for the ceiling (it would divide by zero at every /search)
    root = tmp_path / "artifacts"
    shutil.copytree(cascade_artifacts, root)
    manifest = root / "models" / "cross" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["calibration"] = {"platt": {"a": slope, "b": 0.5}}
    manifest.write_text(json.dumps(data))
    retriever = Retriever.from_settings(Settings(artifacts_dir=root, cascade_ceiling=0.6))
    assert "cascade_ceiling 0.6 ignored" in caplog.text and "reading on" not in retriever.rerank.cascade
    assert retriever.search(QUERY, recall_k=60, top_k=5, floor=0.0, cascade_keep=12).reranked == 12


def test_asking_for_the_first_pass_model_without_one_fails_init_naming_it(artifacts):
    with pytest.raises(ArtifactError, match="first_pass"):
        Retriever.from_settings(Settings(artifacts_dir=artifacts, cascade_first_pass="model"))


def test_export_refuses_a_first_pass_distilled_from_other_weights(cascade_artifacts, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(cascade_artifacts.parent / "student", student)
    log = json.loads((student / "twostage_distill.json").read_text())
    (student / "twostage_distill.json").write_text(json.dumps(log | {"teacher_weights_sha256": "0" * 64}))
    models = tmp_path / "models"
    shutil.copytree(cascade_artifacts / "models", models)
    settings = ExportSettings(models_dir=models, which="first-pass", first_pass_model=str(student), fp32_fallback=True)
    with pytest.raises(ExportError, match="not distilled from the reranker"):
        export_all(settings)


@pytest.mark.parametrize("first_pass", ["stage1", "model"])
def test_eval_reports_quality_and_time_per_cascade_keep(
    cascade_artifacts,
    tiny_beir,  # noqa: F811
    tmp_path,
    monkeypatch,
    first_pass,
):
    from evaluation.evaluate import evaluate_dataset, markdown
    from evaluation.settings import EvalSettings

    monkeypatch.setenv("TWOSTAGE_CASCADE_FIRST_PASS", first_pass)

    settings = EvalSettings(
        data=tiny_beir,
        artifacts_dir=cascade_artifacts,
        eval_dir=tmp_path / "eval",
        mode="hybrid",
        recall_k=40,
        cascade_keeps=[5, CASCADE_KEEP, 0],
        cascade_ceilings=[0.99, CASCADE_CEILING],  # the served one is not scored twice
        rerank_budgets=[CASCADE_KEEP],
    )
    report = evaluate_dataset(settings)
    table, keep, plain = report["cascade"], str(CASCADE_KEEP), f"{CASCADE_KEEP}, no ceiling"
    high = f"{CASCADE_KEEP}, ceiling 0.99"
    assert report["cascade_keep"] == CASCADE_KEEP
    assert set(table) == {"5", "5, no ceiling", "5, ceiling 0.99", keep, plain, high, "0"}
    assert table[high]["reads"] >= table[keep]["reads"] and table[high]["reads_p50"] >= table[keep]["reads_p50"]
    assert table[keep]["ndcg@10"] == report["two_stage"]["ndcg@10"] and report["reads"] == table[keep]["reads"]
    assert table[plain]["reads"] == CASCADE_KEEP <= table[keep]["reads"] <= 40 and table["0"]["reads"] == 40
    if first_pass == "stage1":  # the cascade in stage-1 order is the deadline's cut at the same count
        assert table[plain]["ndcg@10"] == report["rerank_budget"][keep]["ndcg@10"]
    assert table["5, no ceiling"]["rerank_ms"] < table["0"]["rerank_ms"]
    assert table["5, no ceiling"]["rerank_ms"] <= table["5"]["rerank_ms"]  # reading on costs its reads
    off = evaluate_dataset(settings.model_copy(update={"cascade_keep": 0, "cascade_keeps": []}))
    assert off["cascade_keep"] == 0
    assert {
        k: v
        for k, v in table["0"].items()
        if k not in ("reads", "reads_p50", "rerank_ms", "gate", "vs_every_candidate")
    } == off["two_stage"]
    assert table["0"]["gate"] == off["gate"] and table[keep]["gate"] == report["gate"]
    # each setting against reading every candidate, query by query (every candidate ties with itself)
    versus = table[plain]["vs_every_candidate"]
    assert versus["delta"] == pytest.approx(table[plain]["ndcg@10"] - table["0"]["ndcg@10"], abs=2e-4)
    assert sum(versus["wins_ties_losses"]) == report["queries"] and table["0"]["vs_every_candidate"]["delta"] == 0
    assert "queries refused" in markdown(report) and "better / tied / worse" in markdown(report)


def test_by_default_the_cascade_reads_the_first_candidates_in_stage1_order(retriever):
    answer = retriever.search(QUERY, recall_k=50, floor=0.0)
    assert (answer.first_pass, answer.cascade_keep) == (0, CASCADE_KEEP) and CASCADE_KEEP <= answer.reranked <= 50
    recalled = retriever.recall(QUERY, 50, "hybrid")
    read = np.flatnonzero(retriever.rerank.candidates(QUERY, recalled).read)
    assert read.tolist() == list(range(answer.reranked))  # the first ones, in stage-1 order
    assert "first_pass_ms" not in answer.timings and all(r.stage1_rank <= answer.reranked for r in answer.results)
    full = retriever.rerank.candidates(QUERY, recalled, keep=0)
    for result in answer.results:  # the served scores, as if every candidate had been read
        assert result.score == pytest.approx(float(full.scores[result.stage1_rank - 1]), abs=1e-5)
    assert retriever.rerank.cascade == f"stage-1 order, keep {CASCADE_KEEP}, reading on to ceiling {CASCADE_CEILING}"
    assert dataclasses.replace(retriever.rerank, settings=Settings(cascade_keep=0).rerank).cascade == "off"


def test_distillation_holds_out_the_queries_the_cascade_defaults_are_chosen_on(tmp_path):
    """The served reranker's dev queries pick cascade_keep (benchmarks.cascade_levers --dev-only): a first pass
    trained on them would make that choice look better than it is."""
    from training.distill import Group, hold_out_teacher_dev
    from training.settings import TrainSettings

    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "x"}) + "\n")
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": f"claim {q}"}) + "\n" for q in ("a", "b", "c"))
    )
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\na\td1\t1\nb\td1\t1\nc\td1\t1\n")
    cross = tmp_path / "artifacts" / "models" / "cross"
    cross.mkdir(parents=True)
    (cross / "twostage_training.json").write_text(json.dumps({"dev_query_ids": ["b"]}))
    groups = [Group(f"claim {q}", ["x"], [0.0]) for q in ("a", "b", "c")] + [Group("a title", ["x"], [0.0], True)]
    settings = TrainSettings(distill=True, data=data, artifacts_dir=tmp_path / "artifacts")
    held = [g.query for g in hold_out_teacher_dev(groups, settings) if g.held_out]
    assert held == ["claim b", "a title"]
